"""The GPU checks of shared/GPU.md in one command: the studio's GPU paths on an 8B-shaped model, one line per figure.

    python bench/gpu.py [--sections 1,2,3,4,5,6,7,8] [--steps 6] [--grpo-steps 4] [--workdir DIR] [--model-dir DIR]
    python bench/gpu.py --tiny          # a tiny Llama on the CPU, every section but 4-bit (tests/test_bench_gpu.py)

Sections 1-6 took 433 s on an H200 (bench/RESULTS.md); a device call runs at most 10 minutes, so 7 and 8 go in a
second call (`--sections 7,8`), which reuses the model folder while the machine is still warm.

On a lent GPU machine, after `bash bench/pack_gpu_wheels.sh` here (the wheels that machine lacks and the embedded
model's tokenizer, in .wheels/, carried there), in one command:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .wheels/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH && python3 bench/gpu.py --deadline 540

Every line starts with [section name] and names the device and the precision; each ratio is between two things
measured in this run. Lines also go to $OUT/gpu_bench.txt when OUT is set. A section that fails prints its error
(type, message, the traceback's last lines) and the next one runs; the exit status is 1 when any failed.

The model: Llama 3 8B's shape (LlamaConfig hidden 4096, MLP 14336, 32 layers, 32 heads, 8 key/value heads, vocabulary
128256) with random weights, built on the GPU in bf16 and saved once as a safetensors folder with the embedded model's
tokenizer (SmolLM2's 49152 ids all lie inside the larger vocabulary); speed and memory do not depend on the weights.
The folder (and a random LoRA adapter for section 4) is kept in --model-dir and reused by a later run.

1 qlora: DPO through `python -m studio train job/recipe.yaml` (a child process, as the app starts it), the shipped
  assets/recipes/llama3-8b-qlora-dpo.yaml settings (4-bit NF4 base, LoRA r=16 on all linear layers, batch 1 x 8
  accumulated, gradient checkpointing, reference log-probabilities precomputed, max_length 1024) with our model, data
  and --steps. The train entry point does not report GPU memory: a sitecustomize.py on the child's PYTHONPATH
  (instrument() below) reads torch.cuda.max_memory_allocated when it exits, and times TRL's DPOTrainer from its
  constructor to the end of train() (so the studio's reference pass, done in the constructor, is inside the clock).
  Peak against 22 GiB (what a 24 GB A10G leaves), tokens/s on that clock, and MFU.
2 lora: the same recipe with the base in bf16 (no 4-bit); then TRL's DPOTrainer with DPOConfig's defaults (reference
  forward in every step, its own precision default bf16) on the same model, data, LoRA, batch and steps, in a child
  process of its own timed the same way: the ratio of tokens/s and of peak memory.
3 generate: the studio's generate_candidates (as bench/generate.py calls it), k=4, on the 8B shape in bf16 loaded by
  models.load, against a naive loop (model.generate, one prompt and one candidate per call, the same precision and
  sampling), and against the decode bound: a step reads every weight once (the input embedding table aside: only its
  rows are gathered), so B rows can make at most B x bandwidth / weight bytes tokens/s (H200 spec 4.8 TB/s, and the
  copy bandwidth measured now by bench/limits.py). Lengths are forced: the naive side with min_new_tokens; the studio's
  decode has no such setting, so the LM head's rows of the stop tokens are zeroed (a zero logit is never among the
  50 likeliest that sampling draws from with random weights), and every candidate is max_new_tokens long.
4 compare: the Compare tab's path (models.with_adapters + decode.stream: one copy of the base, base and adapter rows
  in one batch) against two copies (the base, and a second copy with the adapter, one generate() each): tokens/s and
  peak GPU memory (torch.cuda.max_memory_allocated, reset before each side; the base copy is resident for both).
5 handover: the app's loaded model (models.load) handed over to a DPO job that the job manager starts (4-bit on a GPU):
  the device memory the app holds before and while the job trains, the job's peak (result.json), their sum against
  the app's model plus the job without the hand-over, and how long the app takes to load its model again.
6 vllm: not on the machine: a line says so.
7 grpo: GRPO through `python -m studio train` with the shipped assets/recipes/embedded-cpu-grpo.yaml settings (8
  answers per prompt, up to 96 tokens, rewards correct_number and answer_line, the studio's sampling loop) on our
  model, 4-bit on a GPU, over the built-in bank_math prompts, --grpo-steps steps: seconds per step, answers/s and
  answer tokens/s on the probe's clock (GRPOTrainer's constructor to the end of train()), peak against 22 GiB.
8 liger: TRL's use_liger_kernel (Liger's RMSNorm, RoPE and SwiGLU Triton kernels; TRL 1.16 keeps its own fused LM
  head and turns Liger's fused cross-entropy off) off, then on, on section 2's studio DPO run: tokens/s and peak
  memory, and their ratio. Skipped on a CPU, and where liger-kernel is not installed.

MFU: useful FLOPs = tokens x 6N, N = the weights of every linear layer (LM head included; 7.50B for this shape):
2N for the policy's forward, 2N for its backward to the activations (the base is frozen; LoRA's own gradients are
under 1%), 2N for the reference model's forward; attention's own products and the gradient-checkpointing recompute
are not counted as useful (bench/dpo.py counts the same way). 4-bit layers are counted as bf16 products (they are
dequantized to bf16 and multiplied). Tokens = TRL's num_tokens: every non-padding token of the chosen and rejected
rows. Divided by the H200's dense bf16 peak (989 TFLOP/s spec) and by the bf16 matmul rate measured now (8192^3).
"""

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "assets" / "recipes" / "llama3-8b-qlora-dpo.yaml"
H200_BF16_FLOPS = 989e12  # dense, no sparsity (NVIDIA's H200 SXM sheet)
H200_BANDWIDTH = 4.8e12  # HBM3e bytes/s (the same sheet)
FITS_GIB = 22  # what a 24 GB A10G leaves for one job
SHAPE_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}
SHAPE_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 49152,
}
SECTIONS = {
    "1": "qlora",
    "2": "lora",
    "3": "generate",
    "4": "compare",
    "5": "handover",
    "6": "vllm",
    "7": "grpo",
    "8": "liger",
}
GRPO_RECIPE = ROOT / "assets" / "recipes" / "embedded-cpu-grpo.yaml"
TRAINERS = ("DPOTrainer", "GRPOTrainer")  # timed by the probe, from the constructor to the end of train()
PROBE = "ALIGN_GPU_BENCH_PROBE"
UNWANTED = ("gradio", "profanity_check", "gguf")  # the GPU machine lacks them; the engine must not need them
SITECUSTOMIZE = """import os, sys
sys.path.insert(0, {root!r})
try:
    from bench.gpu import instrument
    instrument(os.environ[{probe!r}])
finally:
    sys.path.remove({root!r})
# The sitecustomize this one shadows, if the interpreter has one, runs too.
_here, _me = os.path.dirname(os.path.abspath(__file__)), sys.modules.pop("sitecustomize")
_path, sys.path[:] = sys.path[:], [p for p in sys.path if os.path.abspath(p or ".") != _here]
try:
    import sitecustomize  # noqa: F401
except ImportError:
    pass
finally:
    sys.path[:], sys.modules["sitecustomize"] = _path, _me  # the import system reads this module back by name
"""


class Report:
    """Lines to stdout as they come, and to $OUT/gpu_bench.txt when OUT is set."""

    def __init__(self):
        out = os.environ.get("OUT")
        self.path = Path(out) / "gpu_bench.txt" if out else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.failed, self.done, self.skipped = [], [], []

    def line(self, text: str) -> None:
        print(text, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(text + "\n")


class ChildFailed(RuntimeError):
    pass


def instrument(probe_path: str) -> None:
    """In a training child (through sitecustomize): time TRL's trainer (DPO or GRPO) from its constructor to the end of
    train(), and write the peak GPU memory, the times and the modules imported to `probe_path` when it exits."""
    import atexit
    import resource

    found = {"start": time.time()}
    try:
        import trl
        from transformers import Trainer
    except Exception as error:  # the child reports its own import error; the probe says it saw it too
        found["probe_error"] = f"{type(error).__name__}: {error}"
    else:
        train = Trainer.train

        def timed(init):
            def timed_init(self, *args, **kwargs):
                found.setdefault("trainer_init", time.time())
                found.setdefault("trainer", type(self).__name__)
                return init(self, *args, **kwargs)

            return timed_init

        def timed_train(self, *args, **kwargs):
            found["train_begin"] = time.time()
            found["liger"] = bool(self.args.use_liger_kernel)
            try:
                return train(self, *args, **kwargs)
            finally:
                found["train_end"] = time.time()

        for name in TRAINERS:
            trainer = getattr(trl, name)  # TRL's lazy module imports the trainer's own module here
            trainer.__init__ = timed(trainer.__init__)
        Trainer.train = timed_train

    def write():
        found["end"] = time.time()
        found["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            found["peak_bytes"] = torch.cuda.max_memory_allocated()
            found["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        found["unwanted_modules"] = sorted({m.split(".")[0] for m in sys.modules} & set(UNWANTED))
        Path(probe_path).write_text(json.dumps(found))

    atexit.register(write)


# ---------------------------------------------------------------------------------------------------------------
# Setting up: versions, the model folder, the data, the machine's limits


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def unmet_requirements(dists) -> list[str]:
    """Declared requirements of `dists` (those without a marker: extras and platform-specific ones left out) that the
    installed versions do not meet, checked with transformers' require_version (pip's comparison rules)."""
    from transformers.utils.versions import require_version

    unmet = []
    for dist in dists:
        try:
            declared = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in declared:
            if ";" in text:
                continue
            requirement = re.sub(r"\[.*?\]|\s", "", text)  # no extras, no spaces: name<x,>=y
            try:
                require_version(requirement)
            except (ImportError, ValueError) as error:  # PackageNotFoundError is an ImportError
                name = re.split(r"[<>=!~]", requirement, maxsplit=1)[0]
                unmet.append(
                    f"{dist} needs {requirement} (have {version(name)})"
                    if isinstance(error, ImportError)
                    else f"{dist}: cannot read {text!r}"
                )
    return unmet


class Bench:
    def __init__(self, args, report: Report):
        import torch

        self.args, self.report = args, report
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.precision = "bf16" if self.cuda else "float32"
        self.name = torch.cuda.get_device_name(0) if self.cuda else f"CPU ({os.cpu_count()} cores)"
        self.shape = SHAPE_TINY if args.tiny else SHAPE_8B
        self.shape_name = "tiny Llama" if args.tiny else "Llama-3-8B shape"
        self.workdir = Path(args.workdir)
        self.folder = Path(args.model_dir)
        self.adapter = self.folder.with_name(self.folder.name + "-adapter")
        self.limits = None
        self.n_linear = None
        self._pairs = None
        self.deadline = time.time() + args.deadline if args.deadline else None

    def remaining(self) -> float:
        """Seconds left before --deadline (infinite without one)."""
        return self.deadline - time.time() if self.deadline else float("inf")

    def tag(self, key: str) -> str:
        return f"[{key} {SECTIONS.get(key, 'setup')}]"

    def sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def free(self):
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()

    # -- the model -------------------------------------------------------------------------------------------
    def tokenizer_source(self) -> str:
        if self.args.tokenizer:
            return self.args.tokenizer
        carried = ROOT / ".wheels" / "tokenizer"
        if (carried / "tokenizer_config.json").is_file():
            return str(carried)
        from studio.inference.models import embedded_folder

        return str(embedded_folder())

    def config(self, tokenizer):
        from transformers import LlamaConfig

        return LlamaConfig(
            **self.shape,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    def prepare_model(self) -> None:
        """The random model as a safetensors folder with the tokenizer, and a random LoRA adapter beside it; reused
        when a folder of the same shape is there already (the marker is written last)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        marker = self.folder / "bench-shape.json"
        wanted = {**self.shape, "dtype": self.precision}
        if (
            marker.is_file()
            and json.loads(marker.read_text()) == wanted
            and (self.adapter / "adapter_config.json").is_file()
        ):
            self.n_linear = self.count_linear()
            self.report.line(
                f"[0 model] {self.shape_name} reused from {self.folder} "
                f"(N_linear {self.n_linear / 1e9:.3g}B, {folder_gb(self.folder):.2f} GB)"
            )
            return
        shutil.rmtree(self.folder, ignore_errors=True)  # nothing left of a different or half-written model
        shutil.rmtree(self.adapter, ignore_errors=True)
        source = self.tokenizer_source()
        tokenizer = AutoTokenizer.from_pretrained(source)
        config = self.config(tokenizer)
        torch.manual_seed(0)
        started = time.perf_counter()
        with torch.device(self.device):
            model = AutoModelForCausalLM.from_config(config, dtype=self.dtype)
        self.sync()
        built = time.perf_counter() - started
        started = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(self.folder)
        tokenizer.save_pretrained(self.folder)
        saved = time.perf_counter() - started
        params = sum(p.numel() for p in model.parameters())
        from peft import LoraConfig, get_peft_model

        get_peft_model(
            model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
        ).save_pretrained(self.adapter)
        del model
        self.free()
        marker.write_text(json.dumps(wanted))
        self.n_linear = self.count_linear()
        self.report.line(
            f"[0 model] {self.shape_name}: {params / 1e9:.3g}B parameters (N_linear "
            f"{self.n_linear / 1e9:.3g}B) built on {self.name} in {self.precision} in {built:.1f} s, "
            f"saved ({folder_gb(self.folder):.2f} GB, tokenizer from {source}) in {saved:.1f} s"
        )

    def count_linear(self) -> int:
        """N: every linear layer's weights (LM head included), counted on the meta device from the saved config."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(self.folder))
        return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))

    def measure_limits(self) -> None:
        import torch

        from bench.limits import matmul_flops, memory_bandwidth

        if self.cuda:
            flops = matmul_flops(size=8192, repeats=10, device="cuda", dtype=torch.bfloat16)
            bandwidth = memory_bandwidth(megabytes=2048, repeats=10, device="cuda")
            self.limits = (flops, bandwidth)
            self.report.line(
                f"[0 limits] {self.name}: measured now (bench/limits.py): bf16 matmul "
                f"{flops / 1e12:.0f} TFLOP/s (8192^3) = {flops / H200_BF16_FLOPS:.0%} of the H200's "
                f"{H200_BF16_FLOPS / 1e12:.0f} TFLOP/s spec; copy {bandwidth / 1e12:.2f} TB/s (2 GiB, "
                f"read + write) = {bandwidth / H200_BANDWIDTH:.0%} of its {H200_BANDWIDTH / 1e12:.1f} "
                f"TB/s spec"
            )
        else:
            flops = matmul_flops(size=512, device="cpu", dtype=self.dtype)
            bandwidth = memory_bandwidth(megabytes=64, device="cpu")
            self.limits = (flops, bandwidth)
            self.report.line(
                f"[0 limits] {self.name}: measured now (bench/limits.py): {self.precision} matmul "
                f"{flops / 1e9:.0f} GFLOP/s (512^3), copy {bandwidth / 1e9:.1f} GB/s"
            )
        self.free()

    def write_pairs(self, rows: int) -> Path:
        """Bank questions with answers of varied length (--answer-words), as bench/dpo.py makes them."""
        from studio.data.prompts import ASSETS, parse_prompt_file

        path = self.workdir / "pairs.jsonl"
        shortest, longest = self.args.answer_words
        questions = [text for text, _ in parse_prompt_file(ASSETS / "bank.jsonl").rows]
        rng = random.Random(0)
        words = ["card", "account", "app", "transfer", "limit", "fee", "statement", "security", "help", "today"]

        def answer(opening):
            return opening + " " + " ".join(rng.choice(words) for _ in range(rng.randint(shortest, longest))) + "."

        path.write_text(
            "".join(
                json.dumps(
                    {
                        "prompt": [{"role": "user", "content": questions[i % len(questions)]}],
                        "chosen": [{"role": "assistant", "content": answer("Happy to help:")}],
                        "rejected": [{"role": "assistant", "content": answer("Not my problem:")}],
                    }
                )
                + "\n"
                for i in range(rows)
            )
        )
        return path

    # -- training children -----------------------------------------------------------------------------------
    def shipped(self, recipe: Path, four_bit: bool, data: Path, job: Path, steps: int) -> dict:
        """A shipped recipe's settings on our model, data, job folder and steps."""
        import yaml

        settings = yaml.safe_load(recipe.read_text())
        settings.pop("method")
        model = {"model": str(self.folder), "data": str(data), "output_dir": str(job), "max_steps": steps}
        return {**settings, **model, "load_in_4bit": four_bit}

    def recipe_settings(self, four_bit: bool, data: Path, job: Path) -> dict:
        settings = self.shipped(RECIPE, four_bit, data, job, self.args.steps)
        settings["use_liger_kernel"] = False  # as TRL's defaults run in section 2 (section 8 measures Liger on and off)
        if self.args.tiny:  # a smoke test of the code path: 2 pairs per step instead of the recipe's 8
            settings["gradient_accumulation_steps"] = 2
        if self.args.ref_batch:  # the reference pass runs at the training batch (1) unless told
            settings["precompute_ref_batch_size"] = self.args.ref_batch
        return settings

    def grpo_settings(self, four_bit: bool, data: Path, job: Path) -> dict:
        """The shipped GRPO recipe (8 answers per prompt, up to 96 tokens, correct_number and answer_line) on our
        model and the bank_math prompts, 4-bit on a GPU as a 24 GB card needs for an 8B model."""
        settings = self.shipped(GRPO_RECIPE, four_bit, data, job, self.args.grpo_steps)
        if self.args.tiny:  # a smoke test of the code path: 2 answers of 8 tokens per step
            settings.update(num_generations=2, per_device_train_batch_size=2, max_completion_length=8)
        return settings

    def grpo_prompts(self) -> Path:
        """The built-in bank_math set (fees and interest, a reference number each) as TRL's conversational prompts
        with the answer column, as the shipped GRPO recipe's comment writes them."""
        from studio.data.prompts import ASSETS, parse_prompt_file

        parsed = parse_prompt_file(ASSETS / "bank_math.jsonl")
        path = self.workdir / "grpo-prompts.jsonl"
        path.write_text(
            "".join(
                json.dumps(
                    {
                        "prompt": ([{"role": "system", "content": system}] if system else [])
                        + [{"role": "user", "content": text}],
                        "answer": answer,
                    }
                )
                + "\n"
                for (text, system), answer in zip(parsed.rows, parsed.answers)
            )
        )
        return path

    def new_job(self, name: str) -> Path:
        job = self.workdir / name
        shutil.rmtree(job, ignore_errors=True)  # metrics.jsonl is appended to: nothing from an earlier run
        job.mkdir(parents=True)
        return job

    def child_env(self, job: Path) -> dict:
        probe_dir = job / "probe"
        probe_dir.mkdir(parents=True, exist_ok=True)
        (probe_dir / "sitecustomize.py").write_text(SITECUSTOMIZE.format(root=str(ROOT), probe=PROBE))
        paths = [str(probe_dir), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(paths),
            PROBE: str(job / "probe.json"),
            "HF_DATASETS_CACHE": str(job / "datasets-cache"),
            "TQDM_DISABLE": "1",
        }

    def keep_log(self, log: Path, job: Path) -> None:
        """A child's whole log beside gpu_bench.txt in $OUT, when it is set (the device returns that folder)."""
        if self.report.path:
            shutil.copyfile(log, self.report.path.parent / f"{job.name}.log")

    def run_child(self, command: list[str], job: Path, what: str) -> dict:
        """Run a training child with its output in job/train.log (as the app does); its probe's findings."""
        log = job / "train.log"
        started = time.perf_counter()
        with open(log, "w") as out:
            child = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.child_env(job),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                code = child.wait(timeout=max(1, min(self.args.child_timeout, self.remaining())))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                self.keep_log(log, job)
                raise ChildFailed(
                    f"{what} ran past --child-timeout {self.args.child_timeout} s or --deadline; "
                    "log tail:\n" + tail(log)
                )
        wall = time.perf_counter() - started
        self.keep_log(log, job)
        result = job / "result.json"
        error = json.loads(result.read_text()).get("error") if result.is_file() else None
        if code != 0:
            raise ChildFailed(f"{what} exited {code}" + (f" ({error})" if error else "") + "; log tail:\n" + tail(log))
        probe = job / "probe.json"
        if not probe.is_file():
            raise ChildFailed(f"{what}: no probe written (the sitecustomize hook did not run); log tail:\n" + tail(log))
        found = json.loads(probe.read_text())
        if "trainer_init" not in found or "train_end" not in found:
            raise ChildFailed(
                f"{what}: the probe saw no {' or '.join(TRAINERS)} ({found.get('probe_error', 'no error')}); "
                "log tail:\n" + tail(log)
            )
        found["wall"] = wall
        return found

    def studio_job(self, name: str, four_bit: bool, data: Path, method: str = "dpo", extra: dict | None = None) -> dict:
        from studio.training import recipes

        job = self.new_job(name)
        make = self.grpo_settings if method == "grpo" else self.recipe_settings
        settings = {**make(four_bit, data, job), **(extra or {})}
        recipes.save(job / "recipe.yaml", method, settings)
        found = self.run_child(
            [sys.executable, "-m", "studio.training.train", str(job / "recipe.yaml")], job, "python -m studio train"
        )
        rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        found["tokens"] = int(max(row.get("num_tokens", 0) for row in rows))
        found["train_runtime"] = next((row["train_runtime"] for row in rows if "train_runtime" in row), None)
        steady = sorted(row["tokens_per_s"] for row in rows[1:] if "tokens_per_s" in row and "train_runtime" not in row)
        found["steady_tokens_per_s"] = steady[len(steady) // 2] if steady else None
        found["settings"] = settings
        found["rows"] = rows
        if not (job / "adapter" / "adapter_config.json").is_file():
            raise ChildFailed(f"{name}: finished without saving its adapter")
        return found

    def trl_job(self, settings: dict, data: Path) -> dict:
        job = self.new_job("trl-defaults")
        (job / "settings.json").write_text(
            json.dumps(
                {
                    "model": str(self.folder),
                    "data": str(data),
                    "steps": self.args.steps,
                    "batch": settings["per_device_train_batch_size"],
                    "accumulation": settings["gradient_accumulation_steps"],
                    "lora": {
                        "r": settings["lora_r"],
                        "lora_alpha": settings["lora_alpha"],
                        "lora_dropout": settings["lora_dropout"],
                        "target_modules": settings["lora_target_modules"],
                    },
                }
            )
        )
        found = self.run_child(
            [sys.executable, str(Path(__file__).resolve()), "--trl-child", str(job)], job, "TRL's DPOTrainer (defaults)"
        )
        found.update(json.loads((job / "trl-result.json").read_text()))
        return found

    def training_figures(self, found: dict) -> dict:
        seconds = found["train_end"] - found["trainer_init"]
        rate = found["tokens"] / seconds
        useful = 6 * self.n_linear * rate
        flops = self.limits[0] if self.limits else None
        return {
            "seconds": seconds,
            "rate": rate,
            "mfu_spec": useful / H200_BF16_FLOPS,
            "mfu_measured": useful / flops if flops else None,
            "peak_gib": (found.get("peak_bytes") or found.get("peak_rss_bytes", 0)) / 2**30,
            "reserved_gib": found.get("peak_reserved_bytes", 0) / 2**30,
            "memory": "torch.cuda.max_memory_allocated" if "peak_bytes" in found else "peak RSS (CPU)",
            "load": found["trainer_init"] - found["start"],
        }

    def training_line(self, key: str, label: str, found: dict, precision: str) -> dict:
        f = self.training_figures(found)
        spec = f"{f['mfu_spec']:.1%} of the H200's {H200_BF16_FLOPS / 1e12:.0f} TFLOP/s spec" if self.cuda else ""
        measured = f"{f['mfu_measured']:.1%} of the matmul rate measured now" if f["mfu_measured"] else ""
        steady = found.get("steady_tokens_per_s")
        runtime = found.get("train_runtime")
        fits = f" (fits {FITS_GIB} GiB: {'yes' if f['peak_gib'] <= FITS_GIB else 'NO'})" if self.cuda else ""
        unwanted = found.get("unwanted_modules") or []
        reserved = f", {f['reserved_gib']:.2f} GiB reserved by the allocator" if f["reserved_gib"] else ""
        self.report.line(
            f"{self.tag(key)} {label} | {self.name} | {precision} | peak {f['peak_gib']:.2f} GiB{fits} "
            f"({f['memory']}{reserved}) | {f['rate']:.0f} tokens/s ({found['tokens']} tokens in {f['seconds']:.1f} s "
            f"from DPOTrainer() to the end of train()"
            + (f"; train_runtime {runtime:.1f} s" if runtime else "")
            + (f", steady {steady:.0f} tokens/s" if steady else "")
            + f") | MFU {' / '.join(filter(None, (spec, measured)))} "
            f"(6N per token, N={self.n_linear / 1e9:.3g}B) | {self.args.steps} steps; {f['load']:.0f} s from the "
            f"process start to the trainer (imports, data, model load), process {found['wall']:.0f} s"
            + f" | Liger kernels {'on' if found.get('liger') else 'off'}"
            + (f" | imported {', '.join(unwanted)}!" if unwanted else "")
        )
        return f

    # -- sections --------------------------------------------------------------------------------------------
    def pairs(self) -> Path:
        """The training pairs (written once per run): exactly the rows that --steps of the recipe's batch take."""
        if self._pairs is None:
            settings = self.recipe_settings(False, Path("x"), self.workdir)
            self._pairs = self.write_pairs(
                self.args.steps * settings["per_device_train_batch_size"] * settings["gradient_accumulation_steps"]
            )
        return self._pairs

    def section_qlora(self):
        if not self.cuda:
            self.report.line(f"{self.tag('1')} skipped on {self.name}: 4-bit NF4 (bitsandbytes) needs a CUDA GPU")
            return "skipped"
        found = self.studio_job("studio-qlora", True, self.pairs())
        self.training_line(
            "1",
            "studio DPO, QLoRA (python -m studio train, shipped Llama 3 8B recipe)",
            found,
            "4-bit NF4 base, bf16 compute, LoRA r=16",
        )

    def section_lora(self):
        data = self.pairs()
        studio = self.studio_job("studio-lora", False, data)
        precision = f"{self.precision} base, LoRA r=16"
        s = self.training_line(
            "2",
            "studio DPO, LoRA (python -m studio train, the recipe without 4-bit"
            + (f"; reference pass at batch {self.args.ref_batch})" if self.args.ref_batch else ")"),
            studio,
            precision,
        )
        trl = self.trl_job(studio["settings"], data)
        t = self.training_line(
            "2",
            "TRL DPOTrainer with DPOConfig's defaults (same model, data, LoRA, batch, steps)",
            trl,
            f"{'bf16' if trl.get('bf16') else 'float32'} base (TRL's default), LoRA r=16",
        )
        tokens = (
            ""
            if trl["tokens"] == studio["tokens"]
            else f" (token counts differ: studio {studio['tokens']}, TRL {trl['tokens']})"
        )
        self.report.line(
            f"{self.tag('2')} ratio studio / TRL defaults | {self.name} | {precision} | tokens/s "
            f"{s['rate'] / t['rate']:.2f}x ({s['rate']:.0f} vs {t['rate']:.0f}), peak memory "
            f"{s['peak_gib'] / t['peak_gib']:.2f}x ({s['peak_gib']:.2f} vs {t['peak_gib']:.2f} GiB); TRL / studio "
            f"train_runtime {trl['train_runtime'] / studio['train_runtime']:.2f}x (the Trainer's clock alone, without "
            f"the studio's reference pass){tokens}"
        )

    def loaded(self):
        """The model as the app loads it to answer (models.load: bf16 on a GPU), with the lengths forced."""
        from studio.inference import models

        started = time.perf_counter()
        loaded = models.load(str(self.folder))
        if not getattr(loaded, "_bench_forced", False):
            never_stop(loaded.model, loaded.tokenizer)
            loaded._bench_forced = True
            self.report.line(
                f"[0 load] models.load({self.folder.name}) on {self.name}: {loaded.device} "
                f"{loaded.dtype} in {time.perf_counter() - started:.1f} s"
            )
        return loaded

    def section_generate(self):
        import torch

        from studio.core.store import Store
        from studio.data.candidates import generate_candidates
        from studio.data.prompts import get_prompts, install_builtin_sets
        from studio.inference.decode import GenerationParams, chat_texts

        args = self.args
        loaded = self.loaded()
        model, tokenizer = loaded.model, loaded.tokenizer
        store = Store(self.workdir / "generate.db")
        install_builtin_sets(store)
        prompts = get_prompts(store, "bank", limit=args.gen_prompts)
        k, tokens = 4, args.gen_tokens
        params = GenerationParams(k=k, max_new_tokens=tokens, batch_size=len(prompts), seed=0)
        generate_candidates(store, str(self.folder), prompts[:2], GenerationParams(k=1, max_new_tokens=4, seed=0))
        self.sync()
        started = time.perf_counter()
        result = generate_candidates(store, str(self.folder), prompts, params)
        self.sync()
        studio_s = time.perf_counter() - started
        studio_rate = result.responses_added / studio_s

        def naive_one(prompt, new_tokens):
            inputs = tokenizer(chat_texts(tokenizer, [prompt]), return_tensors="pt", add_special_tokens=False).to(
                model.device
            )
            with torch.inference_mode():
                out = model.generate(
                    **inputs,
                    do_sample=True,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    pad_token_id=tokenizer.eos_token_id,
                )
            return out.shape[1] - inputs["input_ids"].shape[1]

        naive_one(prompts[0], 4)  # warm-up
        self.sync()
        started = time.perf_counter()
        naive_count = naive_tokens = 0
        for prompt in prompts[: args.naive_prompts]:
            for _ in range(k):
                naive_tokens += naive_one(prompt, tokens)
                naive_count += 1
        self.sync()
        naive_s = time.perf_counter() - started
        naive_rate = naive_count / naive_s
        rows = len(prompts) * k
        embeddings = model.get_input_embeddings().weight
        weight_bytes = (
            sum(p.numel() * p.element_size() for p in model.parameters())
            - embeddings.numel() * embeddings.element_size()
        )
        studio_tokens_s = result.responses_added * tokens / studio_s
        bandwidth = self.limits[1] if self.limits else None
        spec_bound = rows * H200_BANDWIDTH / weight_bytes
        measured = (
            f", {studio_tokens_s / (rows * bandwidth / weight_bytes):.1%} of the bound at the measured "
            f"{bandwidth / 1e12:.2f} TB/s"
            if bandwidth
            else ""
        )
        self.report.line(
            f"{self.tag('3')} studio generate_candidates vs naive loop | {self.name} | {loaded.dtype}, k={k}, "
            f"{tokens} new tokens each (forced) | studio {studio_rate:.2f} candidates/s ({result.responses_added} in "
            f"{studio_s:.1f} s, {len(prompts)} prompts x {k} in one batch, saved to SQLite) vs naive "
            f"{naive_rate:.2f} candidates/s ({naive_count} in {naive_s:.1f} s, model.generate one prompt and one "
            f"candidate per call, min_new_tokens) = {studio_rate / naive_rate:.1f}x"
        )
        self.report.line(
            f"{self.tag('3')} studio vs decode bound | {self.name} | {loaded.dtype}, {rows} rows | "
            f"{studio_tokens_s:.0f} new tokens/s = {studio_tokens_s / spec_bound:.1%} of the bound "
            f"{spec_bound:.0f} tokens/s ({rows} rows x {H200_BANDWIDTH / 1e12:.1f} TB/s H200 spec / "
            f"{weight_bytes / 1e9:.2f} GB of weights read per step){measured}; naive "
            f"{naive_tokens / naive_s:.0f} tokens/s = {naive_tokens / naive_s / (H200_BANDWIDTH / weight_bytes):.1%} "
            f"of its 1-row bound (time includes prefill and, for the studio, saving)"
        )

    def section_compare(self):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from bench.compare import prompts as compare_prompts
        from studio.inference import models
        from studio.inference.decode import GenerationParams, chat_texts, stream

        args = self.args
        loaded = self.loaded()
        tokenizer = loaded.tokenizer
        tokens = args.compare_tokens
        params = GenerationParams(k=1, max_new_tokens=tokens, seed=0)
        turns = [compare_prompts(1)[0]] + compare_prompts(args.compare_turns)  # the first warms up, untimed
        if isinstance(loaded.model, PeftModel):
            raise TypeError("the loaded model already holds adapters (section 4 must run on a fresh load)")

        def memory():
            if self.cuda:
                return torch.cuda.max_memory_allocated() / 2**30
            import psutil

            return psutil.Process().memory_info().rss / 2**30

        # Two copies: the base as loaded, and a second copy with the adapter; one generate() each per turn.
        self.free()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        second = AutoModelForCausalLM.from_pretrained(
            self.folder, dtype=loaded.model.dtype, **({"device_map": self.device} if self.cuda else {})
        )
        never_stop(second, tokenizer)
        aligned = PeftModel.from_pretrained(second, str(self.adapter)).eval()
        naive_tokens, started = 0, None
        for i, prompt in enumerate(turns):
            if i == 1:
                self.sync()
                started = time.perf_counter()
            inputs = tokenizer(chat_texts(tokenizer, [prompt]), return_tensors="pt", add_special_tokens=False).to(
                loaded.model.device
            )
            for model in (loaded.model, aligned):
                with torch.inference_mode():
                    out = model.generate(
                        **inputs,
                        do_sample=True,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        max_new_tokens=tokens,
                        min_new_tokens=tokens,
                        pad_token_id=tokenizer.eos_token_id,
                    )
                if i > 0:
                    naive_tokens += out.shape[1] - inputs["input_ids"].shape[1]
        self.sync()
        naive_s = time.perf_counter() - started
        naive_peak = memory()
        del second, aligned, model
        self.free()
        # One copy: the Compare tab's path, base and adapter rows in one batch.
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        names = models.with_adapters(loaded, [None, str(self.adapter)])
        studio_tokens, started = 0, None
        for i, prompt in enumerate(turns):
            if i == 1:
                self.sync()
                started = time.perf_counter()
            texts = None
            for texts in stream(loaded, [prompt, prompt], params, names):
                pass
            if i > 0:
                studio_tokens += 2 * tokens  # forced: the stop tokens cannot be drawn (never_stop)
        self.sync()
        studio_s = time.perf_counter() - started
        studio_peak = memory()
        what = "peak GPU memory (max_memory_allocated)" if self.cuda else "process RSS (CPU)"
        self.report.line(
            f"{self.tag('4')} one copy, mixed-adapter batch vs two copies | {self.name} | {loaded.dtype}, LoRA r=16 "
            f"| {studio_tokens / studio_s:.0f} vs {naive_tokens / naive_s:.0f} tokens/s = "
            f"{(studio_tokens / studio_s) / (naive_tokens / naive_s):.2f}x ({args.compare_turns} turns x 2 answers x "
            f"{tokens} tokens: {studio_s:.1f} s vs {naive_s:.1f} s) | {what} {studio_peak:.2f} vs {naive_peak:.2f} "
            f"GiB = {studio_peak / naive_peak:.2f}x"
        )

    def section_handover(self):
        """The app's loaded model handed over to a job that the job manager starts (models.hand_over): the device
        memory the app holds before, while the job trains and after it, and the job's own peak; their sum is the
        device's peak with the hand-over, against the app's model plus the job without it."""
        import torch

        from studio.core import jobs
        from studio.core.store import Store
        from studio.training import launch

        def held() -> float:  # GiB this process holds on the device now
            if self.cuda:
                torch.cuda.synchronize()
                return torch.cuda.memory_allocated() / 2**30
            import psutil

            return psutil.Process().memory_info().rss / 2**30

        self.loaded()
        before = held()
        home = self.new_job("handover")
        os.environ["STUDIO_HOME"] = str(home)  # the job manager's jobs folder and database, for this section only
        store = Store(home / "studio.db")
        settings = self.recipe_settings(self.cuda, self.pairs(), home)
        settings.pop("output_dir")
        rows = [json.loads(line) for line in self.pairs().read_text().splitlines()]
        job_id = launch.create(store, "dpo", settings, data_label="hand-over", data_rows=rows, data_info={})
        manager = launch.Manager(store)
        manager.gpu = self.cuda  # on a CPU the app keeps its model: RAM is shared
        manager.refresh()
        during, line = held(), manager.gpu_line()
        deadline = time.time() + max(1, min(self.args.child_timeout, self.remaining()))
        while jobs.get(store, job_id)["status"] in ("queued", "running", "stopping") and time.time() < deadline:
            time.sleep(2)
            manager.refresh()
        job = jobs.get(store, job_id)
        if job["status"] != "finished":
            manager.stop(job_id)
            raise ChildFailed(f"the hand-over's job ended {job['status']}: {job['error'] or 'past the deadline'}")
        result = json.loads((Path(job["folder"]) / "result.json").read_text())
        peak = result["peak_memory_bytes"] / 2**30
        started = time.perf_counter()
        self.loaded()
        back = time.perf_counter() - started
        where = "GPU memory allocated" if self.cuda else "RSS (CPU: the app keeps its model)"
        self.report.line(
            f"{self.tag('5')} app model handed over to job {job_id} | {self.name} | {where}: app {before:.2f} GiB "
            f"before, {during:.2f} GiB while the job trains ({line or 'nothing handed over'}), job peak "
            f"{peak:.2f} GiB ({result['peak_memory_of']}) | device peak with the hand-over {during + peak:.2f} GiB "
            f"vs {before + peak:.2f} GiB without"
            + (f" (fits {FITS_GIB} GiB: {'yes' if during + peak <= FITS_GIB else 'NO'})" if self.cuda else "")
            + f" | the app loaded its model again in {back:.1f} s after the job"
        )

    def section_vllm(self):
        if importlib.util.find_spec("vllm") is None:
            self.report.line(
                f"{self.tag('6')} {self.name}: vLLM is not available on this machine (no vllm module); nothing measured"
            )
        else:
            self.report.line(
                f"{self.tag('6')} {self.name}: vLLM {version('vllm')} is installed, but this bench does not start it; "
                "serve the model with `vllm serve` and add it on the Generate tab (bench/generate.py --server times "
                "the same client against llama-server)"
            )

    def grpo_figures(self, found: dict) -> dict:
        """Seconds per step, answers and answer tokens per second on the probe's clock (the constructor to the end of
        train(): sampling, rewards and the update), from the job's metrics.jsonl."""
        settings, rows = found["settings"], found["rows"]
        steps = [row for row in rows if "completions/mean_length" in row]
        answers = len(steps) * settings["per_device_train_batch_size"] * settings.get("gradient_accumulation_steps", 1)
        length = sum(row["completions/mean_length"] for row in steps) / max(len(steps), 1)
        seconds = found["train_end"] - found["trainer_init"]
        return {
            "steps": len(steps),
            "seconds": seconds,
            "answers_per_s": answers / seconds,
            "tokens_per_s": answers * length / seconds,
            "length": length,
            "clipped": sum(row.get("completions/clipped_ratio", 0) for row in steps) / max(len(steps), 1),
            "peak_gib": (found.get("peak_bytes") or found.get("peak_rss_bytes", 0)) / 2**30,
            "memory": "torch.cuda.max_memory_allocated" if "peak_bytes" in found else "peak RSS (CPU)",
            "reward": steps[-1].get("reward") if steps else None,
        }

    def section_grpo(self):
        """GRPO through `python -m studio train` with the shipped GRPO recipe (the studio's sampling loop, the two
        verifiable rewards): its steps' time, answers/s and peak memory."""
        four_bit = self.cuda
        found = self.studio_job("studio-grpo", four_bit, self.grpo_prompts(), method="grpo")
        g = self.grpo_figures(found)
        settings = found["settings"]
        precision = ("4-bit NF4 base, bf16 compute" if four_bit else f"{self.precision} base") + ", LoRA r=16"
        fits = f" (fits {FITS_GIB} GiB: {'yes' if g['peak_gib'] <= FITS_GIB else 'NO'})" if self.cuda else ""
        self.report.line(
            f"{self.tag('7')} studio GRPO (python -m studio train, shipped GRPO recipe: "
            f"{settings['num_generations']} answers per prompt, up to {settings['max_completion_length']} tokens, "
            f"correct_number + answer_line) | {self.name} | {precision} | peak {g['peak_gib']:.2f} GiB{fits} "
            f"({g['memory']}) | {g['seconds'] / max(g['steps'], 1):.1f} s per step, {g['answers_per_s']:.2f} "
            f"answers/s, {g['tokens_per_s']:.0f} answer tokens/s ({g['steps']} steps in {g['seconds']:.1f} s from "
            f"GRPOTrainer() to the end of train(): sampling, rewards and updates) | answers {g['length']:.0f} tokens "
            f"on average, {g['clipped']:.0%} cut at the limit (random weights rarely stop) | Liger kernels "
            f"{'on' if found.get('liger') else 'off'} | {found['trainer_init'] - found['start']:.0f} s from the "
            f"process start to the trainer, process {found['wall']:.0f} s"
        )

    def section_liger(self):
        """TRL's use_liger_kernel (Liger's RMSNorm, RoPE and SwiGLU kernels; TRL keeps its own fused LM head) on
        against off, on the same DPO run as section 2 (LoRA on the bf16 base): tokens/s and peak memory."""
        from studio.training import recipes

        if not self.cuda:
            self.report.line(f"{self.tag('8')} skipped on {self.name}: Liger's kernels are Triton kernels for a GPU")
            return "skipped"
        if not recipes.liger_available():
            self.report.line(
                f"{self.tag('8')} skipped on {self.name}: liger-kernel is not installed (bench/pack_gpu_wheels.sh "
                "carries it)"
            )
            return "skipped"
        data = self.pairs()
        precision = f"{self.precision} base, LoRA r=16"
        figures = {}
        for on in (False, True):
            name = f"studio-liger-{'on' if on else 'off'}"
            found = self.studio_job(name, False, data, extra={"use_liger_kernel": on})
            if found.get("liger") is not on:
                raise ChildFailed(f"use_liger_kernel: {on} in the recipe; the trainer ran with {found.get('liger')}")
            figures[on] = self.training_line(
                "8", f"studio DPO, LoRA, use_liger_kernel: {str(on).lower()}", found, precision
            )
        on, off = figures[True], figures[False]
        self.report.line(
            f"{self.tag('8')} ratio Liger on / off | {self.name} | {precision} | tokens/s "
            f"{on['rate'] / off['rate']:.2f}x ({on['rate']:.0f} vs {off['rate']:.0f}), peak memory "
            f"{on['peak_gib'] / off['peak_gib']:.2f}x ({on['peak_gib']:.2f} vs {off['peak_gib']:.2f} GiB)"
        )


def never_stop(model, tokenizer) -> None:
    """Random weights end answers at random places: the LM head's rows of the stop tokens set to zero, so that a
    stop token's logit (0) is never among the 50 likeliest (random logits spread far above and below 0) that both the
    studio's sampling and generate()'s draw from: every answer runs to max_new_tokens."""
    import torch

    eos = model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    stops.discard(None)
    with torch.no_grad():
        model.get_output_embeddings().weight[sorted(stops)] = 0


def folder_gb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e9


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def trl_child(job: Path) -> None:
    """TRL's DPOTrainer with DPOConfig's defaults (the studio's LoRA, batch and steps), timed by the probe."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    settings = json.loads((job / "settings.json").read_text())
    # TRL's default precision (bf16=True) where the machine can run it; float32 on a CPU without bf16 products.
    precision = {} if torch.cuda.is_available() else {"bf16": False}
    args = DPOConfig(
        output_dir=str(job),
        max_steps=settings["steps"],
        per_device_train_batch_size=settings["batch"],
        gradient_accumulation_steps=settings["accumulation"],
        report_to="none",
        save_strategy="no",
        seed=0,
        **precision,
    )
    model = AutoModelForCausalLM.from_pretrained(
        settings["model"], dtype=torch.bfloat16 if args.bf16 else torch.float32
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        processing_class=AutoTokenizer.from_pretrained(settings["model"]),
        train_dataset=load_dataset("json", data_files=settings["data"], split="train"),
        peft_config=LoraConfig(task_type="CAUSAL_LM", **settings["lora"]),
    )
    trainer.train()
    trainer.save_model(str(job / "adapter"))
    logs = trainer.state.log_history
    tokens = getattr(trainer, "_total_train_tokens", None) or max(row.get("num_tokens", 0) for row in logs)
    (job / "trl-result.json").write_text(
        json.dumps(
            {
                "tokens": int(tokens),
                "bf16": bool(args.bf16),
                "train_runtime": next(row["train_runtime"] for row in logs if "train_runtime" in row),
            }
        )
    )


def parse_sections(text: str) -> list[str]:
    names = {v: k for k, v in SECTIONS.items()}
    keys = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in SECTIONS:
            keys.append(part)
        elif part in names:
            keys.append(names[part])
        elif part:
            known = ", ".join(f"{k}/{v}" for k, v in SECTIONS.items())
            raise argparse.ArgumentTypeError(f"unknown section {part!r}: use {known}")
    return sorted(set(keys))


def words_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama on the CPU in float32 (the test suite's run)")
    parser.add_argument(
        "--sections",
        type=parse_sections,
        default=parse_sections(",".join(SECTIONS)),
        help="which checks, by number or name: 1 qlora, 2 lora, 3 generate, 4 compare, 5 handover, "
        "6 vllm, 7 grpo, 8 liger (default: all)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="optimizer steps per DPO run (default 6; 1 with --tiny); each is the recipe's 1 x 8 pairs",
    )
    parser.add_argument("--grpo-steps", type=int, help="optimizer steps of the GRPO run (default 4; 1 with --tiny)")
    parser.add_argument(
        "--ref-batch",
        type=int,
        help="rows per forward pass of the studio's precomputed reference pass (TRL's precompute_ref_batch_size; "
        "default: the recipe's batch, 1); compare, say, 8 in section 2's figures",
    )
    parser.add_argument("--answer-words", type=words_range, help="answer length range in words (default 100-400)")
    parser.add_argument("--gen-prompts", type=int, help="prompts in the studio's generation batch (default 16)")
    parser.add_argument("--gen-tokens", type=int, help="new tokens per candidate (default 64)")
    parser.add_argument("--naive-prompts", type=int, help="prompts of the naive loop, x4 candidates each (default 2)")
    parser.add_argument("--compare-turns", type=int, help="timed chat turns in section 4 (default 3)")
    parser.add_argument("--compare-tokens", type=int, help="tokens per answer in section 4 (default 64)")
    parser.add_argument("--workdir", help="jobs, data and databases (default: a new temporary folder)")
    parser.add_argument(
        "--model-dir",
        help="the random model's folder, reused when there (default: "
        "/tmp/align-gpu-bench/llama-8b; with --tiny, inside --workdir)",
    )
    parser.add_argument("--tokenizer", help="tokenizer folder (default: .wheels/tokenizer, else the embedded model's)")
    parser.add_argument("--child-timeout", type=int, help="seconds for one training child (default 240)")
    parser.add_argument(
        "--deadline",
        type=float,
        help="seconds for the whole run: a training child is stopped at it "
        "and later sections are not started (default: none)",
    )
    parser.add_argument("--trl-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trl_child:
        trl_child(args.trl_child)
        return 0
    tiny = args.tiny
    defaults = {
        "steps": 1 if tiny else 6,
        "grpo_steps": 1 if tiny else 4,
        "answer_words": (5, 20) if tiny else (100, 400),
        "gen_prompts": 4 if tiny else 16,
        "gen_tokens": 8 if tiny else 64,
        "naive_prompts": 1 if tiny else 2,
        "compare_turns": 2 if tiny else 3,
        "compare_tokens": 8 if tiny else 64,
        "child_timeout": 240,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    # Nothing here may reach the network (the GPU machine has none: a Hub call would hang until it times out).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would bury the figures
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if tiny:  # the CPU in float32, whatever the machine has
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["STUDIO_CPU_BF16"] = "0"
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="align-gpu-bench-")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    args.model_dir = args.model_dir or str(Path(args.workdir) / "model" if tiny else "/tmp/align-gpu-bench/llama-8b")

    report = Report()
    started = time.perf_counter()
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)"
    dists = (
        "torch",
        "transformers",
        "trl",
        "peft",
        "accelerate",
        "datasets",
        "bitsandbytes",
        "liger_kernel",
        "triton",
        "huggingface_hub",
        "pyarrow",
        "safetensors",
    )
    report.line(
        f"[0 versions] python {sys.version.split()[0]}, "
        + ", ".join(f"{d} {version(d)}" for d in dists)
        + f", CUDA {torch.version.cuda}, device {device}"
        + (
            f" ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
            if torch.cuda.is_available()
            else ""
        )
    )
    unmet = unmet_requirements(("trl", "datasets", "bitsandbytes", "peft", "transformers", "accelerate"))
    report.line(
        "[0 requirements] "
        + (
            "; ".join(unmet)
            if unmet
            else "every declared requirement of trl, datasets, bitsandbytes, peft, transformers and accelerate is met"
        )
    )
    if not torch.cuda.is_available() and not tiny:
        report.line("[0 device] no CUDA device: the 8B-shaped checks need a GPU; run with --tiny on a CPU")
        return 2
    bench = Bench(args, report)
    steps = {
        "1": bench.section_qlora,
        "2": bench.section_lora,
        "3": bench.section_generate,
        "4": bench.section_compare,
        "5": bench.section_handover,
        "6": bench.section_vllm,
        "7": bench.section_grpo,
        "8": bench.section_liger,
    }

    def guarded(key: str, run) -> bool:
        try:
            if run() == "skipped":
                report.skipped.append(key)
            return True
        except Exception as error:  # one failing check must not lose the others
            report.failed.append(key)
            lines = traceback.format_exception(error)
            message = str(error).splitlines()[0] if str(error) else ""
            report.line(f"{bench.tag(key)} FAILED on {bench.name}: {type(error).__name__}: {message}")
            for line in "".join(lines[-4:]).rstrip().splitlines()[-30:]:
                report.line(f"{bench.tag(key)}   | {line}")
            return False
        finally:
            bench.free()

    def check_imports():
        """What the sections use, imported as the app's pages import it: none of what the GPU machine lacks."""
        import studio.data.candidates
        import studio.inference.chat
        import studio.training.train

        del studio
        found = sorted({m.split(".")[0] for m in sys.modules} & set(UNWANTED))
        report.line(
            "[0 imports] studio.training.train, studio.data.candidates, studio.inference.chat: "
            + (f"imported {', '.join(found)}!" if found else f"none of {', '.join(UNWANTED)} imported")
        )

    ready = True
    if any(key in args.sections for key in "1234578"):
        ready = guarded("0", check_imports) and guarded("0", bench.prepare_model)
        guarded("0", bench.measure_limits)  # without it, only the figures against the specs are printed
    for key in args.sections:
        if bench.remaining() <= 0:
            report.skipped.append(key)
            report.line(f"{bench.tag(key)} not run on {bench.name}: past --deadline {args.deadline:.0f} s")
            continue
        if key in "123478" and not ready:
            report.failed.append(key)
            report.line(f"{bench.tag(key)} FAILED on {bench.name}: not run, the model could not be prepared (above)")
            continue
        if guarded(key, steps[key]) and key not in report.skipped:
            report.done.append(key)
    report.line(
        f"[done] {bench.name} | {time.perf_counter() - started:.0f} s | sections ok: "
        f"{', '.join(bench.tag(k) for k in report.done) or 'none'}; skipped: "
        f"{', '.join(bench.tag(k) for k in report.skipped) or 'none'}; failed: "
        f"{', '.join(bench.tag(k) for k in report.failed) or 'none'} | workdir {args.workdir}"
    )
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
