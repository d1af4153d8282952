"""What a job's numbers say, in plain words: read from its metrics (one row per logged step) while it runs and
after. Each finding names what it saw and what to do; a healthy run gets none but the normal-DPO note when it
applies. These are the questions people ask about DPO and RL runs in trainers' issue trackers."""

import math

from studio.core import methods

FLAT_LOSS = math.log(2)  # DPO's loss when the adapter has not moved: -log sigmoid(0)


def _series(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(int(r.get("step", 0)), float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def diagnose(method: str, rows: list[dict], pairs: int | None = None) -> list[str]:
    """Findings for a job of `method` from its metrics rows (`pairs`: how many training rows it had, if known)."""
    found = []
    loss = _series(rows, "loss")
    if any(not math.isfinite(v) for _, v in loss):
        found.append(
            "The loss is not a number (NaN or infinite): the learning rate is too high for this model; "
            "lower it (e.g. 10x) and launch again."
        )
        return found
    if len(loss) >= 8:
        quarter = len(loss) // 4
        first, last = _mean(v for _, v in loss[:quarter]), _mean(v for _, v in loss[-quarter:])
        if last > first * 1.1 + 1e-3:
            found.append(
                f"The loss is rising ({first:.3g} in the first quarter of the steps, {last:.3g} in the last): "
                "lower the learning rate."
            )
    if method == "dpo":
        found += _dpo(rows, loss, pairs)
    if methods.get(method).data == "prompts":
        found += _online(rows)
    return found


def _dpo(rows, loss, pairs) -> list[str]:
    found = []
    if len(loss) >= 5 and all(abs(v - FLAT_LOSS) < 0.005 for _, v in loss):
        found.append(
            f"The loss stays at {FLAT_LOSS:.3f} (log 2): the model cannot tell chosen from rejected. The "
            "pairs may be identical (look at the Data tab) or the learning rate too low."
        )
    accuracy = _series(rows, "rewards/accuracies")
    early = [v for step, v in accuracy if step <= 5]
    if early and max(early) >= 1.0 and (pairs is None or pairs < 200):
        found.append(
            f"Pair accuracy reached 1.0 within {min(s for s, v in accuracy if v >= 1.0)} steps on "
            f"{pairs if pairs is not None else 'few'} pairs: likely memorising them. Add pairs, or train "
            "fewer epochs (or a lower learning rate); the alignment report says whether it generalises."
        )
    chosen, margin = _series(rows, "rewards/chosen"), _series(rows, "rewards/margins")
    if len(chosen) >= 4 and len(margin) >= 4:
        half = len(chosen) // 2
        if _mean(v for _, v in chosen[half:]) < _mean(v for _, v in chosen[:half]) and _mean(
            v for _, v in margin[half:]
        ) > _mean(v for _, v in margin[:half]):
            found.append(
                "The chosen answers' reward falls while the margin grows: normal for DPO (both answers "
                "become less likely, the rejected ones faster). Watch the report's answer lengths."
            )
    return found


def _online(rows) -> list[str]:
    found = []
    kl = _series(rows, "kl")
    if len(kl) >= 6:
        third = len(kl) // 3
        start, end = _mean(v for _, v in kl[:third]), _mean(v for _, v in kl[-third:])
        if end > 0.1 and end > 4 * max(start, 0.01):
            found.append(
                f"The KL to the starting model is rising fast ({start:.3g} -> {end:.3g}): the policy is "
                "drifting, and may be gaming the reward. Raise beta (the KL penalty) or lower the learning "
                "rate."
            )
    spread = _series(rows, "frac_reward_zero_std")
    if len(spread) >= 3 and _mean(v for _, v in spread[-3:]) > 0.8:
        found.append(
            "Most groups of sampled answers get the same reward, so there is nothing to learn from: use a "
            "reward that tells answers apart (a reward model, a rubric with more checks), or sample more "
            "answers per prompt."
        )
    clipped = _series(rows, "completions/clipped_ratio")
    if len(clipped) >= 3 and _mean(v for _, v in clipped[-3:]) > 0.5:
        found.append(
            f"{_mean(v for _, v in clipped[-3:]):.0%} of the sampled answers are cut at the max answer length: the "
            "rewards judge unfinished answers. Raise the max answer length, or reward answers that finish."
        )
    return found
