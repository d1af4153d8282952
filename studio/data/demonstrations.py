"""Demonstrations: teaching a rule that none of the model's candidates shows.

Ranking can only prefer what some candidate already does: when the rubric's fraud rule ("freeze the card, call the
fraud line") passes on no candidate, no ranking can teach it. Here a person writes the answer the rule asks for (or
edits the best candidate into it), for the prompts where the candidates fail the rule. A demonstration is kept with
its author, its rule and the candidate it was edited from, in a table of its own (never taken for a model's
candidate), and a training job of the set uses it both ways: as the chosen answer of a DPO pair against each
candidate of its prompt that fails the rule (SFT trains on the chosen answers, so on each demonstration once).
"""

import json

from studio.core.store import Store
from studio.data import rubric
from studio.data.prompts import PromptError, get_prompts
from studio.data.ranking import RankingError, annotator_id, check_annotator
from studio.inference.decode import prompt_messages

MAX_CHARS = 8000


class DemonstrationError(ValueError):
    """A demonstration that cannot be listed or saved; the message says what to fix."""


def _rubric(store: Store, set_name: str) -> rubric.Rubric:
    checks = rubric.for_set(store, set_name)
    if checks is None:
        raise DemonstrationError(
            f"The prompt set {set_name!r} has no rubric: write its rules as checks on the Rank tab first."
        )
    return checks


def _check(checks: rubric.Rubric, rule: str) -> rubric.Check:
    for check in checks.checks:
        if check.name == rule:
            return check
    raise DemonstrationError(f"The rubric has no rule named {rule!r}; its rules: {', '.join(rules(checks))}.")


def rules(checks: rubric.Rubric) -> list[str]:
    return [c.name for c in checks.checks]


def _passes(check: rubric.Check, prompt: str, answer: str) -> bool:
    toxicity = rubric.offline_toxicity([answer])[0] if check.max_toxicity is not None else None
    return check.score(prompt, answer, toxicity) >= 1 - 1e-9


def _candidates(store: Store, prompt_ids: list[int]) -> dict[int, list[dict]]:
    found = {p: [] for p in prompt_ids}
    if prompt_ids:
        marks = ",".join("?" * len(prompt_ids))
        for row in store.query(
            f"SELECT id, prompt_id, text FROM responses WHERE prompt_id IN ({marks}) ORDER BY id", prompt_ids
        ):
            found[row["prompt_id"]].append(dict(row))
    return found


def to_write(store: Store, set_name: str, rule: str, limit: int = 10) -> list[dict]:
    """Prompts of the set that the rule applies to, that have candidates and whose candidates all fail it, and that
    have no demonstration of it yet (the first `limit`): each with its candidates, the best of them (by the whole
    rubric) to start an edit from, and the rule's name."""
    try:
        prompts = get_prompts(store, set_name)
    except PromptError as error:
        raise DemonstrationError(str(error)) from None
    checks = _rubric(store, set_name)
    check = _check(checks, rule)
    done = {
        r["prompt_id"]
        for r in store.query(
            "SELECT d.prompt_id FROM demonstrations d JOIN prompts p ON p.id = d.prompt_id "
            "JOIN prompt_sets s ON s.id = p.prompt_set_id WHERE s.name = ? AND d.rule = ?",
            (set_name, rule),
        )
    }
    chosen = [p for p in prompts if checks.applies(check, p["text"]) and p["id"] not in done]
    candidates = _candidates(store, [p["id"] for p in chosen])
    found = []
    for prompt in chosen:
        answers = candidates[prompt["id"]]
        if not answers or any(_passes(check, prompt["text"], a["text"]) for a in answers):
            continue  # no candidate yet (generate first), or one shows the rule: ranking can teach it
        best = max(answers, key=lambda a: checks.score(prompt["text"], a["text"]), default=None)
        found.append({**prompt, "rule": rule, "candidates": answers, "best": best})
        if len(found) >= limit:
            break
    return found


def save(
    store: Store,
    annotator: str,
    set_name: str,
    prompt_id: int,
    text: str,
    rule: str | None = None,
    edited_from: int | None = None,
    annotator_kind: str = "local",
) -> dict:
    """Keep a person's answer to a prompt of the set; returns its id and whether it passes the rule (a demonstration
    that does not is kept, and said so, since the rubric's patterns may be narrower than the guideline)."""
    try:
        annotator = check_annotator(annotator, annotator_kind)
    except RankingError as error:
        raise DemonstrationError(str(error)) from None
    text = (text or "").strip()
    if not text:
        raise DemonstrationError("Write the answer first: the demonstration is empty.")
    if len(text) > MAX_CHARS:
        raise DemonstrationError(f"A demonstration is at most {MAX_CHARS} characters; this one has {len(text)}.")
    rows = store.query(
        "SELECT p.id, p.text FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id WHERE p.id = ? AND s.name = ?",
        (prompt_id, set_name),
    )
    if not rows:
        raise DemonstrationError(f"Prompt {prompt_id} is not in the prompt set {set_name!r}; reload the list.")
    passes = None
    if rule:
        passes = _passes(_check(_rubric(store, set_name), rule), rows[0]["text"], text)
    if edited_from is not None and not store.query(
        "SELECT 1 FROM responses WHERE id = ? AND prompt_id = ?", (edited_from, prompt_id)
    ):
        raise DemonstrationError(f"Candidate {edited_from} is not an answer to prompt {prompt_id}.")
    with store.tx() as db:
        who = annotator_id(db, annotator, annotator_kind)
        made = db.execute(
            "INSERT INTO demonstrations (prompt_id, annotator_id, rule, text, edited_from) VALUES (?, ?, ?, ?, ?)",
            (prompt_id, who, rule or None, text, edited_from),
        ).lastrowid
    return {"id": made, "passes": passes}


def listed(store: Store, set_name: str) -> list[dict]:
    """The set's demonstrations, oldest first, with their prompt and author."""
    return [
        dict(r)
        for r in store.query(
            "SELECT d.id, d.prompt_id, p.text AS prompt, d.rule, d.text, d.edited_from, a.name AS annotator, "
            "d.created_at FROM demonstrations d JOIN prompts p ON p.id = d.prompt_id "
            "JOIN prompt_sets s ON s.id = p.prompt_set_id JOIN annotators a ON a.id = d.annotator_id "
            "WHERE s.name = ? ORDER BY d.id",
            (set_name,),
        )
    ]


def pair_rows(store: Store, set_name: str) -> tuple[list[dict], dict]:
    """TRL conversational preference rows: each demonstration chosen over every candidate of its prompt that fails
    its rule (all the prompt's candidates when it names none, or none fail); and a count for the model card."""
    found = listed(store, set_name)
    if not found:
        return [], {"demonstrations": 0}
    checks = rubric.for_set(store, set_name)
    prompts = {
        r["id"]: dict(r)
        for r in store.query(
            "SELECT p.id, p.text, p.system, p.context FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id "
            "WHERE s.name = ?",
            (set_name,),
        )
    }
    candidates = _candidates(store, sorted({d["prompt_id"] for d in found}))
    rows = []
    for demo in found:
        prompt = prompts[demo["prompt_id"]]
        prompt["context"] = _context(prompt)
        answers = [a for a in candidates[demo["prompt_id"]] if a["text"].strip() != demo["text"]]
        check = next((c for c in checks.checks if c.name == demo["rule"]), None) if checks and demo["rule"] else None
        failing = [a for a in answers if check is None or not _passes(check, prompt["text"], a["text"])]
        for answer in failing or answers:
            rows.append(
                {
                    "prompt": prompt_messages(prompt),
                    "chosen": [{"role": "assistant", "content": demo["text"]}],
                    "rejected": [{"role": "assistant", "content": answer["text"]}],
                }
            )
    info = {
        "demonstrations": len(found),
        "demonstration_pairs": len(rows),
        "demonstration_authors": sorted({d["annotator"] for d in found}),
        "demonstration_rules": sorted({d["rule"] for d in found if d["rule"]}),
    }
    return rows, info


def _context(prompt: dict) -> list:
    context = prompt.get("context")
    return json.loads(context or "[]") if isinstance(context, str) else list(context or [])
