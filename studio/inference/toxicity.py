"""Offline toxicity: the scorer that needs no network and no GPU (the rubric's toxicity check, the RL toxicity
penalty, the `toxicity` scorer of evaluations and reports)."""


def toxicity(texts: list[str]) -> list[float]:
    """Offline toxicity, 0 (clean) to 1 (abusive), from alt-profanity-check's linear model (it ships in the wheel)."""
    from profanity_check import predict_prob  # loads scikit-learn: deferred to the first score

    return [float(p) for p in predict_prob(list(texts))] if texts else []
