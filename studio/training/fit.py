"""Will a training job fit? An estimate of its peak memory, before launch, from the base model's shape and the recipe.

The parts, each from the base's config.json and the recipe's settings:
- the base's weights: 4-bit NF4 with double quantisation (about 4.13 bits a weight; the embeddings and the LM head
  in float32, as PEFT's prepare_model_for_kbit_training casts them), bf16, or float32 (a CPU without AMX);
- the LoRA adapter's weights, gradients and AdamW's two moments, all float32 (PEFT keeps adapters in float32);
- the activations kept for the backward pass: per token and layer, the tensors a Llama-style layer saves with LoRA on
  its linear layers, for the longest batch the data makes (the longest rows, capped at max_length; DPO and reward
  models take the chosen and the rejected answer of each pair); a checkpointed layer keeps its input only and
  recomputes one layer at a time;
- the LM head: on a CPU, the studio's compact head (train.compact_lm_head) keeps about six float32 copies of each
  answer token's logits (the logits, their log-softmax, the gradients of both, the statistics TRL logs); on a GPU,
  TRL's fused Triton head computes them chunk by chunk;
- what the process needs besides: on a GPU, CUDA's context and allocator slack; on a CPU, Python with torch,
  transformers, TRL and PEFT loaded (its resident memory before the model).
The reference model of DPO costs nothing more here: the adapter is switched off over the same weights, and the
reference log-probabilities are computed once before training, without gradients.

The two constants measured rather than derived (the CPU's runtime and the head's six copies) come from five DPO jobs on
the embedded model in float32 (bench/RESULTS.md); tests/test_fit.py checks the estimate against the peaks that jobs
at other settings measure (result.json's peak_memory_bytes). On a GPU the estimate is not checked yet.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from studio.core import hub
from studio.core.paths import models_dir
from studio.inference import models

GIB = 2**30
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PAIRED = ("dpo", "reward")  # methods whose rows are a chosen and a rejected answer, both in every batch
# Besides the tensors counted: CUDA's context and the caching allocator's slack (GPU); the process's resident memory
# with torch, transformers, TRL, PEFT and datasets imported, and the tokenizer (CPU).
OVERHEAD = {"cuda": int(1.0 * GIB), "cpu": int(0.6 * GIB)}
HEAD_COPIES = 6  # float32 copies of a token's logits the CPU's compact head keeps (see above)
NF4_BYTES = 4.127 / 8  # NF4 with double quantisation: 4 bits plus the block constants


@dataclass
class Shape:
    """What the estimate needs of a Llama-style decoder (config.json's fields)."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_config(cls, config: dict) -> "Shape":
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            hidden=hidden,
            layers=int(config["num_hidden_layers"]),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            tied=bool(config.get("tie_word_embeddings", False)),
        )

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def linear_weights(self) -> int:
        return self.layers * sum(a * b for a, b in self.linears().values())

    def embedding_weights(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)


# The embedded model's shape (SmolLM2-135M-Instruct's config.json), for before its first use converts it to a folder.
EMBEDDED_SHAPE = Shape(
    hidden=576, layers=30, intermediate=1536, vocab=49152, heads=9, kv_heads=3, head_dim=64, tied=True
)


def shape_of(model: str) -> Shape | None:
    """The base's shape from its config.json (a folder, the embedded model, or the Hub when it answers); None when
    it cannot be read or is not a Llama-style decoder."""
    if model == models.EMBEDDED:
        config = models_dir() / models.EMBEDDED_FOLDER / "config.json"
        return Shape.from_config(json.loads(config.read_text())) if config.is_file() else EMBEDDED_SHAPE
    try:
        path = models.resolve(model)
    except models.ModelError:
        return None
    config = Path(path) / "config.json"
    if not config.is_file():
        if model == models.EMBEDDED or not hub.reachable():
            return None
        try:
            from huggingface_hub import hf_hub_download

            config = Path(hf_hub_download(path, "config.json"))
        except Exception:  # a gated or missing repo: the launch check names it
            return None
    try:
        return Shape.from_config(json.loads(config.read_text()))
    except (KeyError, TypeError, ValueError):
        return None


def _targets(setting: str) -> list[str]:
    names = [t.strip() for t in str(setting or "all-linear").split(",") if t.strip()]
    return list(LINEARS) if names in ([], ["all-linear"]) else [n for n in names if n in LINEARS]


@dataclass
class Estimate:
    parts: dict[str, int]  # what -> bytes
    device: str  # cuda or cpu
    free: int | None = None  # bytes free on the device for the job
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool | None:
        return None if self.free is None else self.total <= self.free

    def line(self) -> str:
        """One line for the Train tab."""
        where = "GPU memory" if self.device == "cuda" else "RAM"
        parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in self.parts.items() if v >= 0.05 * GIB)
        said = f"Estimated peak {self.total / GIB:.1f} GiB of {where} ({parts})"
        if self.free is None:
            return said + "."
        if self.fits:
            return said + f": fits the {self.free / GIB:.1f} GiB free."
        advice = " ".join(self.notes)
        return said + f": does NOT fit the {self.free / GIB:.1f} GiB free. " + advice[:1].upper() + advice[1:]


def estimate(shape: Shape, settings: dict, method: str, longest: int, device: str, bf16: bool) -> Estimate:
    """Peak memory of one training process for `settings` (recipe fields) on `device`; `longest`: the longest row
    of the data in tokens (prompt and answer)."""
    four_bit = bool(settings.get("load_in_4bit")) and device == "cuda"
    weight_bytes = 2 if bf16 else 4
    if four_bit:
        weights = shape.linear_weights() * NF4_BYTES + shape.embedding_weights() * 4
    else:
        weights = (shape.linear_weights() + shape.embedding_weights()) * weight_bytes
    rank = int(settings.get("lora_r", 16))
    targets = _targets(settings.get("lora_target_modules"))
    lora_params = shape.layers * sum(rank * sum(shape.linears()[t]) for t in targets)
    adapter = lora_params * 16  # float32 weight, gradient and AdamW's two moments
    length = min(int(longest), int(settings.get("max_length") or longest))
    rows = int(settings.get("per_device_train_batch_size", 2)) * (2 if method in PAIRED else 1)
    tokens = rows * length
    act = 2 if (bf16 or four_bit) else 4
    h, kv, i = shape.hidden, shape.kv_heads * shape.head_dim, shape.intermediate
    # Saved per token by a layer: the norms' outputs, q/k/v, attention's output, the MLP's gate, up and product, the
    # residual stream, and LoRA's inputs (its dropout keeps a copy of each adapted linear layer's input).
    adapted = sum(shape.linears()[t][0] for t in targets)
    full_layer = 7 * h + 2 * kv + 4 * i + adapted
    checkpointed = round(float(settings.get("checkpoint_share", 1.0)) * shape.layers)
    if not settings.get("gradient_checkpointing", True):
        checkpointed = 0
    kept = checkpointed * h + (shape.layers - checkpointed) * full_layer + (full_layer if checkpointed else 0)
    activations = tokens * act * kept
    # The LM head: on a CPU, float32 copies of every scored token's logits; on a GPU, TRL's fused head keeps the last
    # hidden states and works through the vocabulary chunk by chunk.
    head = tokens * (HEAD_COPIES * 4 * shape.vocab if device != "cuda" else 2 * h * act)
    parts = {
        "weights": int(weights),
        "adapter and optimizer": int(adapter),
        "activations": int(activations + head),
        "runtime": OVERHEAD["cuda" if device == "cuda" else "cpu"],
    }
    notes = []
    if not four_bit and device == "cuda":
        notes.append("Tick 4-bit QLoRA (the weights take a quarter);")
    if not settings.get("gradient_checkpointing", True) or float(settings.get("checkpoint_share", 1.0)) < 1:
        notes.append("checkpoint every layer (gradient checkpointing, share 1.0);")
    notes.append("lower the batch size (raise gradient accumulation to keep the step), or the max length.")
    return Estimate(parts, "cuda" if device == "cuda" else "cpu", notes=notes)


def free_memory(device: str) -> int:
    """Bytes a job may take: on a GPU its free memory plus what the app's model holds (the job gets the GPU to
    itself: models.hand_over); on a CPU the RAM the system says is available."""
    if device != "cuda":
        return psutil.virtual_memory().available
    import torch

    return torch.cuda.mem_get_info()[0] + models.loaded_bytes()


def longest_row(rows: list[dict], tokenizer=None) -> int:
    """The longest row of the data in tokens (prompt with the longer answer): counted by the base's tokenizer when
    given, else about four characters a token."""

    def text(value) -> str:
        if isinstance(value, list):
            return "".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in value)
        return str(value or "")

    longest = 0
    for row in rows:
        answers = [text(row.get(k)) for k in ("chosen", "rejected", "completion") if k in row] or [""]
        whole = text(row.get("prompt") or row.get("messages")) + max(answers, key=len)
        count = len(tokenizer(whole)["input_ids"]) if tokenizer is not None else len(whole) // 4 + 1
        longest = max(longest, count)
    return longest + 16  # the chat template's own tokens
