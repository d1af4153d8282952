"""A team ranking one prompt set: how many annotators each prompt needs (the overlap target), gold prompts, how well
annotators agree (Krippendorff's alpha) and how much each one's votes are worth (quality). Who leads: core/access.py.

Quality: every ranking is read as pairwise judgements (a better, b better, tie) on each pair of candidates; a
Dawid-Skene model (crowd-kit's) estimates each annotator's confusion matrix from all judgements, anchored by the gold
prompts' known answers, and an annotator's accuracy is the chance they give the true label. The weight of their vote
in the pair majority is 2 x accuracy - 1 (0 for a coin flip), after pulling accuracy towards 0.75 by 4 judgements'
worth so that a few lucky or unlucky votes decide little.
"""

import itertools

from studio.core.access import TeamError, check_lead
from studio.core.store import Store
from studio.data import ranking

PRIOR_ACCURACY, PRIOR_WEIGHT = 0.75, 4  # where an annotator with few judgements is assumed to stand
FLAG_BELOW, FLAG_MIN_JUDGEMENTS = 0.6, 5  # shown to the lead as low quality


# Overlap targets


def set_target(store: Store, set_name: str, target: int | None, by: str | None = None) -> None:
    """How many annotators should rank each prompt of the set (None or 0: no target). The queue serves prompts
    below the target first."""
    check_lead(by, "set the overlap target")
    if target is not None and not 0 <= int(target) <= 50:
        raise TeamError("The overlap target is a number of annotators per prompt, from 1 to 50 (0: none).")
    with store.tx() as db:
        changed = db.execute(
            "UPDATE prompt_sets SET target = ? WHERE name = ?", (int(target or 0) or None, set_name)
        ).rowcount
    if not changed:
        raise TeamError(f"No prompt set named {set_name!r}.")


def get_target(store: Store, set_name: str) -> int | None:
    rows = store.query("SELECT target FROM prompt_sets WHERE name = ?", (set_name,))
    return rows[0]["target"] if rows else None


# Gold prompts


def mark_gold(store: Store, prompt_id: int, response_id: int | None, by: str | None = None) -> None:
    """Make `response_id` the known best answer of the prompt (None: the prompt is no longer gold)."""
    check_lead(by, "mark gold answers")
    with store.tx() as db:
        if response_id is None:
            db.execute("DELETE FROM gold WHERE prompt_id = ?", (prompt_id,))
            return
        if not db.execute(
            "SELECT 1 FROM responses WHERE id = ? AND prompt_id = ?", (response_id, prompt_id)
        ).fetchone():
            raise TeamError(f"Response {response_id} is not a candidate of prompt {prompt_id}.")
        db.execute(
            "INSERT OR REPLACE INTO gold (prompt_id, response_id, marked_by) VALUES (?, ?, ?)",
            (prompt_id, response_id, by),
        )


def gold(store: Store, set_name: str) -> dict[int, int]:
    """{prompt id: its gold (known best) response id} for the set."""
    return {
        r["prompt_id"]: r["response_id"]
        for r in store.query(
            "SELECT g.prompt_id, g.response_id FROM gold g JOIN prompts p ON p.id = g.prompt_id "
            "JOIN prompt_sets s ON s.id = p.prompt_set_id WHERE s.name = ?",
            (set_name,),
        )
    }


# Agreement and quality


def human_rankings(store: Store, set_name: str) -> list[dict]:
    """Current rankings by people (not imports, not judges)."""
    return [
        r
        for r in ranking.current_rankings(store, set_name, include_imports=False)
        if not r["annotator"].startswith(ranking.JUDGE_PREFIX)
    ]


def judgements(rankings: list[dict]) -> list[tuple[str, tuple[int, int, int], str]]:
    """(annotator, (prompt, low id, high id), 'first' | 'second' | 'tie') for every pair of candidates a ranking
    orders: 'first' means the lower response id is better."""
    found = []
    for r in rankings:
        place = {rid: i for i, tier in enumerate(r["tiers"]) for rid in tier}
        for low, high in itertools.combinations(sorted(place), 2):
            label = "tie" if place[low] == place[high] else ("first" if place[low] < place[high] else "second")
            found.append((r["annotator"], (r["prompt_id"], low, high), label))
    return found


def alpha(rankings: list[dict]) -> float | None:
    """Krippendorff's alpha, ordinal, with each candidate of each prompt as a unit and its place in an annotator's
    ranking (0 = best tier) as the value; None until some candidate is ranked by two people."""
    import krippendorff
    import numpy as np

    annotators = sorted({r["annotator"] for r in rankings})
    units = sorted({(r["prompt_id"], rid) for r in rankings for tier in r["tiers"] for rid in tier})
    if len(annotators) < 2 or not units:
        return None
    row, column = {a: i for i, a in enumerate(annotators)}, {u: i for i, u in enumerate(units)}
    data = np.full((len(annotators), len(units)), np.nan)
    for r in rankings:
        for place, tier in enumerate(r["tiers"]):
            for rid in tier:
                data[row[r["annotator"]], column[(r["prompt_id"], rid)]] = place
    if not (np.sum(~np.isnan(data), axis=0) >= 2).any() or len(np.unique(data[~np.isnan(data)])) < 2:
        return None
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))


def quality(store: Store, set_name: str) -> dict[str, dict]:
    """{annotator: judgements, accuracy (Dawid-Skene, gold-anchored), weight, gold right / gold seen, flagged}."""
    rankings = human_rankings(store, set_name)
    found = judgements(rankings)
    if not found:
        return {}
    known = gold(store, set_name)
    truth = {}
    for _, (prompt, low, high), _ in found:
        best = known.get(prompt)
        if best in (low, high):
            truth[(prompt, low, high)] = "first" if best == low else "second"
    counts: dict[str, int] = {}
    gold_seen: dict[str, list[int]] = {}
    for who, task, label in found:
        counts[who] = counts.get(who, 0) + 1
        if task in truth:
            seen = gold_seen.setdefault(who, [0, 0])
            seen[0] += label == truth[task]
            seen[1] += 1
    accuracy = _dawid_skene(found, truth)
    # Two people who disagree look alike to the model: a flag needs gold answers or a third annotator to side with.
    evidence = len(counts) >= 3
    result = {}
    for who, n in counts.items():
        shrunk = (n * accuracy.get(who, PRIOR_ACCURACY) + PRIOR_WEIGHT * PRIOR_ACCURACY) / (n + PRIOR_WEIGHT)
        seen = tuple(gold_seen.get(who, (0, 0)))
        result[who] = {
            "judgements": n,
            "accuracy": shrunk,
            "weight": max(0.0, 2 * shrunk - 1),
            "gold": seen,
            "flagged": n >= FLAG_MIN_JUDGEMENTS and shrunk < FLAG_BELOW and (evidence or seen[1] >= 3),
        }
    return result


def _dawid_skene(found, truth) -> dict[str, float]:
    """Each annotator's chance of giving the true label, from crowd-kit's Dawid-Skene (gold tasks fixed)."""
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    data = pd.DataFrame(
        [(f"{p}/{lo}/{hi}", who, label) for who, (p, lo, hi), label in found], columns=["task", "worker", "label"]
    )
    true_labels = pd.Series({f"{p}/{lo}/{hi}": label for (p, lo, hi), label in truth.items()}, dtype=object)
    model = DawidSkene(n_iter=100).fit(data, true_labels=true_labels if len(true_labels) else None)
    errors, priors = model.errors_, model.priors_
    return {
        who: float(sum(priors[k] * errors.loc[(who, k), k] for k in priors.index if (who, k) in errors.index))
        for who in data["worker"].unique()
    }


def with_majority(rankings: list[dict]) -> dict[str, tuple[int, int]]:
    """{annotator: (judgements that match the majority of the others, judgements where the others have one)}."""
    by_task: dict[tuple, list[tuple[str, str]]] = {}
    for who, task, label in judgements(rankings):
        by_task.setdefault(task, []).append((who, label))
    result: dict[str, list[int]] = {}
    for votes in by_task.values():
        for who, label in votes:
            others = [lab for w, lab in votes if w != who]
            if not others:
                continue
            tally = {lab: others.count(lab) for lab in set(others)}
            top = max(tally.values())
            leaders = [lab for lab, n in tally.items() if n == top]
            if len(leaders) > 1:
                continue  # the others are split: no majority to agree with
            matched = result.setdefault(who, [0, 0])
            matched[0] += label == leaders[0]
            matched[1] += 1
    return {who: (m[0], m[1]) for who, m in result.items()}


def report(store: Store, set_name: str) -> dict:
    """What the lead sees: agreement (pairwise share, Kendall's tau, Krippendorff's alpha), the target's progress,
    and per annotator (`people`): rankings, agreement with the majority of the others, gold, quality and flag."""
    rankings = human_rankings(store, set_name)
    base = ranking.agreement(store, set_name)
    made: dict[str, int] = {}
    for r in rankings:
        made[r["annotator"]] = made.get(r["annotator"], 0) + 1
    majority = with_majority(rankings)
    qualities = quality(store, set_name)
    rows = []
    for who in sorted(made, key=lambda w: (-made[w], w)):
        agree = majority.get(who)
        q = qualities.get(who, {})
        rows.append(
            {
                "annotator": who,
                "rankings": made[who],
                "with_majority": agree[0] / agree[1] if agree and agree[1] else None,
                "compared": agree[1] if agree else 0,
                "gold": q.get("gold", (0, 0)),
                "accuracy": q.get("accuracy"),
                "weight": q.get("weight"),
                "flagged": q.get("flagged", False),
            }
        )
    return {
        **base,
        "alpha": alpha(rankings),
        "people": rows,
        "target": get_target(store, set_name),
        "reached": ranking.progress(store, set_name, None).get("reached_target"),
    }
