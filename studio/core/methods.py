"""The training methods: one record each, read by every list, check and key that depends on the method.

Adding a method is a record here plus its trainer call in training/train.py: the Train tab's list, the recipe class
(TRL's config named here), the data check, which form fields apply, what its finished job offers (an adapter that
chats, or a reward model that scores) all follow the record."""

from dataclasses import dataclass, field

# Recipe fields that belong to some methods only; the Train form sends them all, launch.launch keeps the method's own.
OPTIONS = ("beta", "loss_type", "num_generations", "max_completion_length", "reward_weights")


@dataclass(frozen=True)
class Method:
    key: str  # as stored in jobs.method and written in recipes (method: dpo)
    label: str  # shown in the Train tab
    description: str
    config: str  # TRL's config class the recipe extends
    trainer: str  # TRL's trainer class
    data: str  # "pairs" (prompt/chosen/rejected), "prompts" (the policy samples its own answers), "feedback"
    #           (thumbs and edits given in chat: unpaired prompt/completion/label rows)
    output: str  # "chat": a LoRA adapter that answers; "reward": a reward model that scores answers
    rows: str  # what one training row is, as the Train tab counts them ("pairs", "chosen answers", "prompts")
    columns: tuple[str, ...] = ()  # data columns the trainer needs (SFT takes several shapes: checked by TRL)
    options: tuple[str, ...] = ()  # which of OPTIONS apply
    defaults: dict = field(default_factory=dict)  # the studio's settings over TRL's defaults for this method

    @property
    def chats(self) -> bool:
        return self.output == "chat"

    @property
    def data_label(self) -> str:
        """What the Train tab's prompt-set list is for, with this method."""
        return {
            "pairs": "Data: the rankings of a prompt set",
            "prompts": "Data: the prompts of a prompt set (the policy samples its own answers)",
            "feedback": "Data: the thumbs and edits given in chat (the prompt set is not used)",
        }[self.data]


METHODS = {
    m.key: m
    for m in (
        # DPO: the reference log-probabilities computed once before training instead of in every step (a forward
        # pass less per step; bench/dpo.py measures it).
        Method(
            "dpo",
            "DPO",
            "DPO on preference pairs",
            "DPOConfig",
            "DPOTrainer",
            "pairs",
            "chat",
            "pairs",
            columns=("chosen", "rejected"),
            options=("beta", "loss_type"),
            defaults={"precompute_ref_log_probs": True},
        ),
        Method(
            "sft",
            "SFT",
            "SFT on chosen answers or demonstrations",
            "SFTConfig",
            "SFTTrainer",
            "pairs",
            "chat",
            "chosen answers",
        ),
        Method(
            "reward",
            "Reward model",
            "Reward model on preference pairs",
            "RewardConfig",
            "RewardTrainer",
            "pairs",
            "reward",
            "pairs",
            columns=("chosen", "rejected"),
        ),
        # KTO: learns from single answers marked good or bad (thumbs and edits in chat), no pairs needed.
        Method(
            "kto",
            "KTO",
            "KTO on thumbs up / down and edits given in chat",
            "KTOConfig",
            "KTOTrainer",
            "feedback",
            "chat",
            "rated answers",
            columns=("prompt", "completion", "label"),
            options=("beta",),
            defaults={"per_device_train_batch_size": 4},
        ),
        # RLOO: short answers and four samples per prompt, a step in seconds on a laptop CPU; TRL's KL penalty (beta)
        # against the starting model (the adapter switched off) keeps the policy close.
        Method(
            "rloo",
            "Online RL (RLOO)",
            "Online RL (RLOO) on prompts, against a reward model or reward functions",
            "RLOOConfig",
            "RLOOTrainer",
            "prompts",
            "chat",
            "prompts",
            columns=("prompt",),
            options=("beta", "num_generations", "max_completion_length", "reward_weights"),
            defaults={
                "num_generations": 4,
                "per_device_train_batch_size": 4,
                "max_completion_length": 48,
                "beta": 0.05,
                "temperature": 1.0,
            },
        ),
        # GRPO: TRL's GRPOTrainer with its own defaults where they suit a small run (loss dapo, beta 0: no reference
        # pass); the group, answer length and learning rate as for RLOO, found on the embedded model (docs/train.md).
        Method(
            "grpo",
            "Online RL (GRPO)",
            "Online RL (GRPO) on prompts, against reward functions: rubric, reference answers, a reward model, code",
            "GRPOConfig",
            "GRPOTrainer",
            "prompts",
            "chat",
            "prompts",
            columns=("prompt",),
            options=("beta", "loss_type", "num_generations", "max_completion_length", "reward_weights"),
            defaults={
                "num_generations": 4,
                "per_device_train_batch_size": 4,
                "max_completion_length": 48,
                "temperature": 1.0,
            },
        ),
    )
}


def get(key: str) -> Method:
    try:
        return METHODS[key]
    except KeyError:
        raise ValueError(f"method: {key!r} is not one of {', '.join(METHODS)}.") from None


def chat_methods() -> tuple[str, ...]:
    return tuple(k for k, m in METHODS.items() if m.chats)
