"""The training methods: one record each, read by every list, check and key that depends on the method."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    key: str  # as stored in jobs.method and written in recipes (method: dpo)
    label: str  # shown in the Train tab
    description: str
    config: str  # TRL's config class the recipe extends
    trainer: str  # TRL's trainer class
    data: str  # "pairs" (prompt/chosen/rejected), "prompts" (the policy samples its own answers)
    output: str  # "chat": a LoRA adapter that answers; "reward": a reward model that scores answers

    @property
    def chats(self) -> bool:
        return self.output == "chat"


METHODS = {m.key: m for m in (
    Method("dpo", "DPO", "DPO on preference pairs", "DPOConfig", "DPOTrainer", "pairs", "chat"),
    Method("sft", "SFT", "SFT on chosen answers or demonstrations", "SFTConfig", "SFTTrainer", "pairs", "chat"),
    Method("reward", "Reward model", "Reward model on preference pairs", "RewardConfig", "RewardTrainer", "pairs",
           "reward"),
    Method("rloo", "Online RL (RLOO)", "Online RL (RLOO) on prompts, against a reward model or reward functions",
           "RLOOConfig", "RLOOTrainer", "prompts", "chat"),
)}


def get(key: str) -> Method:
    try:
        return METHODS[key]
    except KeyError:
        raise ValueError(f"method: {key!r} is not one of {', '.join(METHODS)}.") from None


def chat_methods() -> tuple[str, ...]:
    return tuple(k for k, m in METHODS.items() if m.chats)
