"""Reward functions for online RL (TRL's reward_funcs: called with prompts and completions, one float per completion).

A recipe names them as `module:function` (reward_functions), so a team can add its own next to ours; the reward
model of a finished reward-model job comes first (reward_model), then the prompt set's rubric (rubric). Every function
here is wrapped so that a few sampled answers and their rewards are written to samples.jsonl for the Train tab.
"""

import importlib
import json
import time
from pathlib import Path

from studio.data import rubric, scorers

step_began = None  # set by the training callback when a step begins; sampling is the first thing a step does


def _text(completion) -> str:
    """A completion as text: TRL passes conversational completions as message lists."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def toxicity_penalty(prompts, completions, **kwargs) -> list[float]:
    """Minus the offline toxicity (0 to 1) of each answer: an abusive answer costs up to 1."""
    return [-t for t in scorers.toxicity([_text(c) for c in completions])]


class RewardModel:
    """A reward-model job's adapter as a reward function: the score of prompt + answer through the chat template."""

    __name__ = "reward_model"

    def __init__(self, adapter_folder):
        folder = Path(adapter_folder).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise ValueError(f"reward_model: {adapter_folder} is not a reward-model adapter folder.")
        self.scorer = scorers.RewardScorer(folder)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return self.scorer.score_messages(
            [
                list(p) + list(c)
                if isinstance(p, list)
                else [{"role": "user", "content": p}, {"role": "assistant", "content": _text(c)}]
                for p, c in zip(prompts, completions)
            ]
        )


class RubricReward:
    """A rubric as a reward function: each sampled answer's score (0 to 1) against the prompt's last user message."""

    __name__ = "rubric"

    def __init__(self, path):
        try:
            self.rubric = rubric.load_file(Path(path).expanduser())
        except rubric.RubricError as error:
            raise ValueError(f"rubric: {error}") from None

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        texts = [_text(p[-1:]) if isinstance(p, list) else str(p) for p in prompts]
        return self.rubric.score_many(texts, [_text(c) for c in completions])


def load_function(spec: str):
    """`module:function` -> the function; ValueError naming the spec when it cannot be found."""
    module_name, _, name = spec.strip().partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"reward_functions: cannot import {spec.strip()!r} (write it as module:function).") from None
    if not callable(function):
        raise ValueError(f"reward_functions: {spec.strip()!r} is not a function.")
    return function


class Recorded:
    """Wraps a reward function: every `every` calls, the first `keep` answers with their reward go to samples.jsonl."""

    def __init__(self, function, path: Path, every: int, keep: int = 2, timed: bool = False):
        self.function, self.path, self.every, self.keep, self.timed = function, Path(path), every, keep, timed
        self.__name__ = getattr(function, "__name__", type(function).__name__)
        self.calls = 0

    def __call__(self, prompts, completions, **kwargs):
        if self.timed and step_began is not None and kwargs.get("log_metric"):
            # Seconds from the start of the step to the first reward call: the time spent sampling answers.
            kwargs["log_metric"]("generation_s", time.time() - step_began)
        rewards = self.function(prompts, completions, **kwargs)
        if self.calls % self.every == 0:
            state = kwargs.get("trainer_state")
            with open(self.path, "a", encoding="utf-8") as f:
                for prompt, completion, reward in list(zip(prompts, completions, rewards))[: self.keep]:
                    f.write(
                        json.dumps(
                            {
                                "step": getattr(state, "global_step", None),
                                "time": time.time(),
                                "reward_function": self.__name__,
                                "prompt": _text(prompt[-1:]) if isinstance(prompt, list) else prompt,
                                "completion": _text(completion),
                                "reward": reward,
                            },
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
        self.calls += 1
        return rewards


def build(recipe, job_dir: Path) -> list:
    """The reward functions a recipe names, reward model first, each recording samples."""
    functions = [RewardModel(recipe.reward_model)] if recipe.reward_model else []
    functions += [RubricReward(recipe.rubric)] if recipe.rubric else []
    functions += [load_function(spec) for spec in recipe.reward_functions.split(",") if spec.strip()]
    if not functions:
        raise ValueError(
            "rloo needs a reward: reward_model (a reward-model job's adapter), rubric and/or reward_functions."
        )
    return [Recorded(f, job_dir / "samples.jsonl", recipe.sample_every, timed=i == 0) for i, f in enumerate(functions)]
