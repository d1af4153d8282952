"""Training recipes: TRL's own configs (DPOConfig, SFTConfig, RewardConfig) plus our model, data and LoRA fields.

A recipe is saved as YAML in its job folder: `method:` names the config, the other keys are its fields, written
only where they differ from the defaults so a person can read it. `python -m studio train job_dir/recipe.yaml`
runs it.
"""

import enum
import functools
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from studio.core import methods


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the setting to fix."""


@dataclass
class StudioArgs:
    """What the studio adds to TRL's config: the model, the data and the LoRA adapter."""

    model: str = field(default="embedded", metadata={"help": "Base model: embedded, a Hub id, or a local folder."})
    data: str = field(
        default="",
        metadata={
            "help": "Training data: a .jsonl/.parquet file, a Hub data set id or a "
            "local data set folder (the UI snapshots studio rankings into the "
            "job folder)."
        },
    )
    data_split: str = field(default="train", metadata={"help": "Split of a Hub data set."})
    continue_from: str = field(default="", metadata={"help": "Adapter folder of an earlier job to continue training."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank: the adapter's size."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling; usually twice the rank."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA layers."})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "Layers that get LoRA, e.g. all-linear or q_proj,v_proj."}
    )
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: load the base in 4-bit NF4 (CUDA only)."})
    reward_model: str = field(
        default="",
        metadata={
            "help": "RL: adapter folder of a finished reward-model job; its score of each sampled answer is the reward."
        },
    )
    reward_functions: str = field(
        default="",
        metadata={
            "help": "RL: extra rewards as module:function, comma separated,"
            " e.g. studio.training.rewards:toxicity_penalty; TRL's "
            "reward_weights weighs them (reward model first)."
        },
    )
    rubric: str = field(
        default="",
        metadata={
            "help": "RL: a rubric YAML file (the Train tab copies the prompt "
            "set's into the job); its score of each sampled answer (0-1) "
            "is a reward."
        },
    )
    judge: str = field(
        default="",
        metadata={
            "help": "RL: an LLM judge scoring each sampled answer 1-10 against the prompt set's guidelines "
            "(judge_guidelines): embedded, a Hub id or folder, or server:<connection>/<model>."
        },
    )
    judge_urls: str = field(
        default="", metadata={"help": "RL: the judge's inference server base URLs (the studio fills them in)."}
    )
    judge_key_env: str = field(
        default="", metadata={"help": "RL: the environment variable with the judge server's key (never the key)."}
    )
    judge_guidelines: str = field(default="", metadata={"help": "RL: the guidelines file the judge scores against."})
    sample_every: int = field(
        default=2,
        metadata={
            "help": "RL: write a few sampled answers with their rewards every N generation rounds (samples.jsonl)."
        },
    )
    processes: int = field(
        default=0,
        metadata={
            "help": "Training processes, data parallel through accelerate "
            "launch: 0 = one per GPU (one on a machine without GPUs); 2 or "
            "more on a CPU too (gloo). Each process takes "
            "per_device_train_batch_size rows per step."
        },
    )
    group_by_length: bool = field(
        default=True,
        metadata={
            "help": "Batches of rows of similar length, so less "
            "compute goes to padding; blocks of 16 batches "
            "are shuffled (the order repeats each epoch)."
        },
    )
    checkpoint_share: float = field(
        default=1.0,
        metadata={
            "help": "With gradient_checkpointing: the share of the "
            "model's layers recomputed in the backward pass "
            "instead of kept; 1 = all (least memory), 0.5 = "
            "every other layer (faster, more memory)."
        },
    )

    def check_studio_fields(self):
        if not self.data:
            raise RecipeError("data: say what to train on (a file, a Hub data set id or a data set folder).")
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise RecipeError("lora_r and lora_alpha must be 1 or more.")
        if not 0 <= self.lora_dropout < 1:
            raise RecipeError("lora_dropout must be from 0 to below 1.")
        if self.processes < 0:
            raise RecipeError(f"processes must be 0 (one per GPU) or more; got {self.processes}.")
        if self.sample_every < 1:
            raise RecipeError("sample_every must be 1 or more.")
        if not 0 < self.checkpoint_share <= 1:
            raise RecipeError(f"checkpoint_share must be above 0 and at most 1; got {self.checkpoint_share}.")
        # TRL and torch accept these and fail deep inside training (or, for a negative learning rate, train
        # backwards); the recipe names them first.
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            value = getattr(self, name, 1)
            if isinstance(value, (int, float)) and value < 1:
                raise RecipeError(f"{name} must be 1 or more; got {value}.")
        if not self.learning_rate > 0:
            raise RecipeError(f"learning_rate must be above 0; got {self.learning_rate}.")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise RecipeError("num_train_epochs must be above 0 (or max_steps 1 or more).")
        for name in ("max_length", "max_completion_length", "num_generations"):
            value = getattr(self, name, None)
            if isinstance(value, int) and value < 1:
                raise RecipeError(f"{name} must be 1 or more; got {value}.")
        if getattr(self, "beta", 0) < 0:
            raise RecipeError(f"beta must be 0 or more; got {self.beta}.")


@functools.cache
def recipe_class(method: str):
    """The recipe dataclass for `method`: TRL's config plus StudioArgs. TRL (and torch) load only when needed,
    so the app starts fast."""
    import trl

    try:
        base = getattr(trl, methods.get(method).config)
    except ValueError as error:
        raise RecipeError(str(error)) from None

    @dataclass
    class Recipe(StudioArgs, base):
        def __post_init__(self):
            self.check_studio_fields()
            super().__post_init__()

    # A module-level name, so the trainer can pickle the recipe into training_args.bin (see __getattr__).
    Recipe.__name__ = Recipe.__qualname__ = f"{method.upper()}Recipe"
    globals()[Recipe.__name__] = Recipe
    return Recipe


def __getattr__(name: str):
    """DPORecipe, SFTRecipe, RewardRecipe, RLOORecipe on demand (for unpickling in a fresh process)."""
    for method in methods.METHODS:
        if name == f"{method.upper()}Recipe":
            return recipe_class(method)
    raise AttributeError(name)


# One-line help for the settings the Train tab shows (TRL's own help is longer than a line).
HELP = {
    "learning_rate": "Step size of the optimizer (AdamW); LoRA takes larger ones than full fine-tuning.",
    "num_train_epochs": "Passes over the data (when max steps is -1).",
    "max_steps": "Stop after this many optimizer steps; -1 lets the epochs decide.",
    "per_device_train_batch_size": "Rows per step on each device; lower it if memory runs out.",
    "gradient_accumulation_steps": "Steps whose gradients add up before one update: a larger batch for free memory.",
    "beta": "DPO: how far the model may move from the reference; higher stays closer.",
    "max_length": "Tokens kept per row (prompt and answer); longer rows are cut.",
    "save_steps": "A checkpoint every N steps (Stop also saves one).",
    "seed": "Seed for shuffling and initialisation, to repeat a run.",
    "loss_type": "The loss (TRL loss_type): DPO's sigmoid and GRPO's dapo are TRL's defaults; see docs/train.md.",
    "num_generations": "RL: answers sampled per prompt; each is rewarded against the others of its group.",
    "max_completion_length": "RL: the longest sampled answer, in tokens.",
}

# TRL's DPO loss types offered on the Train tab, with one line each.
LOSS_TYPES = {
    "sigmoid": "sigmoid: standard DPO",
    "ipo": "ipo: bounded margin, less prone to overfitting few pairs",
    "robust": "robust: for noisy votes (annotators who disagree)",
    "sigmoid_norm": "sigmoid_norm: length-normalised, against length exploitation",
    "apo_zero": "apo_zero: pushes chosen up, rejected down (chosen clearly good)",
}


# TRL's GRPO loss types offered on the Train tab (GRPOConfig.loss_type), with one line each.
GRPO_LOSS_TYPES = {
    "dapo": "dapo: TRL's default, tokens of the whole batch weigh alike (no length bias)",
    "dr_grpo": "dr_grpo: Dr. GRPO, a constant normaliser (no length bias)",
    "grpo": "grpo: the original, per-answer length normalised (favours short right answers)",
    "bnpo": "bnpo: tokens of the local batch weigh alike",
    "cispo": "cispo: clips the importance weights (MiniMax-M1)",
    "sapo": "sapo: a soft gate instead of hard clipping",
}


def loss_choices(method: str) -> list[tuple[str, str]]:
    """(label, key) of the losses the Train tab offers for `method`."""
    table = GRPO_LOSS_TYPES if method == "grpo" else LOSS_TYPES
    return [(label, key) for key, label in table.items()]


def studio_defaults(method: str) -> dict:
    """Settings the studio chooses over TRL's defaults: a log line per step for the live plots, and the method's
    own (methods.Method.defaults)."""
    return {"logging_steps": 1, "report_to": "none", **methods.get(method).defaults}


PAIR_MODE = "one_per_prompt"
GRPO_SMALL_LR = 2e-4  # GRPO with LoRA on a model under 1B parameters (measured: docs/train.md, bench/grpo.py)
SMALL_MODEL = 1e9  # parameters
FEW_PAIRS = 1000


def parameter_count(model: str) -> float | None:
    """Roughly how many parameters `model` has, from what is known without loading it: the embedded model, a size
    in the name (SmolLM2-360M, Llama-3-8B), or a local folder's weight files; None when unknown."""
    if model == "embedded":
        return 135e6
    found = re.search(r"(\d+(?:\.\d+)?)\s*([MB])(?![a-z])", Path(model).name, re.IGNORECASE)
    if found:
        return float(found.group(1)) * (1e6 if found.group(2).upper() == "M" else 1e9)
    folder = Path(model).expanduser()
    if folder.is_dir():
        size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        return size / 2 if size else None  # 16-bit checkpoints are the rule; float32 ones count double
    return None


# How a round learns from demonstrations, found by experiment (docs/train.md, bench/RESULTS.md): as the chosen answer of
# DPO pairs against the candidates that fail the rule, in the same job as the rankings.
DEMONSTRATIONS_WHY = (
    "Demonstrations: DPO takes each as the chosen answer over its prompt's candidates that fail the rule, in this "
    "same job (SFT on them first did worse in every run). On the embedded model this taught the bank set's fraud "
    "rule at one split (0% -> 50% of the answers on 2 held-out prompts) and not at another (0% -> 0% on 3): "
    "check the report's rule table after the round."
)


def recommended(method: str, model: str, rows: int) -> dict:
    """The settings the Train tab opens on for `method` on `model` with `rows` training rows, and `why` (a line
    for the page). DPO on a small model with a few hundred pairs: the settings bench/align.py measured (README, Train);
    DPO on a large model or many pairs: the alignment handbook's QLoRA DPO settings (learning rate 5e-6 for 7-8B
    models, one epoch), which we have not measured here."""
    import torch

    size = parameter_count(model)
    small = size is not None and size < SMALL_MODEL
    gpu = torch.cuda.is_available()
    # Gradient checkpointing on every layer (least memory), but on every other layer for a small model on a CPU:
    # as fast as none there (bench/dpo.py) at 0.8x its memory.
    settings = {
        "learning_rate": 5e-5,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_length": 512,
        "gradient_checkpointing": True,
        "checkpoint_share": 1.0 if gpu or not small else 0.5,
    }
    why = f"{method.upper()}: TRL-style defaults with LoRA."
    if method == "dpo":
        settings.update(beta=0.1, loss_type="sigmoid")
        if small and rows < FEW_PAIRS:
            settings.update(learning_rate=5e-4, per_device_train_batch_size=4)
            why = (
                f"{rows} pairs on a small model: learning rate 5e-4, one epoch, batch 4, beta 0.1 (measured: "
                "the adapter beats the base on held-out prompts where 5e-5 does not move it)."
            )
        else:
            large = size is None or size >= 7e9
            settings.update(
                learning_rate=5e-6 if large else 5e-5,
                per_device_train_batch_size=1 if large else 2,
                gradient_accumulation_steps=8 if large else 4,
            )
            why = (
                f"{rows} pairs on a {'large' if large else 'mid-size'} model: learning rate "
                f"{settings['learning_rate']:g}, one epoch, 8 pairs per step, gradient checkpointing (the alignment "
                "handbook's QLoRA DPO learning rate; not measured by us)."
            )
    if method == "grpo":
        settings.update(loss_type="dapo", beta=0.0, learning_rate=GRPO_SMALL_LR if small else 1e-5)
        why = (
            f"GRPO on {rows} prompts: TRL's loss (dapo) and beta 0 (no reference pass), learning rate "
            f"{settings['learning_rate']:g} ("
            + (
                "measured on the embedded model by bench/grpo.py: held-out correct answers 5% -> 20% in 40 steps "
                "with 8 answers per prompt"
                if small
                else "a usual LoRA GRPO rate, not measured by us"
            )
            + ")."
        )
    if settings["checkpoint_share"] < 1:
        why += (
            " Gradient checkpointing on every other layer: for a small model on a CPU as fast as none, at 1.35x "
            "the memory of checkpointing every layer."
        )
    return {**settings, **studio_defaults(method), "why": why}


# Methods whose TRL trainer keeps its own fused LM head and applies only Liger's layer kernels (RMSNorm, RoPE, SwiGLU):
# trl/trainer/{dpo,sft,kto,rloo,grpo}_trainer.py turn Liger's fused linear cross-entropy off. The reward model's
# trainer has no such handling, so Liger stays off there unless a recipe asks for it.
LIGER_METHODS = ("dpo", "sft", "kto", "rloo", "grpo")


def liger_available() -> bool:
    """Liger's kernels can run here: a CUDA GPU (they are Triton kernels) and liger-kernel installed (transformers'
    own check, as its Trainer makes it)."""
    import torch
    from transformers.utils import is_liger_kernel_available

    return torch.cuda.is_available() and is_liger_kernel_available()


def check_liger(recipe) -> None:
    """Where the job trains: a recipe that asks for Liger's kernels on a machine that cannot run them is refused
    before the model loads, with the setting to change."""
    import torch
    from transformers.utils import is_liger_kernel_available

    if not recipe.use_liger_kernel:
        return
    if recipe.use_cpu:
        raise RecipeError("use_liger_kernel: Liger's kernels run on a GPU, and use_cpu keeps this job on the CPU.")
    if not torch.cuda.is_available():
        raise RecipeError(
            "use_liger_kernel: Liger's kernels are Triton kernels for a CUDA GPU, and this machine has none; set "
            "use_liger_kernel: false (leave it out and the studio turns them on where they can run)."
        )
    if not is_liger_kernel_available():
        raise RecipeError(
            "use_liger_kernel: liger-kernel is not installed here; install it (pip install liger-kernel) or set "
            "use_liger_kernel: false."
        )


def build(method: str, settings: dict):
    """The recipe object for `method` with `settings`; RecipeError names what is wrong."""
    cls = recipe_class(method)
    settings = dict(settings)
    if "bf16" not in settings:  # detected, not asked: bf16 where a GPU can do it, or a CPU with AMX; else float32
        import torch

        from studio.inference.models import cpu_bf16

        if torch.cuda.is_available():
            settings["bf16"] = torch.cuda.is_bf16_supported()
        else:
            settings["bf16"] = cpu_bf16()
            if settings["bf16"]:
                settings.setdefault("use_cpu", True)  # transformers accepts bf16 without a GPU only when told
    if "use_liger_kernel" not in settings and method in LIGER_METHODS:
        # detected too: on where Liger's kernels can run (not in a run told to stay on the CPU)
        settings["use_liger_kernel"] = liger_available() and not settings.get("use_cpu")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(settings) - {f.name for f in fields(cls)})
    if unknown:
        raise RecipeError(f"Unknown setting(s) for {method}: {', '.join(unknown)}.")
    for name, value in settings.items():
        # TrainingArguments does not check types: a string learning rate, or a list where a name belongs, would only
        # fail deep inside training with an error that does not name the setting.
        hint = hints[name]
        if isinstance(value, float) and value.is_integer() and not _fits(value, hint) and _fits(int(value), hint):
            value = settings[name] = int(value)  # 2.0 for a whole number (YAML writes some numbers so)
        if not _fits(value, hint):
            wanted = "a whole number" if _fits(0, hint) and not _fits(0.5, hint) else _describe(hint)
            raise RecipeError(f"{name}: expected {wanted}, got {value!r}.")
    try:
        return cls(**settings)
    except RecipeError:
        raise
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{method} recipe: {error}") from None


def _fits(value, hint) -> bool:
    """Whether `value` (read from YAML or the Train tab) is of the type a recipe field is annotated with."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, (hint, str))  # which names are allowed is the config's own check
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):  # one item for a list of one: TRL's configs take `loss_type: ipo`
            return bool(args) and _fits(value, args[0])
        return not args or all(_fits(item, args[0]) for item in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True  # another class (accelerate's ParallelismConfig): left to the config's own checks


def _describe(hint) -> str:
    """A recipe field's type in words, for a message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(arg) for arg in args if arg is not type(None)))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "a whole number"
    if hint is float:
        return "a number"
    if hint is str or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return "text"
    if hint in (list, tuple) or origin in (list, tuple):
        return f"{_describe(args[0])} or a list of them" if args else "a list"
    if hint is dict or origin is dict:
        return "a mapping (key: value)"
    return getattr(hint, "__name__", str(hint))


def save(path, method: str, settings: dict) -> None:
    """Check the settings by building the recipe, then write them as YAML."""
    build(method, settings)
    Path(path).write_text(yaml.safe_dump({"method": method, **settings}, sort_keys=False))


def load(path):
    """Read a recipe YAML file -> (method, recipe object)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path} does not exist.") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict) or "method" not in raw:
        raise RecipeError(f"{path}: a recipe is a mapping with a 'method:' key ({', '.join(methods.METHODS)}).")
    method = raw.pop("method")
    if not isinstance(method, str):
        raise RecipeError(f"method: expected one name ({', '.join(methods.METHODS)}), got {method!r}.")
    raw.setdefault("output_dir", str(path.resolve().parent))  # not TRL's ./trainer_output in whatever folder
    check_output_dir(raw["output_dir"], path.resolve().parent)
    return method, build(method, raw)


def check_output_dir(output_dir, recipe_folder: Path) -> None:
    """A recipe writes inside its own folder, or under a relative path below the working directory: never to an
    absolute path elsewhere or up through '..'."""
    if not isinstance(output_dir, str) or not output_dir.strip():
        raise RecipeError("output_dir must be a folder path.")
    given = Path(output_dir).expanduser()
    if given.resolve().is_relative_to(recipe_folder):
        return
    if given.is_absolute() or ".." in given.parts:
        raise RecipeError(
            f"output_dir: {output_dir} is outside the recipe's folder ({recipe_folder}); write a "
            "relative path such as runs/my-job, or leave it out to use the recipe's folder."
        )


def help_text(name: str) -> str:
    """The one-line help of a setting shown in the Train tab."""
    for f in fields(StudioArgs):
        if f.name == name:
            return f.metadata["help"]
    return HELP.get(name, "")
