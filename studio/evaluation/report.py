"""Alignment reports: did a finished job's adapter really get better, or only shorter?

The base model and the adapter answer held-out prompts several times each (seeds); every answer is scored by the
automatic scorers (the prompt set's rubric, offline toxicity, a reward model if one was trained on the same base).
For each scorer the report gives, against the base:
- at least as good: the share of (prompt, sample) pairs where the adapter's answer scores no worse than the base's,
  and the win rate among the pairs that differ, each with a 95% interval (bootstrap over prompts, since the samples
  of one prompt are not independent);
- the noise floor: the same share for the base against itself (its next sample), about 60% rather than 50% because
  equal scores count as "at least as good";
- the share among length-matched pairs (word counts within 20%), so "it only got shorter" shows;
plus the mean answer length before and after, toxicity, repetition, a few examples, and plain-word warnings. With a
rubric, it also says what happened to each rule: for every check, the share of answers that pass it before and after
(on the prompts it applies to), the rubric's score per prompt category, and how often the answers decline to help on
prompts the guidelines say to answer (over-refusal: a polite "I'm unable to assist" is a loss, not a win).
Reports are evaluations (one per prompt set) tied to a `reports` row; people can also vote on their answers blind.
"""

import json
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from studio.core import jobs, methods
from studio.core.store import Store
from studio.data import rubric, scorers
from studio.evaluation import evaluate
from studio.inference import chat, models
from studio.inference.decode import GenerationParams
from studio.inference.toxicity import toxicity as offline_toxicity

MIN_HELD_OUT = 5  # prompts of the training set left out of training that make a held-out set of their own
EXAMPLES = 4


class ReportError(ValueError):
    """A report that cannot be made; the message says what to fix."""


@dataclass
class ReportSettings:
    prompt_sets: list[str] = field(default_factory=list)  # empty: chosen by default_sets()
    samples: int = 3  # answers per prompt and model (seeds)
    limit: int = 0  # the first N held-out prompts of each set (0: all)
    max_new_tokens: int = GenerationParams.max_new_tokens
    temperature: float = GenerationParams.temperature
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.samples <= 8:
            raise ReportError("Samples per prompt must be from 1 to 8 (2 or more give the noise floor).")
        if self.limit < 0:
            raise ReportError("The number of prompts must be 0 (all) or more.")
        GenerationParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=self.seed)


AUTO_LIMIT = 20  # held-out prompts per set in the report made when a job finishes: minutes on a CPU
AUTO = {"samples": 3, "limit": AUTO_LIMIT}  # jobs.report_settings of a job launched with "report when finished"


def _chat_job(store: Store, job_id: int) -> dict:
    job = jobs.get(store, job_id)
    if not methods.get(job["method"]).chats or jobs.adapter_folder(job) is None:
        raise ReportError(
            f"Job {job_id} ({job['method']}, {job['status']}) has no chat adapter to report on; "
            "choose a finished DPO, SFT or RL job."
        )
    return job


def default_sets(store: Store, job_id: int) -> list[str]:
    """Held-out prompt sets for a job: `<set>-heldout` when it trained on `<set>-train`; else the prompts of the set
    it trained on that it did not train on (when there are enough); else every other set that shares no prompt with
    its training data."""
    job = _chat_job(store, job_id)
    trained_on = json.loads(job["data_info"] or "{}").get("prompt_set")
    names = [r["name"] for r in store.query("SELECT name FROM prompt_sets ORDER BY id")]
    if trained_on and trained_on.endswith("-train") and trained_on.removesuffix("-train") + "-heldout" in names:
        return [trained_on.removesuffix("-train") + "-heldout"]
    if trained_on in names:
        shared, total = evaluate.overlap(store, [job_id], trained_on)
        if total - shared >= MIN_HELD_OUT:
            return [trained_on]
    return [n for n in names if n != trained_on and evaluate.overlap(store, [job_id], n)[0] == 0]


def reward_scorer_for(store: Store, base_model: str) -> str | None:
    """`reward:job N` for the newest finished reward model on the same base, if any."""
    for job in jobs.finished(store, "reward"):
        if models.same_model(job["base_model"], base_model):
            return scorers.reward_key(job["id"])
    return None


def create(
    store: Store,
    job_id: int,
    settings: ReportSettings | None = None,
    cancel: threading.Event | None = None,
    on_progress=None,
) -> int:
    """Make the report: answers from the base and the adapter on each held-out set, scored; returns its id.
    `on_progress(done, total, what)` counts prompts across the sets, then scoring."""
    settings = settings or ReportSettings()
    job = _chat_job(store, job_id)
    sets = settings.prompt_sets or default_sets(store, job_id)
    if not sets:
        raise ReportError(
            "No prompt set is held out from this job's training data: split a set into train and "
            "held-out parts on the Generate tab, or choose a set."
        )
    sizes = {}
    for name in sets:
        shared, total = evaluate.overlap(store, [job_id], name)
        if total == 0:
            raise ReportError(f"No prompt set named {name!r} (or it is empty).")
        if shared == total:
            raise ReportError(f"Every prompt of {name!r} was used to train job {job_id}; choose a held-out set.")
        count = total - shared
        sizes[name] = min(count, settings.limit) if settings.limit else count
    base = chat.Choice(f"base ({job['base_model']})", job["base_model"])
    aligned = chat.Choice(f"job {job_id} ({job['method']})", job["base_model"], str(jobs.adapter_folder(job)), job_id)
    params = GenerationParams(
        k=1, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, seed=settings.seed
    )
    names = [scorers.RUBRIC, scorers.OFFLINE_TOXICITY]
    reward = reward_scorer_for(store, job["base_model"])
    if reward:
        names.append(reward)
    with store.tx() as db:
        report = db.execute(
            "INSERT INTO reports (job_id, settings) VALUES (?, ?)",
            (job_id, json.dumps({**asdict(settings), "prompt_sets": sets, "scorers": names})),
        ).lastrowid
    total, done = sum(sizes.values()), 0
    try:
        for name in sets:
            before = done
            evaluation = evaluate.create_evaluation(
                store,
                name,
                [base, aligned],
                params,
                settings.limit,
                cancel,
                lambda d, t: on_progress and on_progress(before + d, total, "prompts answered"),
                samples=settings.samples,
                exclude_jobs=[job_id],
                report_id=report,
            )
            done += sizes[name]
            if cancel is not None and cancel.is_set():
                raise ReportError("Cancelled: the answers so far are kept, the report was not computed.")
            for scorer in names:
                if scorer == scorers.RUBRIC and not rubric.get_text(store, name).strip():
                    continue
                evaluate.score_evaluation(
                    store,
                    evaluation,
                    scorer,
                    lambda d, t: on_progress and on_progress(d, t, f"answers scored ({scorer})"),
                )
        summary = summarize(store, report)
    except BaseException as error:
        status = "cancelled" if cancel is not None and cancel.is_set() else "failed"
        with store.tx() as db:
            db.execute("UPDATE reports SET status = ?, error = ? WHERE id = ?", (status, str(error), report))
        raise
    with store.tx() as db:
        db.execute("UPDATE reports SET status = 'ready', summary = ? WHERE id = ?", (json.dumps(summary), report))
    return report


# --- Figures -----------------------------------------------------------------------------------------------------


def repetitive(text: str) -> bool:
    """An answer that loops: under half of its word 3-grams are distinct (answers of 20 words or more)."""
    words = re.findall(r"\w+", text.lower())
    grams = list(zip(words, words[1:], words[2:]))
    return len(words) >= 20 and len(set(grams)) < 0.5 * len(grams)


def summarize(store: Store, report: int) -> dict:
    """The report's figures per prompt set, from the stored answers and scores."""
    sets = []
    for row in store.query(
        "SELECT e.id, s.name FROM evaluations e JOIN prompt_sets s ON s.id = e.prompt_set_id "
        "WHERE e.report_id = ? ORDER BY e.id",
        (report,),
    ):
        sets.append(_summarize_set(store, row["id"], row["name"]))
    (found,) = store.query("SELECT job_id FROM reports WHERE id = ?", (report,))
    optimised = _optimised(store, found["job_id"])
    for entry in sets:
        for scorer in [s for s in entry["scorers"] if s in optimised]:
            entry["warnings"].append(
                f"{entry['prompt_set']}: {scorer}: {optimised[scorer]}, so a gain by it is what the job was trained "
                "to raise, not independent evidence (a model can learn to please its scorer): read the answers, and "
                "ask people (blind votes on the Evaluate tab)."
            )
    return {"sets": sets, "warnings": [w for s in sets for w in s["warnings"]]}


def _optimised(store: Store, job_id: int) -> dict[str, str]:
    """The report's scorers that the job (online RL) was rewarded by: scorer -> how."""
    recipe = jobs.recipe_of(jobs.get(store, job_id))
    found = {scorers.RUBRIC: "the rubric was the job's reward"} if recipe.get("rubric") else {}
    if recipe.get("reward_model"):
        for reward in jobs.list_jobs(store):
            if reward["method"] == "reward" and Path(recipe["reward_model"]).is_relative_to(reward["folder"]):
                found[scorers.reward_key(reward["id"])] = f"reward model job {reward['id']} was the job's reward"
    return found


def _summarize_set(store: Store, evaluation: int, set_name: str) -> dict:
    answers = evaluate._answers(store, evaluation)
    keys = sorted({(p, n) for p, n, _ in answers if (p, n, 0) in answers and (p, n, 1) in answers})
    summary = {
        "prompt_set": set_name,
        "evaluation": evaluation,
        "prompts": len({p for p, _ in keys}),
        "samples": len({n for _, n in keys}),
        "scorers": {},
    }
    table = evaluate.score_table(store, evaluation)
    base_means = {r["scorer"]: r["mean"] for r in table if r["position"] == 0}
    for row in table:
        if row["position"] == 1:
            summary["scorers"][row["scorer"]] = {
                **row["effect"],
                "base_mean": base_means[row["scorer"]],
                "aligned_mean": row["mean"],
            }

    def mean(values):
        return float(np.mean(values)) if values else None

    summary["words"] = {
        "base": mean([answers[k + (0,)]["words"] for k in keys]),
        "aligned": mean([answers[k + (1,)]["words"] for k in keys]),
    }
    summary["repetitive"] = {
        "base": mean([repetitive(answers[k + (0,)]["text"]) for k in keys]),
        "aligned": mean([repetitive(answers[k + (1,)]["text"]) for k in keys]),
    }
    prompts = {
        r["id"]: r["text"]
        for r in store.query(
            "SELECT p.id, p.text FROM prompts p JOIN eval_answers a ON a.prompt_id = p.id WHERE a.evaluation_id = ?",
            (evaluation,),
        )
    }
    summary["examples"] = _examples(answers, prompts, keys)
    checks = rubric.for_set(store, set_name)
    summary["rules"] = _rules(checks, answers, prompts, keys) if checks else []
    tested = {row["rule"] for row in summary["rules"]}
    summary["untested"] = [c.name for c in checks.checks if c.name not in tested] if checks else []
    summary["categories"] = _categories(checks, answers, prompts, keys) if checks else []
    summary["declines"] = _declines(checks, answers, prompts, keys)
    summary["warnings"] = _warnings(summary)
    return summary


UNSURE = " (too few prompts to be sure)"
VERDICTS = ("learned", "kept", "fell", "not learned", "no clear change", "learned" + UNSURE, "fell" + UNSURE)
PASSED = 1 - 1e-9  # a check passes when it scores 1 (graded checks, such as a length, pass only in full)


def _paired(per: dict, keys: list, prompts: dict, include, outcome) -> dict | None:
    """Before, after and the change (after minus before, paired by prompt and sample), each with its interval, of a
    0/1 outcome(prompt, answer dict) over the (prompt, sample) pairs whose prompt `include`s."""
    groups = {0: {}, 1: {}, "change": {}}
    for p, n in keys:
        if not include(prompts[p]):
            continue
        before, after = outcome(prompts[p], per[p, n, 0]), outcome(prompts[p], per[p, n, 1])
        groups[0].setdefault(p, []).append(before)
        groups[1].setdefault(p, []).append(after)
        groups["change"].setdefault(p, []).append(after - before)
    if not groups[0]:
        return None
    moved = [float(np.mean(v)) for v in groups["change"].values()]
    return {
        "prompts": len(groups[0]),
        "up": sum(m > 0 for m in moved),  # prompts whose answers passed more often after than before
        "down": sum(m < 0 for m in moved),
        "answers": sum(len(v) for v in groups[0].values()),
        "base": evaluate.share_interval(list(groups[0].values())),
        "aligned": evaluate.share_interval(list(groups[1].values())),
        "change": evaluate.share_interval(list(groups["change"].values())),
    }


def _rules(checks, answers: dict, prompts: dict, keys: list) -> list[dict]:
    """Per check of the rubric: the share of answers passing it before and after, on the prompts it applies to."""
    if any(c.max_toxicity is not None for c in checks.checks):
        missing = [a for a in answers.values() if a.get(scorers.OFFLINE_TOXICITY) is None]
        for answer, value in zip(missing, offline_toxicity([a["text"] for a in missing])):
            answer[scorers.OFFLINE_TOXICITY] = value
    rows = []
    for check in checks.checks:
        found = _paired(
            answers,
            keys,
            prompts,
            lambda prompt, check=check: checks.applies(check, prompt),
            lambda prompt, answer, check=check: float(
                check.score(prompt, answer["text"], answer.get(scorers.OFFLINE_TOXICITY)) >= PASSED
            ),
        )
        if found:
            rows.append({"rule": check.name, "when": check.when, **found, "verdict": _verdict(found)})
    return rows


def sure(found: dict, up: bool) -> bool:
    """Whether the prompts that moved moved this way (`up`: passed more often after) more often than chance would (an
    exact two-sided sign test over prompts, p < 0.05: at least 6 prompts, all this way). A bootstrap over two or
    three prompts gives an interval as narrow as the data, so a change needs this as well."""
    from scipy.stats import binomtest

    ours, theirs = (found["up"], found["down"]) if up else (found["down"], found["up"])
    return ours > theirs and binomtest(ours, ours + theirs).pvalue < 0.05


def _verdict(found: dict) -> str:
    """learned | kept | fell | not learned | no clear change (UNSURE after learned or fell where too few prompts
    moved to tell them from chance), from the shares and the paired change's interval."""
    base, aligned, change = found["base"], found["aligned"], found["change"]
    if change["low"] > 0:
        return "learned" + ("" if sure(found, up=True) else UNSURE)
    if change["high"] < 0:
        return "fell" + ("" if sure(found, up=False) else UNSURE)
    if aligned["value"] == 0:
        return "not learned"
    return "kept" if base["value"] >= 0.9 and aligned["value"] >= 0.9 else "no clear change"


def _categories(checks, answers: dict, prompts: dict, keys: list) -> list[dict]:
    """The rubric's mean score per prompt category (and for prompts of none), before and after."""
    if scorers.RUBRIC not in next(iter(answers.values()), {}):
        return []
    rows = []
    for name in [*checks.categories, None]:
        include = (
            (lambda prompt, name=name: name in checks.in_categories(prompt))
            if name
            else (lambda prompt: not checks.in_categories(prompt))
        )
        chosen = [(p, n) for p, n in keys if include(prompts[p])]
        if chosen:
            rows.append(
                {
                    "category": name or "(no category)",
                    "prompts": len({p for p, _ in chosen}),
                    "base": float(np.mean([answers[p, n, 0][scorers.RUBRIC] for p, n in chosen])),
                    "aligned": float(np.mean([answers[p, n, 1][scorers.RUBRIC] for p, n in chosen])),
                }
            )
    return rows


def _declines(checks, answers: dict, prompts: dict, keys: list) -> dict | None:
    """How often answers decline to help (rubric.declines) on prompts the guidelines say to answer: every prompt,
    or with a rubric that has a `helps` check, the prompts it applies to."""
    return _paired(
        answers,
        keys,
        prompts,
        checks.should_answer if checks else (lambda prompt: True),
        lambda prompt, answer: float(rubric.declines(answer["text"])),
    )


def _counted(share: dict) -> str:
    return f"{round(share['value'] * share['n'])} of {share['n']}"


def rule_lines(summary: dict) -> list[str]:
    """One plain line per rule that was not learned or fell, for the page and the card."""
    out = []
    for entry in summary["sets"]:
        for row in entry.get("rules", []):
            before, after = _counted(row["base"]), _counted(row["aligned"])
            where = f" ({', '.join(row['when'])} prompts)" if row["when"] else ""
            if row["verdict"] == "not learned":
                why = (
                    "no answer showed it before either, so ranking the model's own answers cannot teach it: write "
                    "demonstrations (the Rank tab's Demonstrations panel)"
                    if row["base"]["value"] == 0
                    else "the adapter lost what the base sometimes did"
                )
                out.append(f"{row['rule']}{where}: {before} answers before, {after} after: not learned; {why}.")
            elif row["verdict"].startswith("fell"):
                unsure = (
                    f", on {row['down']} of {row['prompts']} prompts: too few to be sure"
                    if row["verdict"].endswith(UNSURE)
                    else ""
                )
                out.append(f"{row['rule']}{where}: {before} answers passed before, {after} after: it fell{unsure}.")
    return out


def _examples(answers: dict, prompts: dict, keys: list) -> list[dict]:
    """The pairs where the rubric (or else the first scorer) moved most, gains first, then the worst loss."""
    if not keys:
        return []
    scorer = (
        scorers.RUBRIC
        if scorers.RUBRIC in answers[keys[0] + (0,)]
        else next((k for k in answers[keys[0] + (0,)] if k != "text"), None)
    )

    def gain(key):
        if scorer is None:
            return 0.0
        a, b = answers[key + (1,)].get(scorer), answers[key + (0,)].get(scorer)
        return 0.0 if a is None or b is None else (a - b) * (-1 if scorer.startswith("toxicity") else 1)

    first = {}
    for key in sorted(keys, key=gain, reverse=True):
        first.setdefault(key[0], key)  # one sample per prompt
    ranked = sorted(first.values(), key=gain, reverse=True)
    chosen = ranked[: EXAMPLES - 1] + ([ranked[-1]] if len(ranked) >= EXAMPLES and gain(ranked[-1]) < 0 else [])
    return [
        {
            "prompt": prompts[p],
            "base": answers[p, n, 0]["text"],
            "aligned": answers[p, n, 1]["text"],
            "scorer": scorer,
            "base_score": answers[p, n, 0].get(scorer),
            "aligned_score": answers[p, n, 1].get(scorer),
        }
        for p, n in chosen
    ]


def _warnings(summary: dict) -> list[str]:
    """Plain words for what a user should not miss."""
    name, found = summary["prompt_set"], []
    before, after = summary["words"]["base"], summary["words"]["aligned"]
    if before and after is not None and after < 0.6 * before:
        matched = (summary["scorers"].get(scorers.RUBRIC) or {}).get("length_matched")
        among = (
            f" Among pairs of similar length the adapter is at least as good in {matched['value']:.0%} of "
            f"{matched['n']}."
            if matched
            else " No pair of answers is of similar length to tell."
        )
        found.append(
            f"{name}: answers got much shorter ({before:.0f} -> {after:.0f} words on average), so a win "
            f"may come from length alone.{among} Read the examples."
        )
    toxic = summary["scorers"].get(scorers.OFFLINE_TOXICITY)
    if toxic and toxic["base_mean"] is not None and toxic["aligned_mean"] > toxic["base_mean"] * 1.1 + 0.002:
        found.append(f"{name}: toxicity rose ({toxic['base_mean']:.3f} -> {toxic['aligned_mean']:.3f} on average).")
    rep = summary["repetitive"]
    if rep["aligned"] is not None and rep["aligned"] > rep["base"] + 0.1:
        found.append(
            f"{name}: the adapter repeats itself in {rep['aligned']:.0%} of its answers "
            f"(the base in {rep['base']:.0%})."
        )
    declined = summary.get("declines")
    if declined and declined["aligned"]["value"] > declined["base"]["value"] and declined["change"]["value"] >= 0.05:
        if declined["change"]["low"] > 0 and sure(declined, up=True):
            beyond = "beyond the noise"
        elif declined["change"]["low"] > 0:
            beyond = f"on {declined['up']} of {declined['prompts']} prompts, too few to be sure: read the answers"
        else:
            beyond = "within the noise of this many prompts, but read the answers"
        found.append(
            f"{name}: the adapter declines to help more often on prompts the guidelines say to answer: "
            f"{_counted(declined['base'])} answers (base) -> {_counted(declined['aligned'])} (adapter), {beyond}. "
            "A polite refusal can win a preference and still help less."
        )
    if summary.get("untested"):
        found.append(
            f"{name}: not tested, since no prompt of this report is one they apply to: "
            f"{', '.join(summary['untested'])}. Raise the report's prompt limit, or add such prompts to a held-out "
            "set."
        )
    rubric = summary["scorers"].get(scorers.RUBRIC)
    if rubric and rubric["at_least_as_good"] and rubric["noise_floor"]:
        if rubric["at_least_as_good"]["low"] <= rubric["noise_floor"]["value"]:
            found.append(
                f"{name}: by the rubric the adapter is not clearly better than the base is against itself "
                f"({rubric['at_least_as_good']['value']:.0%} at least as good; noise floor "
                f"{rubric['noise_floor']['value']:.0%})."
            )
    elif rubric and rubric["at_least_as_good"]:  # one sample per prompt: no noise floor, and ties count as wins
        wins = rubric["win_rate"]
        if not wins or wins["low"] <= 0.5:
            said = f"it wins {_ci(wins)} of the pairs that differ" if wins else "no pair of answers differs"
            found.append(
                f"{name}: by the rubric the adapter is not clearly better than the base ({said}; with one answer "
                "per prompt there is no noise floor, and equal scores count as at least as good)."
            )
    return found


# --- Reading reports ---------------------------------------------------------------------------------------------


def latest(store: Store, job_id: int) -> dict | None:
    """The job's newest report (its row with settings and summary decoded), or None."""
    rows = store.query("SELECT * FROM reports WHERE job_id = ? ORDER BY id DESC LIMIT 1", (job_id,))
    if not rows:
        return None
    row = dict(rows[0])
    row["settings"] = json.loads(row["settings"])
    row["summary"] = json.loads(row["summary"]) if row["summary"] else None
    return row


def _ci(entry: dict | None) -> str:
    if not entry:
        return "n/a"
    return f"{entry['value']:.0%} ({entry['low']:.0%}-{entry['high']:.0%})"


def table(summary: dict) -> list[list]:
    """Rows for a table: set, scorer, at least as good, noise floor, win rate, length-matched, mean base -> adapter."""
    rows = []
    for entry in summary["sets"]:
        for scorer, figures in entry["scorers"].items():
            means = (
                "" if figures["base_mean"] is None else f"{figures['base_mean']:.3f} -> {figures['aligned_mean']:.3f}"
            )
            rows.append(
                [
                    entry["prompt_set"],
                    scorer,
                    _ci(figures["at_least_as_good"]),
                    _ci(figures["noise_floor"]),
                    _ci(figures["win_rate"]),
                    _ci(figures["length_matched"]),
                    means,
                ]
            )
    return rows


TABLE_HEADERS = [
    "Prompt set",
    "Scorer",
    "At least as good (95% CI)",
    "Noise floor: base vs base",
    "Win rate (95% CI)",
    "Length-matched: at least as good",
    "Mean: base -> adapter",
]


def lines(summary: dict) -> list[str]:
    """Markdown lines for the model card."""
    out = []
    for entry in summary["sets"]:
        out.append(
            f"- Held-out set `{entry['prompt_set']}`: {entry['prompts']} prompts x {entry['samples']} samples; "
            f"mean answer length {entry['words']['base']:.0f} -> {entry['words']['aligned']:.0f} words."
        )
        for scorer, figures in entry["scorers"].items():
            out.append(
                f"  - {scorer}: at least as good as the base in {_ci(figures['at_least_as_good'])} "
                f"(base against itself: {_ci(figures['noise_floor'])}); win rate "
                f"{_ci(figures['win_rate'])}; length-matched {_ci(figures['length_matched'])}; mean "
                f"{figures['base_mean']:.3f} -> {figures['aligned_mean']:.3f}."
            )
        if entry.get("rules"):
            out.append(f"  - Rules of the rubric on `{entry['prompt_set']}` (answers passing, base -> adapter):")
            for row in entry["rules"]:
                out.append(
                    f"    - {row['rule']}: {_share(row['base'])} -> {_share(row['aligned'])} "
                    f"({row['prompts']} prompts): {row['verdict']}"
                )
            for rule in entry.get("untested", []):
                out.append(f"    - {rule}: not tested (no prompt of this report is one it applies to)")
        if entry.get("declines"):
            d = entry["declines"]
            out.append(
                f"  - Declined to help where the guidelines say to answer: {_share(d['base'])} -> "
                f"{_share(d['aligned'])} ({d['prompts']} prompts)."
            )
    out += [f"- Not learned: {line}" for line in rule_lines(summary)]
    out += [f"- Warning: {w}" for w in summary["warnings"]]
    return out


def _share(share: dict) -> str:
    return f"{_counted(share)} ({share['value']:.0%}, 95% CI {share['low']:.0%}-{share['high']:.0%})"


RULE_HEADERS = ["Prompt set", "Rule", "Prompts", "Passing: base", "Passing: adapter", "Change (95% CI)", "Verdict"]


def rule_table(summary: dict) -> list[list]:
    """Rows per rule of each set's rubric, and one for declining to help, for the Train tab."""
    rows = []
    for entry in summary["sets"]:
        extra = [("Declines to help (lower is better)", entry["declines"], "")] if entry.get("declines") else []
        for name, row, verdict in [(r["rule"], r, r["verdict"]) for r in entry.get("rules", [])] + extra:
            change = row["change"]
            rows.append(
                [
                    entry["prompt_set"],
                    name,
                    row["prompts"],
                    _share(row["base"]),
                    _share(row["aligned"]),
                    f"{change['value']:+.0%} ({change['low']:+.0%} to {change['high']:+.0%})",
                    verdict,
                ]
            )
        for rule in entry.get("untested", []):
            rows.append([entry["prompt_set"], rule, 0, "-", "-", "-", "not tested: no prompt here it applies to"])
    return rows


def when_finished(store: Store, job_id: int) -> threading.Thread | None:
    """Start the report a job asked for when it was launched (jobs.report_settings), in a thread of its own;
    None if it asked for none or has one already."""
    job = jobs.get(store, job_id)
    if not job["report_settings"] or store.query("SELECT 1 FROM reports WHERE job_id = ?", (job_id,)):
        return None
    settings = ReportSettings(**json.loads(job["report_settings"]))

    def run():
        try:  # each batch holds the model only while it generates, so a chat on the Compare tab can go between
            create(store, job_id, settings)
        except Exception as error:  # recorded on the report row; the app goes on
            print(f"alignment report of job {job_id}: {error}", flush=True)

    thread = threading.Thread(target=run, name=f"report-{job_id}", daemon=True)
    thread.start()
    return thread


def interrupted(store: Store) -> None:
    """Reports left 'generating' by an app that stopped: marked failed, so the page does not wait for them."""
    with store.tx() as db:
        db.execute(
            "UPDATE reports SET status = 'failed', error = 'the app stopped while the report was made; make "
            "it again' WHERE status = 'generating'"
        )
