"""Automatic scorers of an answer to a prompt, shared by evaluations, alignment reports, RL rewards and the Rank tab's
suggestions: offline toxicity, a Hub toxicity classifier, a reward-model job, and a prompt set's rubric.

A scorer is named by a string: `toxicity` (offline), `toxicity:<hub id>`, `reward:job <id>`, or `rubric` (the rubric
of the prompt set being scored). `get(store, name, set_name)` turns the name into a function of (prompt rows,
answers) -> one float per answer.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from studio.core import hub, jobs
from studio.core.store import Store
from studio.data import rubric
from studio.inference.decode import prompt_messages
from studio.inference.toxicity import toxicity

OFFLINE_TOXICITY = "toxicity"  # alt-profanity-check; "toxicity:<hub id>" for a Hugging Face classifier
RUBRIC = "rubric"
REWARD_KEY = "reward:job "  # `reward:job N`: the reward model of finished job N
TOXIC_LABELS = ("toxic", "offensive", "hate", "abusive", "insult", "obscene")


class ScorerError(ValueError):
    """A scorer that cannot be used; the message says what to fix."""


class RewardScorer:
    """A reward-model job's adapter on its base (AutoModelForSequenceClassification): higher scores = preferred."""

    def __init__(self, adapter_folder):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(adapter_folder)
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = PeftModel.from_pretrained(model, str(folder)).eval()

    def score(self, prompt: dict, answers: list[str]) -> list[float]:
        """One score per answer to `prompt` (a prompt row: text, system, context)."""
        return self.score_messages([prompt_messages(prompt) + [{"role": "assistant", "content": a}] for a in answers])

    def score_messages(self, conversations: list[list[dict]], batch_size: int = 8) -> list[float]:
        """One score per conversation (ending in the answer to score), through the chat template."""
        import torch

        self.tokenizer.padding_side = "right"
        scores = []
        for start in range(0, len(conversations), batch_size):
            texts = [
                self.tokenizer.apply_chat_template(messages, tokenize=False)
                for messages in conversations[start : start + batch_size]
            ]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                scores += self.model(**batch).logits[:, 0].tolist()
        return scores


def hub_toxicity(model_id: str):
    """A Hugging Face text classifier as a toxicity scorer: the highest probability among its toxic-sounding labels
    (toxic, offensive, hate, ...). Needs the Hub, or the model in the local cache."""
    from transformers import pipeline

    try:
        hub.check_available(model_id, "the classifier")
    except ValueError as error:
        raise ScorerError(f"{error} Or use the offline scorer 'toxicity'.") from None
    try:
        classify = pipeline(
            "text-classification",
            model=model_id,
            top_k=None,
            truncation=True,
            model_kwargs={"local_files_only": not hub.reachable()},
        )
    except Exception as error:
        raise ScorerError(
            f"Could not load the classifier {model_id!r} ({type(error).__name__}): check the id "
            "and the network, or use the offline scorer 'toxicity'."
        ) from None
    labels = [str(label) for label in classify.model.config.id2label.values()]
    toxic = [label for label in labels if any(word in label.lower() for word in TOXIC_LABELS)]
    if not toxic:
        raise ScorerError(
            f"{model_id} has no toxicity label among {', '.join(labels)}; choose a toxicity "
            "classifier such as unitary/toxic-bert."
        )

    def score(texts):
        return [max(s["score"] for s in result if s["label"] in toxic) for result in classify(list(texts))]

    return score


@dataclass
class Scorer:
    name: str
    score: Callable[[list[dict], list[str]], list[float]]  # (prompt rows, answers) -> one value per answer
    higher_is_better: bool


def reward_key(job_id: int) -> str:
    return f"{REWARD_KEY}{job_id}"


def reward_job_folder(store: Store, key: str) -> Path:
    """The adapter of the finished reward-model job named by 'reward:job N' (or 'N')."""
    number = key.removeprefix(REWARD_KEY).strip()
    try:
        return jobs.finished_folder(store, int(number), "reward")
    except ValueError as error:  # JobError is one
        raise ScorerError(
            str(error) if isinstance(error, jobs.JobError) else f"No reward-model job {number!r}."
        ) from None


def choices(store: Store) -> list[str]:
    """The scorers to offer: the rubric, offline toxicity, then each finished reward model (newest first)."""
    return [RUBRIC, OFFLINE_TOXICITY] + [reward_key(j["id"]) for j in jobs.finished(store, "reward")]


def get(store: Store, name: str, set_name: str | None = None) -> Scorer:
    """The scorer called `name`; `set_name` is the prompt set whose rubric `rubric` means."""
    name = (name or "").strip()
    if name == OFFLINE_TOXICITY:
        return Scorer(name, lambda prompts, answers: toxicity(answers), False)
    if name.startswith("toxicity:"):
        classify = hub_toxicity(name.removeprefix("toxicity:"))
        return Scorer(name, lambda prompts, answers: classify(answers) if answers else [], False)
    if name.startswith(REWARD_KEY):
        model = RewardScorer(reward_job_folder(store, name))
        return Scorer(name, lambda prompts, answers: [model.score(p, [a])[0] for p, a in zip(prompts, answers)], True)
    if name == RUBRIC or name.startswith("rubric:"):
        source = name.removeprefix("rubric:") if name.startswith("rubric:") else set_name
        try:
            checks = rubric.for_set(store, source) if source else None
        except rubric.RubricError as error:
            raise ScorerError(str(error)) from None
        if checks is None:
            raise ScorerError(f"The prompt set {source!r} has no rubric: write one on the Rank tab (Rubric).")
        return Scorer(name, lambda prompts, answers: checks.score_many([p["text"] for p in prompts], answers), True)
    raise ScorerError(f"Unknown scorer {name!r}: use toxicity, toxicity:<hub id>, reward:job <id> or rubric.")
