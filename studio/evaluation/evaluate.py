"""Evaluation: reward-model and toxicity scores, blind A/B win rates with intervals, Bradley-Terry strengths."""

import json
import random
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np

from studio.core.store import Store
from studio.data import scorers, team
from studio.data.prompts import get_prompts, prompt_key
from studio.data.ranking import annotator_id
from studio.data.rubric import word_count
from studio.inference.chat import answerers
from studio.training import launch


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


def bradley_terry(results: list[tuple[str, str, float]], weights: list[float] | None = None) -> dict[str, float]:
    """Bradley-Terry strengths from (model a, model b, score of a: 1 win, 0.5 tie, 0 loss), as Elo-like points
    (400 * log10 odds, mean 0). Maximum likelihood with a tiny ridge so a model that never lost stays finite;
    `weights` (one per result: the voter's quality) make it a weighted likelihood."""
    from scipy.optimize import minimize

    models = sorted({m for a, b, _ in results for m in (a, b)})
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[r[0]] for r in results])
    b = np.array([index[r[1]] for r in results])
    score = np.array([r[2] for r in results], dtype=float)
    weight = np.ones(len(results)) if weights is None else np.asarray(weights, dtype=float)

    def loss(theta):
        diff = theta[a] - theta[b]
        # -log likelihood of the observed scores under P(a beats b) = sigmoid(diff), ties as half a win each way.
        return (
            np.sum(weight * (np.logaddexp(0, -diff) * score + np.logaddexp(0, diff) * (1 - score)))
            + 1e-3 * theta @ theta
        )

    theta = minimize(loss, np.zeros(len(models)), method="BFGS").x
    theta -= theta.mean()
    return {m: float(400 * theta[i] / np.log(10)) for m, i in index.items()}


# --- Evaluations: two or more models answer the same prompts; blind A/B votes and automatic scores ---------------

LENGTH_MATCH = 0.2  # answers whose word counts are within 20% of each other count as length-matched


class EvaluationError(ValueError):
    """An evaluation action that cannot be done; the message says what to fix."""


def overlap(store: Store, job_ids, set_name: str) -> tuple[int, int]:
    """(prompts of the set that any of the jobs, or the jobs they continued from, trained on; prompts in the set),
    matched by the prompts themselves (text, system prompt, earlier turns), not by set name."""
    trained = (
        set().union(*(launch.training_prompt_keys(store, j) for j in job_ids if j is not None)) if job_ids else set()
    )
    keys = [prompt_key(p) for p in get_prompts(store, set_name)]
    return sum(k in trained for k in keys), len(keys)


def held_out_set(store: Store, choices: list, set_names: list[str]) -> tuple[str | None, str]:
    """The first prompt set that shares no prompt with what the chosen models were trained on (matched by the
    prompts, not the set names), and a note naming the overlap when every set shares some."""
    job_ids = [c.job_id for c in choices if c.job_id is not None]
    if not job_ids:
        note = (
            "None of the chosen models was trained here, so the studio cannot tell whether a set was held out; "
            "make sure the set was not in their training data."
            if choices
            else "Choose the models first."
        )
        return (set_names[0] if set_names else None), note
    counts = {name: overlap(store, job_ids, name) for name in set_names}
    for name in set_names:
        if counts[name][0] == 0 and counts[name][1]:
            return name, "Held out: no prompt of this set was used in training."
    if not set_names:
        return None, ""
    name = min(set_names, key=lambda n: counts[n][0] / max(counts[n][1], 1))
    shared, total = counts[name]
    return name, (
        f"Every prompt set shares prompts with the training data; {name} shares {shared} of its {total}. "
        "Scores on those flatter the model: split a set into train and held-out parts on the Generate tab."
    )


def create_evaluation(
    store: Store,
    set_name: str,
    choices: list,
    params,
    limit: int = 0,
    cancel=None,
    on_progress=None,
    samples: int = 1,
    exclude_jobs=(),
    report_id: int | None = None,
) -> int:
    """Every chosen model (chat.Choice; the first is the baseline) answers every prompt of the set `samples` times
    (several seeds), batch by batch; each finished batch is saved, so a cancel keeps what was done. Prompts that
    the jobs in `exclude_jobs` trained on are left out. Returns the evaluation id."""
    if len(choices) < 2:
        raise EvaluationError("Choose at least two models to compare (the first one is the baseline).")
    if len({(c.model, c.adapter) for c in choices}) < len(choices):
        raise EvaluationError("The same model is chosen twice; choose different models.")
    if not 1 <= samples <= 8:
        raise EvaluationError("Answers per prompt (samples) must be from 1 to 8.")
    prompts = get_prompts(store, set_name)
    if exclude_jobs:
        trained = set().union(*(launch.training_prompt_keys(store, j) for j in exclude_jobs))
        prompts = [p for p in prompts if prompt_key(p) not in trained]
        if not prompts:
            raise EvaluationError(f"Every prompt of {set_name!r} was used in training; choose a held-out set.")
    prompts = prompts[:limit] if limit and limit > 0 else prompts
    if not prompts:
        raise EvaluationError(f"The prompt set {set_name!r} has no prompts.")
    answer = answerers(store, choices)  # before anything is saved: a model that cannot load leaves no rows
    params = replace(params, k=samples).seeded()
    set_id = store.query("SELECT id FROM prompt_sets WHERE name = ?", (set_name,))[0]["id"]
    with store.tx() as db:
        evaluation = db.execute(
            "INSERT INTO evaluations (prompt_set_id, params, samples, report_id) VALUES (?, ?, ?, ?)",
            (set_id, json.dumps(params.stored()), samples, report_id),
        ).lastrowid
        db.executemany(
            "INSERT INTO eval_models (evaluation_id, position, label, model, adapter, job_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(evaluation, i, c.label, c.model, c.adapter, c.job_id) for i, c in enumerate(choices)],
        )
    try:
        status = _answer_all(store, evaluation, prompts, answer, params, cancel, on_progress)
    except Exception:  # an inference server that stopped answering: what was saved is kept, as for a cancel
        status = "cancelled"
        raise
    finally:
        with store.tx() as db:
            db.execute("UPDATE evaluations SET status = ? WHERE id = ?", (status, evaluation))
    return evaluation


def _answer_all(store, evaluation, prompts, answer, params, cancel, on_progress) -> str:
    """Every model answers the prompts chunk by chunk, each chunk saved once all have answered; 'ready' or
    'cancelled'."""
    status, per_batch = "ready", params.batch_size
    if on_progress:
        on_progress(0, len(prompts))
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start : start + per_batch]
        # Each model answers the chunk in a batch of its own (one adapter switch, no per-row routing); the chunk is
        # saved once every model has answered it.
        answers = []
        for run in answer:
            done = None if cancel is not None and cancel.is_set() else run(chunk, params, cancel)
            if done is None:
                break
            answers.append(done)
        if len(answers) < len(answer):
            status = "cancelled"
            break
        with store.tx() as db:
            db.executemany(
                "INSERT INTO eval_answers (evaluation_id, position, prompt_id, sample, text) VALUES (?, ?, ?, ?, ?)",
                [
                    (evaluation, position, row["id"], n, text)
                    for position, texts_per_prompt in enumerate(answers)
                    for row, texts in zip(chunk, texts_per_prompt)
                    for n, text in enumerate(texts)
                ],
            )
        if on_progress:
            on_progress(start + len(chunk), len(prompts))
    return status


def list_evaluations(store: Store) -> list[dict]:
    rows = store.query(
        """SELECT e.id, e.status, s.name AS prompt_set, e.created_at,
                  (SELECT group_concat(label, ' | ') FROM (SELECT label FROM eval_models m WHERE m.evaluation_id = e.id
                   ORDER BY position)) AS models,
                  (SELECT COUNT(DISTINCT prompt_id) FROM eval_answers a WHERE a.evaluation_id = e.id) AS prompts,
                  (SELECT COUNT(*) FROM eval_votes v WHERE v.evaluation_id = e.id) AS votes
           FROM evaluations e JOIN prompt_sets s ON s.id = e.prompt_set_id ORDER BY e.id DESC"""
    )
    return [dict(r) for r in rows]


def eval_models(store: Store, evaluation: int) -> list[dict]:
    rows = store.query("SELECT * FROM eval_models WHERE evaluation_id = ? ORDER BY position", (evaluation,))
    if not rows:
        raise EvaluationError(f"There is no evaluation {evaluation}.")
    return [dict(r) for r in rows]


@dataclass
class VoteTask:
    """One blind comparison: the prompt and two answers, left and right; which model is which stays hidden
    (first/second/left are positions, sent back with the vote, never shown)."""

    evaluation: int
    prompt_id: int
    sample: int
    prompt: dict
    first: int
    second: int
    left: int
    left_text: str
    right_text: str
    done: int
    total: int


def _comparisons(store: Store, evaluation: int) -> list[tuple[int, int, int, int]]:
    """(prompt, sample, first, second) for every pair of models that both answered the prompt in that sample."""
    answered = {}
    for row in store.query(
        "SELECT prompt_id, sample, position FROM eval_answers WHERE evaluation_id = ?", (evaluation,)
    ):
        answered.setdefault((row["prompt_id"], row["sample"]), set()).add(row["position"])
    return [(p, n, a, b) for p, n in sorted(answered) for a, b in combinations(sorted(answered[p, n]), 2)]


def next_vote(store: Store, evaluation: int, annotator: str) -> VoteTask | None:
    """The annotator's next comparison, in an order of their own; left/right drawn per annotator and comparison."""
    eval_models(store, evaluation)
    todo = _comparisons(store, evaluation)
    voted = {
        (r["prompt_id"], r["sample"], r["first"], r["second"])
        for r in store.query(
            "SELECT v.prompt_id, v.sample, v.first, v.second FROM eval_votes v "
            "JOIN annotators a ON a.id = v.annotator_id WHERE v.evaluation_id = ? AND a.name = ?",
            (evaluation, annotator),
        )
    }
    left = [c for c in todo if c not in voted]
    if not left:
        return None
    rng = random.Random(f"{annotator}/{evaluation}")
    rng.shuffle(left)
    prompt_id, sample_, first, second = left[0]
    draw = random.Random(f"{annotator}/{evaluation}/{prompt_id}/{sample_}/{first}/{second}").random()
    shown_left = first if draw < 0.5 else second
    texts = {
        r["position"]: r["text"]
        for r in store.query(
            "SELECT position, text FROM eval_answers WHERE evaluation_id = ? AND prompt_id = ? AND sample = ?",
            (evaluation, prompt_id, sample_),
        )
    }
    prompt = dict(store.query("SELECT id, text, system, context FROM prompts WHERE id = ?", (prompt_id,))[0])
    return VoteTask(
        evaluation,
        prompt_id,
        sample_,
        prompt,
        first,
        second,
        shown_left,
        texts[shown_left],
        texts[second if shown_left == first else first],
        len(todo) - len(left),
        len(todo),
    )


VOTES = ("left", "right", "tie", "both_bad")
VOTE_KEYS = {"a": "left", "b": "right", "=": "tie", "x": "both_bad"}  # as typed in the vote box


def vote_for_key(typed: str) -> str:
    """The vote a key stands for: a (A better), b (B better), = (tie), x (both bad)."""
    choice = VOTE_KEYS.get((typed or "").strip().lower())
    if choice is None:
        raise EvaluationError(f"{(typed or '').strip()!r} is not a vote key: use a, b, = or x.")
    return choice


def vote(store: Store, task: VoteTask, annotator: str, choice: str, kind: str = "local") -> str:
    """Record a vote ('left', 'right', 'tie', 'both_bad') and return the reveal: which model was A and which B."""
    if choice not in VOTES:
        raise EvaluationError(f"A vote is one of {', '.join(VOTES)}.")
    right = task.second if task.left == task.first else task.first
    winner = {"left": task.left, "right": right}.get(choice)
    outcome = choice if winner is None else ("first" if winner == task.first else "second")
    labels = {m["position"]: m["label"] for m in eval_models(store, task.evaluation)}
    with store.tx() as db:
        exists = db.execute(
            "SELECT 1 FROM eval_votes v JOIN annotators a ON a.id = v.annotator_id WHERE "
            "v.evaluation_id = ? AND v.prompt_id = ? AND v.sample = ? AND a.name = ? AND v.first = ? "
            "AND v.second = ?",
            (task.evaluation, task.prompt_id, task.sample, annotator, task.first, task.second),
        ).fetchone()
        if exists:
            raise EvaluationError("You already voted on this comparison.")
        db.execute(
            "INSERT INTO eval_votes (evaluation_id, prompt_id, sample, annotator_id, first, second, "
            "left_position, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task.evaluation,
                task.prompt_id,
                task.sample,
                annotator_id(db, annotator, kind),
                task.first,
                task.second,
                task.left,
                outcome,
            ),
        )
    said = {"left": "A better", "right": "B better", "tie": "tie", "both_bad": "both bad"}[choice]
    return f"You voted {said}. A was {labels[task.left]}; B was {labels[right]}."


def results(store: Store, evaluation: int) -> dict:
    """Win rates of each later model against each earlier one (the baseline is position 0), overall and per
    annotator: {"pairs": [(label, baseline label, WinRate)], "annotators": [(annotator, label, baseline, WinRate)]}."""
    labels = {m["position"]: m["label"] for m in eval_models(store, evaluation)}
    rows = store.query(
        "SELECT v.first, v.second, v.outcome, a.name FROM eval_votes v "
        "JOIN annotators a ON a.id = v.annotator_id WHERE v.evaluation_id = ?",
        (evaluation,),
    )
    counts: dict = {}
    for row in rows:
        for key in ((row["first"], row["second"], None), (row["first"], row["second"], row["name"])):
            tally = counts.setdefault(key, {"second": 0, "tie": 0, "first": 0, "both_bad": 0})
            tally[row["outcome"]] += 1

    def win_rate(tally):  # from the later model's side: its wins are the votes for 'second'
        return WinRate(tally["second"], tally["tie"], tally["first"], tally["both_bad"])

    pairs = [(labels[b], labels[a], win_rate(t)) for (a, b, who), t in sorted(counts.items(), key=str) if who is None]
    per_annotator = [
        (who, labels[b], labels[a], win_rate(t))
        for (a, b, who), t in sorted(counts.items(), key=str)
        if who is not None
    ]
    return {"pairs": pairs, "annotators": per_annotator}


def length_controlled(games: list[tuple[float, float]]) -> tuple[float, float, float] | None:
    """The win rate at equal length, from (outcome for the model: 1 win, 0.5 tie or both bad, 0 loss; its length
    difference to the other answer, (words - other) / (words + other)). A logistic regression of the outcome on the
    length difference (in standard deviations), as arena leaderboards control for length: P(win) = sigmoid(theta +
    gamma * difference); the length-controlled win rate is sigmoid(theta), with a 95% Wald interval. None without
    votes."""
    from scipy.optimize import minimize

    if not games:
        return None
    y = np.array([g[0] for g in games], dtype=float)
    d = np.array([g[1] for g in games], dtype=float)
    d = d / (d.std() or 1.0)  # in standard deviations, so the slope's ridge means the same at any length scale

    def loss(params):
        z = params[0] + params[1] * d
        # Fractional outcomes: a tie is half a win. Weak priors, log-odds at equal length ~ N(0, 1) and slope
        # ~ N(0, 32^2): where the longer answer always wins (a perfect separation, where the likelihood alone cannot
        # say what happens at equal length), the estimate stays near 50% instead of wherever the optimiser stops.
        return (
            np.sum(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))
            + 0.5 * params[0] ** 2
            + 0.0005 * params[1] ** 2
        )

    fit = minimize(loss, np.zeros(2), method="BFGS")
    theta, se = fit.x[0], float(np.sqrt(max(fit.hess_inv[0, 0], 0.0)))
    sigmoid = lambda z: float(1 / (1 + np.exp(-z)))  # noqa: E731
    return sigmoid(theta), sigmoid(theta - 1.96 * se), sigmoid(theta + 1.96 * se)


def length_table(store: Store, evaluation: int) -> dict[tuple[str, str], dict]:
    """For each later model against each earlier one: the length-controlled win rate and each side's mean words
    over the voted comparisons. Keyed like results()' pairs: (model label, baseline label)."""
    labels = {m["position"]: m["label"] for m in eval_models(store, evaluation)}
    words = {
        (r["position"], r["prompt_id"], r["sample"]): word_count(r["text"])
        for r in store.query(
            "SELECT position, prompt_id, sample, text FROM eval_answers WHERE evaluation_id = ?", (evaluation,)
        )
    }
    games: dict[tuple[int, int], list] = {}
    for v in store.query(
        "SELECT first, second, outcome, prompt_id, sample FROM eval_votes WHERE evaluation_id = ?", (evaluation,)
    ):
        later, earlier = (
            words.get((v["second"], v["prompt_id"], v["sample"])),
            words.get((v["first"], v["prompt_id"], v["sample"])),
        )
        if later is None or earlier is None:
            continue
        outcome = {"second": 1.0, "first": 0.0}.get(v["outcome"], 0.5)
        games.setdefault((v["first"], v["second"]), []).append(
            (outcome, (later - earlier) / max(later + earlier, 1), later, earlier)
        )
    return {
        (labels[b], labels[a]): {
            "lc": length_controlled([(g[0], g[1]) for g in found]),
            "words": (float(np.mean([g[2] for g in found])), float(np.mean([g[3] for g in found]))),
        }
        for (a, b), found in games.items()
    }


def strengths(store: Store, weighted: bool = False) -> dict[str, float] | None:
    """Bradley-Terry points over every blind vote in every evaluation, when more than two models have been
    compared (with two, the win rate says it all); ties and both-bad count half a win each way. `weighted`: each vote
    counts by its voter's quality as a ranker of the evaluation's prompt set (team.quality; 1 where unknown)."""
    rows = store.query("""SELECT f.label AS first, s.label AS second, v.outcome, a.name AS voter, ps.name AS prompt_set
        FROM eval_votes v JOIN annotators a ON a.id = v.annotator_id
        JOIN evaluations e ON e.id = v.evaluation_id JOIN prompt_sets ps ON ps.id = e.prompt_set_id
        JOIN eval_models f ON f.evaluation_id = v.evaluation_id AND f.position = v.first
        JOIN eval_models s ON s.evaluation_id = v.evaluation_id AND s.position = v.second""")
    games = [(r["first"], r["second"], {"first": 1.0, "second": 0.0}.get(r["outcome"], 0.5)) for r in rows]
    if len({m for a, b, _ in games for m in (a, b)}) <= 2:
        return None
    if not weighted:
        return bradley_terry(games)
    quality = {name: team.quality(store, name) for name in {r["prompt_set"] for r in rows}}
    return bradley_terry(games, [quality[r["prompt_set"]].get(r["voter"], {}).get("weight", 1.0) for r in rows])


def score_evaluation(store: Store, evaluation: int, scorer: str, on_progress=None) -> int:
    """Score every answer of the evaluation not yet scored by `scorer` (a name from studio.data.scorers: toxicity,
    toxicity:<hub id>, reward:job <id>, rubric). Returns how many answers were scored."""
    eval_models(store, evaluation)
    scorer = (scorer or "").strip()
    set_name = store.query(
        "SELECT s.name FROM evaluations e JOIN prompt_sets s ON s.id = e.prompt_set_id WHERE e.id = ?", (evaluation,)
    )[0]["name"]
    answers = [
        dict(r)
        for r in store.query(
            """SELECT a.id, a.text, p.text AS prompt, p.system, p.context FROM eval_answers a
           JOIN prompts p ON p.id = a.prompt_id WHERE a.evaluation_id = ?
           AND a.id NOT IN (SELECT answer_id FROM eval_scores WHERE scorer = ?) ORDER BY a.prompt_id""",
            (evaluation, scorer),
        )
    ]
    try:
        score = scorers.get(store, scorer, set_name).score
    except scorers.ScorerError as error:
        raise EvaluationError(str(error)) from None
    values, chunk = [], 16
    for start in range(0, len(answers), chunk):
        part = answers[start : start + chunk]
        prompts = [
            {"text": a["prompt"], "system": a["system"], "context": json.loads(a["context"] or "[]")} for a in part
        ]
        values += score(prompts, [a["text"] for a in part])
        if on_progress:
            on_progress(len(values), len(answers))
    with store.tx() as db:
        db.executemany(
            "INSERT INTO eval_scores (answer_id, scorer, value) VALUES (?, ?, ?)",
            [(a["id"], scorer, float(v)) for a, v in zip(answers, values)],
        )
    return len(answers)


def _mean_ci(values):
    """Mean and its 95% t-interval (the mean itself for a single or constant sample)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or np.allclose(values, mean):
        return mean, mean, mean
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def _answers(store: Store, evaluation: int) -> dict:
    """(prompt, sample, position) -> {"text": answer, "words": word count, scorer: value, ...}."""
    answers = {}
    for row in store.query(
        "SELECT prompt_id, sample, position, text FROM eval_answers WHERE evaluation_id = ?", (evaluation,)
    ):
        answers[row["prompt_id"], row["sample"], row["position"]] = {
            "text": row["text"],
            "words": word_count(row["text"]),
        }
    for row in store.query(
        """SELECT a.prompt_id, a.sample, a.position, s.scorer, s.value FROM eval_scores s
                              JOIN eval_answers a ON a.id = s.answer_id WHERE a.evaluation_id = ?""",
        (evaluation,),
    ):
        answers[row["prompt_id"], row["sample"], row["position"]][row["scorer"]] = row["value"]
    return answers


def share_interval(per_prompt: list[list[float]]) -> dict | None:
    """The mean of 0/1 outcomes grouped by prompt, with a 95% percentile-bootstrap interval that resamples prompts
    (scipy.stats.bootstrap), so that several samples of one prompt do not count as independent evidence."""
    from scipy.stats import bootstrap

    groups = [g for g in per_prompt if g]
    if not groups:
        return None
    flat = [v for g in groups for v in g]
    value = float(np.mean(flat))
    if len(groups) < 2 or min(flat) == max(flat):
        return {"value": value, "low": value, "high": value, "n": len(flat), "prompts": len(groups)}
    sums = np.array([sum(g) for g in groups], dtype=float)
    counts = np.array([len(g) for g in groups], dtype=float)

    def ratio(index, axis=-1):  # the share over the resampled prompts' samples
        return np.take(sums, index, axis=0).sum(axis=axis) / np.take(counts, index, axis=0).sum(axis=axis)

    result = bootstrap(
        (np.arange(len(groups)),),
        ratio,
        confidence_level=0.95,
        n_resamples=2000,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(0),
    )
    low, high = result.confidence_interval
    return {"value": value, "low": float(low), "high": float(high), "n": len(flat), "prompts": len(groups)}


def _better(a: float, b: float, higher_is_better: bool) -> int:
    """1 if a scores better than b, 0 if equal, -1 if worse."""
    if abs(a - b) < 1e-9:
        return 0
    return 1 if (a > b) == higher_is_better else -1


def effect(answers: dict, scorer: str, position: int) -> dict:
    """Model `position` against the baseline (position 0) by `scorer`, pair by pair (same prompt, same sample):
    at_least_as_good (it scores no worse), win_rate (among pairs that differ), length_matched (at least as good
    among pairs whose word counts are within LENGTH_MATCH of each other), each a share_interval; and noise_floor:
    the baseline's next sample against this one (each pair of samples once, one way, so a tie counts once)."""
    higher = not scorer.startswith("toxicity")
    shares = {"at_least_as_good": {}, "win_rate": {}, "length_matched": {}, "noise_floor": {}}
    for (prompt, sample_, pos), mine in answers.items():
        base = answers.get((prompt, sample_, 0))
        if pos != position or base is None or scorer not in mine or scorer not in base:
            continue
        outcome = _better(mine[scorer], base[scorer], higher)
        shares["at_least_as_good"].setdefault(prompt, []).append(float(outcome >= 0))
        if outcome:
            shares["win_rate"].setdefault(prompt, []).append(float(outcome > 0))
        if abs(mine["words"] - base["words"]) <= LENGTH_MATCH * max(mine["words"], base["words"], 1):
            shares["length_matched"].setdefault(prompt, []).append(float(outcome >= 0))
        following = answers.get((prompt, sample_ + 1, 0))
        if following is not None and scorer in following:
            shares["noise_floor"].setdefault(prompt, []).append(
                float(_better(following[scorer], base[scorer], higher) >= 0)
            )
    return {name: share_interval(list(groups.values())) for name, groups in shares.items()}


def bounded(scorer: str) -> bool:
    """Whether the scorer's values lie in 0..1 (toxicity probabilities, rubric scores); a reward model's do not."""
    return scorer.startswith("toxicity") or scorer == "rubric"


def score_table(store: Store, evaluation: int) -> list[dict]:
    """Per scorer and model: n answers, the mean with a 95% interval, the paired difference from the baseline
    (position 0) with its interval and the paired t-test p-value (samples of a prompt averaged first, so that each
    prompt counts once), and effect() against the baseline."""
    from scipy import stats

    labels = {m["position"]: m["label"] for m in eval_models(store, evaluation)}
    answers = _answers(store, evaluation)
    scorer_names = sorted({k for a in answers.values() for k in a if k not in ("text", "words")})
    table = []
    for scorer in scorer_names:
        per_prompt: dict = {}  # position -> prompt -> [values]
        for (prompt, _, position), answer in answers.items():
            if scorer in answer:
                per_prompt.setdefault(position, {}).setdefault(prompt, []).append(answer[scorer])
        means = {pos: {p: float(np.mean(v)) for p, v in prompts.items()} for pos, prompts in per_prompt.items()}
        baseline = means.get(0, {})
        for position in sorted(means):
            scores = means[position]
            mean, low, high = _mean_ci(list(scores.values()))
            if bounded(scorer):  # a probability or a rubric's 0..1 score: the interval is cut to 0..1
                low, high = max(low, 0.0), min(high, 1.0)
            row = {
                "scorer": scorer,
                "model": labels[position],
                "position": position,
                "n": sum(len(v) for v in per_prompt[position].values()),
                "mean": mean,
                "low": low,
                "high": high,
                "diff": None,
                "diff_low": None,
                "diff_high": None,
                "p": None,
                "effect": None,
            }
            shared = sorted(set(scores) & set(baseline))
            if position != 0 and shared:
                diffs = [scores[p] - baseline[p] for p in shared]
                row["diff"], row["diff_low"], row["diff_high"] = _mean_ci(diffs)
                if len(shared) > 1 and not all(d == diffs[0] for d in diffs):
                    row["p"] = float(stats.ttest_1samp(diffs, 0.0).pvalue)
                row["effect"] = effect(answers, scorer, position)
            table.append(row)
    return table


def summary_lines(store: Store, job_id: int) -> list[str]:
    """Markdown lines on every evaluation a job's adapter took part in: blind win rates and automatic scores."""
    lines = []
    for entry in store.query("SELECT evaluation_id, label FROM eval_models WHERE job_id = ?", (job_id,)):
        evaluation, label = entry["evaluation_id"], entry["label"]
        set_name = store.query(
            "SELECT s.name FROM evaluations e JOIN prompt_sets s ON s.id = e.prompt_set_id WHERE e.id = ?",
            (evaluation,),
        )[0]["name"]
        for model, baseline, tally in results(store, evaluation)["pairs"]:
            if label not in (model, baseline):
                continue
            rate, share = tally.win_rate(), tally.at_least_as_good()
            text = (
                f"- Evaluation {evaluation} (prompt set `{set_name}`), blind A/B, {model} vs {baseline}: "
                f"{tally.votes} votes, {tally.wins} wins, {tally.ties} ties, {tally.losses} losses, "
                f"{tally.both_bad} both bad"
            )
            if rate:
                text += f"; win rate {rate[0]:.1%} (95% CI {rate[1]:.1%}-{rate[2]:.1%})"
            if share:
                text += f"; at least as good in {share[0]:.1%} (95% CI {share[1]:.1%}-{share[2]:.1%})"
            lines.append(text + ".")
        for row in score_table(store, evaluation):
            if row["model"] == label:
                text = (
                    f"- Evaluation {evaluation} (prompt set `{set_name}`), {row['scorer']}: mean {row['mean']:.3f} "
                    f"(95% CI {row['low']:.3f}-{row['high']:.3f}, n={row['n']})"
                )
                if row["diff"] is not None:
                    text += (
                        f", {row['diff']:+.3f} against the baseline (95% CI {row['diff_low']:+.3f} to "
                        f"{row['diff_high']:+.3f})"
                    )
                lines.append(text + ".")
    return lines
