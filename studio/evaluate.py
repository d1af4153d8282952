"""Evaluation: reward-model and toxicity scores, blind A/B win rates with intervals, Bradley-Terry strengths."""

import json
import random
from dataclasses import dataclass
from pathlib import Path

from studio.prompts import get_prompts, prompt_messages
from studio.store import Store


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

    def score_messages(self, conversations: list[list[dict]]) -> list[float]:
        """One score per conversation (ending in the answer to score), through the chat template."""
        import torch

        texts = [self.tokenizer.apply_chat_template(messages, tokenize=False) for messages in conversations]
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


# --- Evaluations: two or more models answer the same prompts; blind A/B votes and automatic scores ---------------

class EvaluationError(ValueError):
    """An evaluation action that cannot be done; the message says what to fix."""


def _training_sets(store: Store, job_id: int | None) -> set[str]:
    """Prompt sets whose rankings trained this job or any job it continued from."""
    used = set()
    while job_id is not None:
        row = store.query("SELECT data_info, parent_job_id FROM jobs WHERE id = ?", (job_id,))
        if not row:
            break
        name = json.loads(row[0]["data_info"] or "{}").get("prompt_set")
        if name:
            used.add(name)
        job_id = row[0]["parent_job_id"]
    return used


def held_out_set(store: Store, choices: list, set_names: list[str]) -> tuple[str | None, str]:
    """The first prompt set none of the chosen models was trained on, and a note when every set was."""
    used = set().union(*(_training_sets(store, c.job_id) for c in choices)) if choices else set()
    for name in set_names:
        if name not in used:
            return name, ""
    return (set_names[0] if set_names else None,
            f"Every prompt set was used in training ({', '.join(sorted(used))}); scores on it flatter the model.")


def create_evaluation(store: Store, set_name: str, choices: list, params, limit: int = 0, cancel=None,
                      on_progress=None) -> int:
    """Every chosen model (chat.Choice; the first is the baseline) answers every prompt of the set, batch by batch;
    each finished batch is saved, so a cancel keeps what was done. Returns the evaluation id."""
    from dataclasses import replace

    from studio.chat import load_together
    from studio.generate import sample

    if len(choices) < 2:
        raise EvaluationError("Choose at least two models to compare (the first one is the baseline).")
    if len({(c.model, c.adapter) for c in choices}) < len(choices):
        raise EvaluationError("The same model is chosen twice; choose different models.")
    prompts = get_prompts(store, set_name, limit)
    if not prompts:
        raise EvaluationError(f"The prompt set {set_name!r} has no prompts.")
    loaded, names = load_together(choices)  # before anything is saved: a model that cannot load leaves no rows
    params = replace(params, k=1).seeded()
    set_id = store.query("SELECT id FROM prompt_sets WHERE name = ?", (set_name,))[0]["id"]
    with store.tx() as db:
        evaluation = db.execute("INSERT INTO evaluations (prompt_set_id, params) VALUES (?, ?)",
                                (set_id, json.dumps(params.stored()))).lastrowid
        db.executemany(
            "INSERT INTO eval_models (evaluation_id, position, label, model, adapter, job_id) VALUES (?, ?, ?, ?, ?, ?)",
            [(evaluation, i, c.label, c.model, c.adapter, c.job_id) for i, c in enumerate(choices)])
    status, per_batch = "ready", max(1, params.batch_size // len(choices))
    if on_progress:
        on_progress(0, len(prompts))
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start:start + per_batch]
        rows = [p for p in chunk for _ in choices]
        answers = None if cancel is not None and cancel.is_set() else sample(loaded, rows, params, cancel,
                                                                             names * len(chunk))
        if answers is None:
            status = "cancelled"
            break
        with store.tx() as db:
            db.executemany(
                "INSERT INTO eval_answers (evaluation_id, position, prompt_id, text) VALUES (?, ?, ?, ?)",
                [(evaluation, i % len(choices), row["id"], texts[0]) for i, (row, texts) in enumerate(zip(rows, answers))])
        if on_progress:
            on_progress(start + len(chunk), len(prompts))
    with store.tx() as db:
        db.execute("UPDATE evaluations SET status = ? WHERE id = ?", (status, evaluation))
    return evaluation


def list_evaluations(store: Store) -> list[dict]:
    rows = store.query(
        """SELECT e.id, e.status, s.name AS prompt_set, e.created_at,
                  (SELECT group_concat(label, ' | ') FROM (SELECT label FROM eval_models m WHERE m.evaluation_id = e.id
                   ORDER BY position)) AS models,
                  (SELECT COUNT(DISTINCT prompt_id) FROM eval_answers a WHERE a.evaluation_id = e.id) AS prompts,
                  (SELECT COUNT(*) FROM eval_votes v WHERE v.evaluation_id = e.id) AS votes
           FROM evaluations e JOIN prompt_sets s ON s.id = e.prompt_set_id ORDER BY e.id DESC""")
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
    prompt: dict
    first: int
    second: int
    left: int
    left_text: str
    right_text: str
    done: int
    total: int


def _comparisons(store: Store, evaluation: int) -> list[tuple[int, int, int]]:
    """(prompt, first, second) for every pair of models that both answered the prompt."""
    from itertools import combinations

    answered = {}
    for row in store.query("SELECT prompt_id, position FROM eval_answers WHERE evaluation_id = ?", (evaluation,)):
        answered.setdefault(row["prompt_id"], set()).add(row["position"])
    return [(p, a, b) for p in sorted(answered) for a, b in combinations(sorted(answered[p]), 2)]


def next_vote(store: Store, evaluation: int, annotator: str) -> VoteTask | None:
    """The annotator's next comparison, in an order of their own; left/right drawn per annotator and comparison."""
    eval_models(store, evaluation)
    todo = _comparisons(store, evaluation)
    voted = {(r["prompt_id"], r["first"], r["second"]) for r in store.query(
        "SELECT v.prompt_id, v.first, v.second FROM eval_votes v JOIN annotators a ON a.id = v.annotator_id "
        "WHERE v.evaluation_id = ? AND a.name = ?", (evaluation, annotator))}
    left = [c for c in todo if c not in voted]
    if not left:
        return None
    rng = random.Random(f"{annotator}/{evaluation}")
    rng.shuffle(left)
    prompt_id, first, second = left[0]
    shown_left = first if random.Random(f"{annotator}/{evaluation}/{prompt_id}/{first}/{second}").random() < 0.5 \
        else second
    texts = {r["position"]: r["text"] for r in store.query(
        "SELECT position, text FROM eval_answers WHERE evaluation_id = ? AND prompt_id = ?", (evaluation, prompt_id))}
    prompt = dict(store.query("SELECT id, text, system, context FROM prompts WHERE id = ?", (prompt_id,))[0])
    return VoteTask(evaluation, prompt_id, prompt, first, second, shown_left, texts[shown_left],
                    texts[second if shown_left == first else first], len(todo) - len(left), len(todo))


VOTES = ("left", "right", "tie", "both_bad")


def vote(store: Store, task: VoteTask, annotator: str, choice: str, kind: str = "local") -> str:
    """Record a vote ('left', 'right', 'tie', 'both_bad') and return the reveal: which model was A and which B."""
    from studio.ranking import annotator_id

    if choice not in VOTES:
        raise EvaluationError(f"A vote is one of {', '.join(VOTES)}.")
    right = task.second if task.left == task.first else task.first
    winner = {"left": task.left, "right": right}.get(choice)
    outcome = choice if winner is None else ("first" if winner == task.first else "second")
    labels = {m["position"]: m["label"] for m in eval_models(store, task.evaluation)}
    with store.tx() as db:
        exists = db.execute("SELECT 1 FROM eval_votes v JOIN annotators a ON a.id = v.annotator_id WHERE "
                            "v.evaluation_id = ? AND v.prompt_id = ? AND a.name = ? AND v.first = ? AND v.second = ?",
                            (task.evaluation, task.prompt_id, annotator, task.first, task.second)).fetchone()
        if exists:
            raise EvaluationError("You already voted on this comparison.")
        db.execute("INSERT INTO eval_votes (evaluation_id, prompt_id, annotator_id, first, second, left_position, "
                   "outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (task.evaluation, task.prompt_id, annotator_id(db, annotator, kind), task.first, task.second,
                    task.left, outcome))
    said = {"left": "A better", "right": "B better", "tie": "tie", "both_bad": "both bad"}[choice]
    return f"You voted {said}. A was {labels[task.left]}; B was {labels[right]}."


def results(store: Store, evaluation: int) -> dict:
    """Win rates of each later model against each earlier one (the baseline is position 0), overall and per
    annotator: {"pairs": [(label, baseline label, WinRate)], "annotators": [(annotator, label, baseline, WinRate)]}."""
    labels = {m["position"]: m["label"] for m in eval_models(store, evaluation)}
    rows = store.query("SELECT v.first, v.second, v.outcome, a.name FROM eval_votes v "
                       "JOIN annotators a ON a.id = v.annotator_id WHERE v.evaluation_id = ?", (evaluation,))
    counts: dict = {}
    for row in rows:
        for key in ((row["first"], row["second"], None), (row["first"], row["second"], row["name"])):
            tally = counts.setdefault(key, {"second": 0, "tie": 0, "first": 0, "both_bad": 0})
            tally[row["outcome"]] += 1

    def win_rate(tally):  # from the later model's side: its wins are the votes for 'second'
        return WinRate(tally["second"], tally["tie"], tally["first"], tally["both_bad"])

    pairs = [(labels[b], labels[a], win_rate(t)) for (a, b, who), t in sorted(counts.items(), key=str) if who is None]
    per_annotator = [(who, labels[b], labels[a], win_rate(t))
                     for (a, b, who), t in sorted(counts.items(), key=str) if who is not None]
    return {"pairs": pairs, "annotators": per_annotator}


def strengths(store: Store) -> dict[str, float] | None:
    """Bradley-Terry points over every blind vote in every evaluation, when more than two models have been
    compared (with two, the win rate says it all); ties and both-bad count half a win each way."""
    rows = store.query("""SELECT f.label AS first, s.label AS second, v.outcome FROM eval_votes v
        JOIN eval_models f ON f.evaluation_id = v.evaluation_id AND f.position = v.first
        JOIN eval_models s ON s.evaluation_id = v.evaluation_id AND s.position = v.second""")
    games = [(r["first"], r["second"], {"first": 1.0, "second": 0.0}.get(r["outcome"], 0.5)) for r in rows]
    if len({m for a, b, _ in games for m in (a, b)}) <= 2:
        return None
    return bradley_terry(games)


OFFLINE_TOXICITY = "toxicity"  # alt-profanity-check; "toxicity:<hub id>" for a Hugging Face classifier
TOXIC_LABELS = ("toxic", "offensive", "hate", "abusive", "insult", "obscene")


def hub_toxicity(model_id: str):
    """A Hugging Face text classifier as a toxicity scorer: the highest probability among its toxic-sounding labels
    (toxic, offensive, hate, ...). Needs the Hub, or the model in the local cache."""
    from transformers import pipeline

    from studio import hub

    try:
        classify = pipeline("text-classification", model=model_id, top_k=None, truncation=True,
                            model_kwargs={"local_files_only": not hub.reachable()})
    except Exception as error:
        raise EvaluationError(f"Could not load the classifier {model_id!r} ({type(error).__name__}): check the id "
                              "and the network, or use the offline scorer 'toxicity'.") from None
    labels = [str(label) for label in classify.model.config.id2label.values()]
    toxic = [label for label in labels if any(word in label.lower() for word in TOXIC_LABELS)]
    if not toxic:
        raise EvaluationError(f"{model_id} has no toxicity label among {', '.join(labels)}; choose a toxicity "
                              "classifier such as unitary/toxic-bert.")

    def score(texts):
        return [max(s["score"] for s in result if s["label"] in toxic) for result in classify(list(texts))]
    return score


def score_evaluation(store: Store, evaluation: int, scorer: str, on_progress=None) -> int:
    """Score every answer of the evaluation not yet scored by `scorer`: 'toxicity' (offline), 'toxicity:<hub id>',
    or 'reward:<job id>' (a finished reward-model job). Returns how many answers were scored."""
    from studio import jobs

    eval_models(store, evaluation)
    answers = [dict(r) for r in store.query(
        """SELECT a.id, a.text, p.text AS prompt, p.system, p.context FROM eval_answers a
           JOIN prompts p ON p.id = a.prompt_id WHERE a.evaluation_id = ?
           AND a.id NOT IN (SELECT answer_id FROM eval_scores WHERE scorer = ?) ORDER BY a.prompt_id""",
        (evaluation, scorer))]
    if scorer == OFFLINE_TOXICITY:
        values = toxicity([a["text"] for a in answers])
    elif scorer.startswith("toxicity:"):
        values = hub_toxicity(scorer.removeprefix("toxicity:"))([a["text"] for a in answers]) if answers else []
    elif scorer.startswith("reward:job "):
        try:
            job = jobs.get(store, int(scorer.removeprefix("reward:job ")))
        except (ValueError, jobs.JobError):
            raise EvaluationError(f"No reward-model job {scorer.removeprefix('reward:job ')!r}.") from None
        folder = jobs.adapter_folder(job)
        if job["method"] != "reward" or folder is None:
            raise EvaluationError(f"Job {job['id']} is not a finished reward-model job.")
        model = RewardScorer(folder)
        values = []
        for i, answer in enumerate(answers):
            prompt = {"text": answer["prompt"], "system": answer["system"],
                      "context": json.loads(answer["context"]) if answer["context"] else []}
            values += model.score(prompt, [answer["text"]])
            if on_progress:
                on_progress(i + 1, len(answers))
    else:
        raise EvaluationError(f"Unknown scorer {scorer!r}: use toxicity, toxicity:<hub id> or reward:job <id>.")
    with store.tx() as db:
        db.executemany("INSERT INTO eval_scores (answer_id, scorer, value) VALUES (?, ?, ?)",
                       [(a["id"], scorer, float(v)) for a, v in zip(answers, values)])
    return len(answers)


def _mean_ci(values):
    """Mean and its 95% t-interval (the mean itself for a single or constant sample)."""
    import numpy as np
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or np.allclose(values, mean):
        return mean, mean, mean
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def score_table(store: Store, evaluation: int) -> list[dict]:
    """Per scorer and model: n, mean with a 95% interval, and the paired per-prompt difference from the baseline
    (position 0) with its interval and the paired t-test p-value."""
    from scipy import stats

    labels = {m["position"]: m["label"] for m in eval_models(store, evaluation)}
    values: dict = {}
    for row in store.query("""SELECT s.scorer, a.position, a.prompt_id, s.value FROM eval_scores s
                              JOIN eval_answers a ON a.id = s.answer_id WHERE a.evaluation_id = ?""", (evaluation,)):
        values.setdefault(row["scorer"], {}).setdefault(row["position"], {})[row["prompt_id"]] = row["value"]
    table = []
    for scorer in sorted(values):
        baseline = values[scorer].get(0, {})
        for position in sorted(values[scorer]):
            scores = values[scorer][position]
            mean, low, high = _mean_ci(list(scores.values()))
            if scorer.startswith("toxicity"):  # a probability: the interval is cut to 0..1
                low, high = max(low, 0.0), min(high, 1.0)
            row = {"scorer": scorer, "model": labels[position], "n": len(scores), "mean": mean, "low": low,
                   "high": high, "diff": None, "diff_low": None, "diff_high": None, "p": None}
            shared = sorted(set(scores) & set(baseline))
            if position != 0 and shared:
                diffs = [scores[p] - baseline[p] for p in shared]
                row["diff"], row["diff_low"], row["diff_high"] = _mean_ci(diffs)
                if len(shared) > 1 and not all(d == diffs[0] for d in diffs):
                    row["p"] = float(stats.ttest_1samp(diffs, 0.0).pvalue)
            table.append(row)
    return table


def summary_lines(store: Store, job_id: int) -> list[str]:
    """Markdown lines on every evaluation a job's adapter took part in: blind win rates and automatic scores."""
    lines = []
    for entry in store.query("SELECT evaluation_id, label FROM eval_models WHERE job_id = ?", (job_id,)):
        evaluation, label = entry["evaluation_id"], entry["label"]
        set_name = store.query("SELECT s.name FROM evaluations e JOIN prompt_sets s ON s.id = e.prompt_set_id "
                               "WHERE e.id = ?", (evaluation,))[0]["name"]
        for model, baseline, tally in results(store, evaluation)["pairs"]:
            if label not in (model, baseline):
                continue
            rate, share = tally.win_rate(), tally.at_least_as_good()
            text = (f"- Evaluation {evaluation} (prompt set `{set_name}`), blind A/B, {model} vs {baseline}: "
                    f"{tally.votes} votes, {tally.wins} wins, {tally.ties} ties, {tally.losses} losses, "
                    f"{tally.both_bad} both bad")
            if rate:
                text += f"; win rate {rate[0]:.1%} (95% CI {rate[1]:.1%}-{rate[2]:.1%})"
            if share:
                text += f"; at least as good in {share[0]:.1%} (95% CI {share[1]:.1%}-{share[2]:.1%})"
            lines.append(text + ".")
        for row in score_table(store, evaluation):
            if row["model"] == label:
                text = (f"- Evaluation {evaluation} (prompt set `{set_name}`), {row['scorer']}: mean {row['mean']:.3f} "
                        f"(95% CI {row['low']:.3f}-{row['high']:.3f}, n={row['n']})")
                if row["diff"] is not None:
                    text += f", {row['diff']:+.3f} against the baseline (95% CI {row['diff_low']:+.3f} to " \
                            f"{row['diff_high']:+.3f})"
                lines.append(text + ".")
    return lines
