"""DPO throughput and peak memory: the studio's DPO job against TRL's DPOTrainer with its defaults.

    python bench/dpo.py [--steps 16] [--batch-size 4] [--rows 64]

Both sides train the same LoRA (r=16, all linear layers) on the same model (embedded), data, batch size, learning
rate and number of steps, each in its own process so that peak memory is its own. The studio side is
`python -m studio train`'s code path with the studio's defaults (reference log-probabilities computed once,
batches grouped by length); the TRL side is DPOTrainer with DPOConfig's defaults. Prints the ratio of tokens per
second and of peak memory (RSS on CPU, torch's peak allocation on CUDA), measured in this run.

Timed fairly: each side's clock runs from loading the model to the saved adapter, so whatever a side does before
training (tokenising, the studio's reference pass) counts; both sides import the same libraries before their clock
starts. The Trainer's own train_runtime ratio is printed beside it.
The fraction of the FLOP bound: useful FLOPs = tokens x 6N, N = the weights of every linear layer (LM head
included): 2N for the policy's forward, 2N for its backward to the activations (the base is frozen; LoRA's own
gradients are under 1% here), 2N for the reference model's forward; attention's own products (about 1% at these
lengths) and the gradient-checkpointing recompute are not counted as useful. Divided by this run's matmul FLOP/s in
the precision both sides train in (bench/limits.py): bf16 on a GPU or a CPU with AMX, else fp32.
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_target_modules": "all-linear"}


def make_rows(n: int) -> list[dict]:
    """Bank questions with answers of varied length, so padding matters as it does with real candidates."""
    from studio.data.prompts import ASSETS, parse_prompt_file

    questions = [text for text, _ in parse_prompt_file(ASSETS / "bank.jsonl").rows]
    rng = random.Random(0)
    words = ["card", "account", "app", "transfer", "limit", "fee", "statement", "security", "help", "today"]
    rows = []
    for i in range(n):

        def answer(opening):
            return opening + " " + " ".join(rng.choice(words) for _ in range(rng.randint(5, 90))) + "."

        rows.append(
            {
                "prompt": [{"role": "user", "content": questions[i % len(questions)]}],
                "chosen": [{"role": "assistant", "content": answer("Happy to help:")}],
                "rejected": [{"role": "assistant", "content": answer("Not my problem:")}],
            }
        )
    return rows


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def precision() -> dict:
    """The same precision on both sides: the studio's (bf16 on a GPU, or on a CPU with AMX; else float32), which is
    also what TRL's configs ask for by default (bf16=True) wherever it can run."""
    import torch

    from studio.inference.models import cpu_bf16

    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported()}
    return {"bf16": True, "use_cpu": True} if cpu_bf16() else {"bf16": False}


def run_side(side: str, data: Path, out: Path, steps: int, batch: int) -> dict:
    # The same libraries are imported on both sides before the clock starts (nobody's training time).
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    common = {
        "output_dir": str(out),
        "max_steps": steps,
        "per_device_train_batch_size": batch,
        "learning_rate": 5e-5,
        "report_to": "none",
        "save_strategy": "no",
        "seed": 0,
        **precision(),
    }
    if side == "studio":
        from studio.training import recipes, train

        # Gradient checkpointing as the Train tab opens on it for this model and data (recipes.recommended): on a
        # CPU with a small model, every other layer; the rest as on the TRL side.
        opened = recipes.recommended("dpo", "embedded", len(data.read_text().splitlines()))
        recipes.save(
            out / "recipe.yaml",
            "dpo",
            {
                "data": str(data),
                "model": "embedded",
                **LORA,
                **common,
                **recipes.studio_defaults("dpo"),
                **{k: opened[k] for k in ("gradient_checkpointing", "checkpoint_share")},
            },
        )
        started = time.perf_counter()
        train.run(out / "recipe.yaml")  # loads the model, builds the trainer, trains, saves the adapter
        wall = time.perf_counter() - started
        logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    else:
        from studio.inference.models import resolve

        path = resolve("embedded")
        started = time.perf_counter()
        trainer = DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if common["bf16"] else None),
            args=DPOConfig(**common),
            processing_class=AutoTokenizer.from_pretrained(path),
            train_dataset=load_dataset("json", data_files=str(data), split="train"),
            peft_config=LoraConfig(
                r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
            ),
        )
        trainer.train()
        trainer.save_model(str(out / "adapter"))
        wall = time.perf_counter() - started
        logs = trainer.state.log_history
    training = next(row["train_runtime"] for row in logs if "train_runtime" in row)  # the Trainer's own clock
    tokens = max(row.get("num_tokens", 0) for row in logs)
    return {
        "side": side,
        "seconds": wall,
        "train_runtime": training,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "peak_mb": peak_memory_mb(),
    }


def linear_weights() -> int:
    """N: the weights of every linear layer of the embedded model (the LM head included, counted once)."""
    import torch
    from transformers import AutoModelForCausalLM

    from studio.inference.models import resolve

    model = AutoModelForCausalLM.from_pretrained(resolve("embedded"))
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--side", choices=["trl", "studio"], help=argparse.SUPPRESS)  # one side, in a child process
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        with tempfile.TemporaryDirectory() as out:
            print("RESULT " + json.dumps(run_side(args.side, args.data, Path(out), args.steps, args.batch_size)))
        return
    from studio.inference.models import embedded_folder

    embedded_folder()  # convert once, outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        data.write_text("\n".join(json.dumps(r) for r in make_rows(args.rows)) + "\n")
        results = {}
        for side in ("trl", "studio"):
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--side",
                    side,
                    "--data",
                    str(data),
                    "--steps",
                    str(args.steps),
                    "--batch-size",
                    str(args.batch_size),
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            line = next((x for x in child.stdout.splitlines() if x.startswith("RESULT ")), None)
            if child.returncode or line is None:
                sys.exit(f"{side} side failed:\n{child.stderr[-3000:]}")
            results[side] = json.loads(line[7:])
            r = results[side]
            print(
                f"{side:6}: {r['tokens']:.0f} tokens in {r['seconds']:6.1f} s "
                f"(train_runtime {r['train_runtime']:.1f} "
                f"s) = {r['tokens_per_s']:7.1f} tokens/s, peak memory {r['peak_mb']:.0f} MB"
            )
    trl, studio = results["trl"], results["studio"]
    print(
        f"{args.rows} pairs, {args.steps} steps of {args.batch_size}, LoRA r=16 all-linear, embedded model, "
        f"{'bf16' if precision()['bf16'] else 'float32'} on both sides"
    )
    print(
        f"throughput ratio (studio / TRL defaults), model load to saved adapter: "
        f"{studio['tokens_per_s'] / trl['tokens_per_s']:.2f}x; on the Trainer's train_runtime alone: "
        f"{trl['train_runtime'] / studio['train_runtime']:.2f}x; peak memory ratio: "
        f"{studio['peak_mb'] / trl['peak_mb']:.2f}x"
    )
    import torch

    from bench.limits import describe

    bf16 = precision()["bf16"]
    flops, _, measured = describe(
        "cuda" if torch.cuda.is_available() else "cpu", torch.bfloat16 if bf16 else torch.float32
    )
    n = linear_weights()
    print(measured)
    for name, r in (("trl", trl), ("studio", studio)):
        print(
            f"{name:6}: {6 * n * r['tokens'] / r['seconds'] / 1e9:.1f} useful GFLOP/s "
            f"(6N per token, N = {n / 1e6:.0f}M) "
            f"= {6 * n * r['tokens'] / r['seconds'] / flops:.0%} of the matmul bound"
        )


if __name__ == "__main__":
    main()
