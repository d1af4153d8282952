"""Evaluation: reward-model and toxicity scores, blind A/B win rates with intervals, Bradley-Terry strengths."""

import json
from dataclasses import dataclass
from pathlib import Path

from studio.prompts import prompt_messages


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
        import torch

        texts = [self.tokenizer.apply_chat_template(prompt_messages(prompt) + [{"role": "assistant", "content": a}],
                                                    tokenize=False) for a in answers]
        self.tokenizer.padding_side = "right"
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            return self.model(**batch).logits[:, 0].tolist()


def toxicity(texts: list[str]) -> list[float]:
    """Offline toxicity, 0 (clean) to 1 (abusive), from alt-profanity-check's linear model (it ships in the wheel)."""
    from profanity_check import predict_prob

    return [float(p) for p in predict_prob(list(texts))] if texts else []


@dataclass
class WinRate:
    """Blind A/B votes of a model against a baseline, with 95% Wilson intervals (scipy's binomtest)."""

    wins: int
    ties: int
    losses: int
    both_bad: int

    @property
    def votes(self) -> int:
        return self.wins + self.ties + self.losses + self.both_bad

    def win_rate(self) -> tuple[float, float, float] | None:
        """Wins among the decided votes (ties and both-bad left out): rate, low, high."""
        return _proportion(self.wins, self.wins + self.losses)

    def at_least_as_good(self) -> tuple[float, float, float] | None:
        """The share of all votes where the model was not worse (win, tie or both bad): rate, low, high."""
        return _proportion(self.wins + self.ties + self.both_bad, self.votes)


def _proportion(k: int, n: int):
    from scipy.stats import binomtest

    if n == 0:
        return None
    interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return k / n, float(interval.low), float(interval.high)


def bradley_terry(results: list[tuple[str, str, float]]) -> dict[str, float]:
    """Bradley-Terry strengths from (model a, model b, score of a: 1 win, 0.5 tie, 0 loss), as Elo-like points
    (400 * log10 odds, mean 0). Maximum likelihood with a tiny ridge so a model that never lost stays finite."""
    import numpy as np
    from scipy.optimize import minimize

    models = sorted({m for a, b, _ in results for m in (a, b)})
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[r[0]] for r in results])
    b = np.array([index[r[1]] for r in results])
    score = np.array([r[2] for r in results], dtype=float)

    def loss(theta):
        diff = theta[a] - theta[b]
        # -log likelihood of the observed scores under P(a beats b) = sigmoid(diff), ties as half a win each way.
        return np.sum(np.logaddexp(0, -diff) * score + np.logaddexp(0, diff) * (1 - score)) + 1e-3 * theta @ theta

    theta = minimize(loss, np.zeros(len(models)), method="BFGS").x
    theta -= theta.mean()
    return {m: float(400 * theta[i] / np.log(10)) for m, i in index.items()}
