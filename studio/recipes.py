"""Training recipes: TRL's own configs (DPOConfig, SFTConfig, RewardConfig) plus our model, data and LoRA fields.

A recipe is saved as YAML in its job folder: `method:` names the config, the other keys are its fields, written
only where they differ from the defaults so a person can read it. `python -m studio.train job_dir/recipe.yaml`
runs it.
"""

import functools
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

METHODS = {"dpo": "DPO on preference pairs", "sft": "SFT on chosen answers or demonstrations",
           "reward": "Reward model on preference pairs", "rloo": "Online RL (RLOO) on prompts, against a reward model or reward functions"}


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the setting to fix."""


@dataclass
class StudioArgs:
    """What the studio adds to TRL's config: the model, the data and the LoRA adapter."""

    model: str = field(default="embedded", metadata={"help": "Base model: embedded, a Hub id, or a local folder."})
    data: str = field(default="", metadata={"help": "Training data: a .jsonl/.parquet file, a Hub data set id or a "
                                                    "local data set folder (the UI snapshots studio rankings into the "
                                                    "job folder)."})
    data_split: str = field(default="train", metadata={"help": "Split of a Hub data set."})
    continue_from: str = field(default="", metadata={"help": "Adapter folder of an earlier job to continue training."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank: the adapter's size."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling; usually twice the rank."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA layers."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "Layers that get LoRA, e.g. all-linear "
                                                                               "or q_proj,v_proj."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: load the base in 4-bit NF4 (CUDA only)."})
    reward_model: str = field(default="", metadata={"help": "RL: adapter folder of a finished reward-model job; its "
                                                            "score of each sampled answer is the reward."})
    reward_functions: str = field(default="", metadata={"help": "RL: extra rewards as module:function, comma separated,"
                                                                " e.g. studio.rewards:toxicity_penalty; TRL's "
                                                                "reward_weights weighs them (reward model first)."})
    rubric: str = field(default="", metadata={"help": "RL: a rubric YAML file (the Train tab copies the prompt "
                                                    "set's into the job); its score of each sampled answer (0-1) "
                                                    "is a reward."})
    sample_every: int = field(default=2, metadata={"help": "RL: write a few sampled answers with their rewards every "
                                                           "N generation rounds (samples.jsonl)."})
    group_by_length: bool = field(default=True, metadata={"help": "Batches of rows of similar length, so less "
                                                                   "compute goes to padding; blocks of 16 batches "
                                                                   "are shuffled (the order repeats each epoch)."})

    def check_studio_fields(self):
        if not self.data:
            raise RecipeError("data: say what to train on (a file, a Hub data set id or a data set folder).")
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise RecipeError("lora_r and lora_alpha must be 1 or more.")
        if not 0 <= self.lora_dropout < 1:
            raise RecipeError("lora_dropout must be from 0 to below 1.")
        if self.sample_every < 1:
            raise RecipeError("sample_every must be 1 or more.")


@functools.cache
def recipe_class(method: str):
    """The recipe dataclass for `method`: TRL's config plus StudioArgs. TRL (and torch) load only when needed,
    so the app starts fast."""
    from trl import DPOConfig, RewardConfig, RLOOConfig, SFTConfig

    base = {"dpo": DPOConfig, "sft": SFTConfig, "reward": RewardConfig, "rloo": RLOOConfig}.get(method)
    if base is None:
        raise RecipeError(f"method: {method!r} is not one of {', '.join(METHODS)}.")

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
    for method in METHODS:
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
    "loss_type": "DPO's loss (TRL loss_type); sigmoid is the standard, see the README for when to pick another.",
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


def studio_defaults(method: str) -> dict:
    """Settings the studio chooses over TRL's defaults: a log line per step for the live plots, and for DPO the
    reference log-probabilities computed once before training instead of in every step (1.4x faster alone on CPU)."""
    settings = {"logging_steps": 1, "report_to": "none"}
    if method == "dpo":
        settings["precompute_ref_log_probs"] = True
    if method == "rloo":
        # Short answers and four samples per prompt: a step in seconds on a laptop CPU; TRL's KL penalty (beta)
        # against the starting model (the adapter switched off) keeps the policy close.
        settings.update(num_generations=4, per_device_train_batch_size=4, max_completion_length=48, beta=0.05,
                        temperature=1.0)
    return settings


PAIR_MODE = "best_worst"


def recommended(method: str, model: str, rows: int) -> dict:
    """The settings the Train tab opens on for `method` on `model` with `rows` training rows (see the README's
    table for the runs behind them)."""
    settings = {"learning_rate": 5e-5, "num_train_epochs": 1, "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 1, "beta": 0.1, "max_length": 512}
    if method != "dpo":
        settings.pop("beta")
    return {**settings, **studio_defaults(method)}


def build(method: str, settings: dict):
    """The recipe object for `method` with `settings`; RecipeError names what is wrong."""
    cls = recipe_class(method)
    settings = dict(settings)
    if "bf16" not in settings:  # detected, not asked: bf16 where a GPU can do it, float32 on a CPU
        import torch

        settings["bf16"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    defaults = {f.name: f.default for f in fields(cls)}
    annotations = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise RecipeError(f"Unknown setting(s) for {method}: {', '.join(unknown)}.")
    for name, value in settings.items():
        # TrainingArguments does not check types; a string learning rate would only fail deep inside training.
        expected = type(defaults[name])
        if expected is bool and not isinstance(value, bool):
            raise RecipeError(f"{name}: expected true or false, got {value!r}.")
        if expected in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RecipeError(f"{name}: expected a number, got {value!r}.")
        if expected is int and isinstance(value, float):
            if not value.is_integer():
                raise RecipeError(f"{name}: expected a whole number, got {value!r}.")
            settings[name] = int(value)
        if expected is str and not isinstance(value, str) and not (isinstance(value, list) and "list" in annotations[name]):
            raise RecipeError(f"{name}: expected text, got {value!r}.")
    try:
        return cls(**settings)
    except RecipeError:
        raise
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{method} recipe: {error}") from None


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
        raise RecipeError(f"{path}: a recipe is a mapping with a 'method:' key ({', '.join(METHODS)}).")
    method = raw.pop("method")
    raw.setdefault("output_dir", str(path.resolve().parent))  # not TRL's ./trainer_output in whatever folder
    return method, build(method, raw)


def help_text(name: str) -> str:
    """The one-line help of a setting shown in the Train tab."""
    for f in fields(StudioArgs):
        if f.name == name:
            return f.metadata["help"]
    return HELP.get(name, "")
