"""Reward functions for online RL (TRL's reward_funcs: called with prompts and completions, one float per completion).

A recipe names them as `module:function` (reward_functions), so a team can add its own next to ours; the reward
model of a finished reward-model job comes first (reward_model), then the prompt set's rubric (rubric). Every function
here is wrapped so that a few sampled answers and their rewards are written to samples.jsonl for the Train tab.
"""

import importlib
import json
import re
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


# Verifiable rewards: each compares an answer with the prompt's reference answer (the prompt set's `answer` column,
# which TRL passes to reward functions as `answer`). 1 for a pass, 0 for a fail, None where a prompt has no reference
# (TRL leaves a None out of the reward sum). Named in reward_functions as studio.training.rewards:<name>.
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_FINAL = re.compile(r"answer(?:\s+is|\s*[:=])\s*(.+)", re.IGNORECASE)


def final_answer(text: str) -> str:
    """What an answer gives as its result: the text after its last 'Answer:' ('the answer is ...'), else its last
    non-empty line."""
    found = _FINAL.findall(text)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def _references(answer, count: int) -> list:
    return list(answer) if answer is not None else [None] * count


def correct_number(prompts, completions, answer=None, **kwargs) -> list[float | None]:
    """The number in the final answer equals the reference within a cent (or 0.1% of a large amount)."""
    rewards = []
    for completion, reference in zip(completions, _references(answer, len(completions))):
        expected = _number(str(reference)) if reference is not None else None
        if expected is None:
            rewards.append(None)
            continue
        given = _number(final_answer(_text(completion)))
        rewards.append(float(given is not None and abs(given - expected) <= max(0.01, 0.001 * abs(expected))))
    return rewards


def _plain(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .!?\"'")


def exact_answer(prompts, completions, answer=None, **kwargs) -> list[float | None]:
    """The final answer is the reference, case, spaces and end punctuation aside."""
    return [
        None if reference is None else float(_plain(final_answer(_text(c))) == _plain(str(reference)))
        for c, reference in zip(completions, _references(answer, len(completions)))
    ]


def matches_pattern(prompts, completions, answer=None, **kwargs) -> list[float | None]:
    """The answer matches the reference read as a regular expression (RE2: linear time, whatever the pattern)."""
    import re2

    rewards = []
    for completion, reference in zip(completions, _references(answer, len(completions))):
        if reference is None:
            rewards.append(None)
            continue
        try:
            rewards.append(float(re2.search(str(reference), _text(completion)) is not None))
        except re2.error:
            raise ValueError(f"matches_pattern: the reference {reference!r} is not a regular expression.") from None
    return rewards


def valid_json(prompts, completions, answer=None, **kwargs) -> list[float]:
    """The answer is JSON (a fenced ```json block counts) that the reference, read as a JSON schema, accepts; with
    no reference, any JSON object or array."""
    import jsonschema

    rewards = []
    for completion, reference in zip(completions, _references(answer, len(completions))):
        text = _text(completion).strip()
        if text.startswith("```"):
            text = text.strip("`").removeprefix("json").strip()
        try:
            value = json.loads(text)
            if reference is None:
                ok = isinstance(value, (dict, list))
            else:
                jsonschema.validate(value, json.loads(str(reference)))
                ok = True
        except (ValueError, jsonschema.ValidationError):
            ok = False
        except jsonschema.SchemaError:
            raise ValueError(f"valid_json: the reference {str(reference)[:80]!r} is not a JSON schema.") from None
        rewards.append(float(ok))
    return rewards


def answer_line(prompts, completions, **kwargs) -> list[float]:
    """The answer ends with an 'Answer: ...' line (the format the bank_math set asks for)."""
    last_lines = [(_text(c).strip().splitlines() or [""])[-1] for c in completions]
    return [float(bool(_FINAL.search(line))) for line in last_lines]


REWARDS = "studio.training.rewards:"  # how a recipe names the functions of this module
NEED_REFERENCE = ("correct_number", "exact_answer", "matches_pattern")  # nothing to compare with, no reward
VERIFIABLE = {  # what the Train tab offers, in plain words
    "correct_number": "the number in the final answer matches the reference (within a cent)",
    "exact_answer": "the final answer is the reference (case and spaces aside)",
    "matches_pattern": "the answer matches the reference as a regular expression",
    "valid_json": "the answer is JSON the reference (a JSON schema) accepts",
    "answer_line": "the answer ends with an 'Answer: ...' line",
    "overlong_penalty": "TRL's soft overlong punishment (DAPO): 0 up to 3/4 of the max answer length, down to -1 at it",
}
OVERLONG = "overlong_penalty"  # built from the recipe's max answer length: TRL's get_soft_overlong_punishment


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


JUDGE_PROMPT = """Rate the assistant's answer from 1 (bad) to 10 (excellent) against these guidelines:
{guidelines}

The question:
{question}

The answer:
{answer}

Reply with the number only."""
_SCORE = re.compile(r"\b(10|[1-9])\b")


def _score_from(body: dict) -> float | None:
    """A judge's 1-10 score from a chat completion: the mean over its first token's top log-probabilities of the
    tokens that are scores (a smooth reward), else the first score in its text; None if it gave none."""
    from studio.inference.servers import first_token_weights

    weights = first_token_weights(body, lambda token: int(token) if token.isdigit() and 1 <= int(token) <= 10 else None)
    if weights:
        return sum(k * w for k, w in weights.items()) / sum(weights.values())
    found = _SCORE.search(body["choices"][0]["message"]["content"])
    return float(found.group(1)) if found else None


class JudgeReward:
    """An LLM judge as a reward function: each answer's score (1-10, as a reward 0.1-1) against the prompt set's
    guidelines, from an inference server (its log-probabilities where it returns them) or a model loaded here."""

    __name__ = "llm_judge"

    def __init__(self, recipe):
        self.guidelines = Path(recipe.judge_guidelines).read_text(encoding="utf-8") if recipe.judge_guidelines else ""
        self.guidelines = self.guidelines.strip() or "Helpful, honest, harmless."
        if recipe.judge_urls:
            from studio.inference import servers

            urls = tuple(u for u in recipe.judge_urls.split(",") if u)
            name, model = servers.split(recipe.judge)
            self.client = servers.Client(servers.Connection(name, urls, recipe.judge_key_env or None), model)
            self.loaded = None
        else:
            from studio.inference import models

            self.client, self.loaded = None, models.load(recipe.judge)

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        texts = [
            JUDGE_PROMPT.format(
                guidelines=self.guidelines,
                question=_text(p[-1:]) if isinstance(p, list) else str(p),
                answer=_text(c),
            )
            for p, c in zip(prompts, completions)
        ]
        if self.client is not None:
            asked = [[{"role": "user", "content": text}] for text in texts]
            options = {"max_tokens": 3, "temperature": 0, "logprobs": True, "top_logprobs": 20}
            scores = [_score_from(body) for body in self.client.chat_many(asked, **options)]
        else:
            from studio.inference.decode import GenerationParams, sample

            said = sample(
                self.loaded,
                [{"text": t} for t in texts],
                GenerationParams(k=1, temperature=0.05, max_new_tokens=3, seed=0),
                None,
                None,
            )
            scores = [_score_from({"choices": [{"message": {"content": s[0]}}]}) for s in said]
        return [None if s is None else s / 10 for s in scores]


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


class RewardError(RuntimeError):
    """A reward function that failed or answered wrongly; the message names it."""


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
        try:
            rewards = self.function(prompts=prompts, completions=completions, **kwargs)  # by name, as TRL calls
        except Exception as error:  # the job fails with the function named, whatever it raised
            raise RewardError(f"The reward function {self.__name__} failed: {type(error).__name__}: {error}") from error
        if not hasattr(rewards, "__len__") or len(rewards) != len(completions):  # a list, an array, a tensor
            got = f"{len(rewards)} values" if hasattr(rewards, "__len__") else type(rewards).__name__
            raise RewardError(
                f"The reward function {self.__name__} returned {got} for {len(completions)} answers: it must return "
                "one number (or None) per answer."
            )
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
    functions += [JudgeReward(recipe)] if recipe.judge else []
    for spec in (s.strip() for s in recipe.reward_functions.split(",")):
        if spec == REWARDS + OVERLONG:  # TRL's own helper, sized from this recipe
            from trl.rewards import get_soft_overlong_punishment

            length = recipe.max_completion_length
            functions.append(get_soft_overlong_punishment(length, max(1, length // 4)))
        elif spec:
            functions.append(load_function(spec))
    if not functions:
        raise ValueError(
            "online RL needs a reward: reward_model (a reward-model job's adapter), rubric, judge and/or "
            "reward_functions."
        )
    return [Recorded(f, job_dir / "samples.jsonl", recipe.sample_every, timed=i == 0) for i, f in enumerate(functions)]
