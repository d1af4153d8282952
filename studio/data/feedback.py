"""Feedback given where people chat: thumbs up or down on one answer, or a better answer written by hand.

Each is stored with who gave it, when, and which model answered (the base, or the adapter on it). Thumbs become
unpaired rows for KTO (TRL's `prompt` / `completion` / `label`); an edit becomes a preference pair for DPO (the
edited answer chosen over the original) and, for KTO, the edited answer desirable and the original undesirable.
"""

import json
import time
from pathlib import Path

from studio.core.paths import studio_home
from studio.core.store import Store
from studio.data.ranking import RankingError, annotator_id, check_annotator

KINDS = ("up", "down", "edit")


class FeedbackError(ValueError):
    """Feedback that cannot be saved; the message says what to fix."""


def record(
    store: Store,
    annotator: str,
    kind: str,
    messages: list[dict],
    answer: str,
    model: str,
    adapter: str | None = None,
    edited: str | None = None,
    annotator_kind: str = "local",
) -> int:
    """Save one reaction to `answer` (the reply to the conversation `messages`, which ends with the user's turn)."""
    try:
        annotator = check_annotator(annotator, annotator_kind)
    except RankingError as error:
        raise FeedbackError(str(error)) from None
    if kind not in KINDS:
        raise FeedbackError(f"Feedback is one of {', '.join(KINDS)}.")
    if not messages or messages[-1].get("role") != "user" or not (answer or "").strip():
        raise FeedbackError("Feedback goes on an answer to a message: this one has no message before it.")
    if kind == "edit" and (not (edited or "").strip() or edited.strip() == answer.strip()):
        raise FeedbackError("Write the better answer: the edit is empty or the same as the answer.")
    with store.tx() as db:
        who = annotator_id(db, annotator, annotator_kind)
        return db.execute(
            "INSERT INTO feedback (annotator_id, model, adapter, messages, answer, kind, edited) VALUES "
            "(?, ?, ?, ?, ?, ?, ?)",
            (
                who,
                model,
                adapter,
                json.dumps(messages, ensure_ascii=False),
                answer,
                kind,
                edited.strip() if kind == "edit" else None,
            ),
        ).lastrowid


def listed(store: Store) -> list[dict]:
    rows = store.query(
        "SELECT f.*, a.name AS annotator FROM feedback f JOIN annotators a ON a.id = f.annotator_id ORDER BY f.id"
    )
    return [dict(r, messages=json.loads(r["messages"])) for r in rows]


def counts(store: Store) -> dict:
    """{"up": n, "down": n, "edit": n, "annotators": n, "models": n} over all feedback."""
    found = {kind: 0 for kind in KINDS}
    for row in store.query("SELECT kind, COUNT(*) AS n FROM feedback GROUP BY kind"):
        found[row["kind"]] = row["n"]
    extra = store.query(
        "SELECT COUNT(DISTINCT annotator_id) AS people, "
        "COUNT(DISTINCT model || '|' || COALESCE(adapter, '')) AS models FROM feedback"
    )[0]
    return {**found, "annotators": extra["people"], "models": extra["models"]}


def _answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def kto_rows(store: Store) -> list[dict]:
    """TRL's unpaired preference rows (conversational): thumbs, and each edit as its two answers."""
    rows = []
    for f in listed(store):
        if f["kind"] == "edit":
            rows.append({"prompt": f["messages"], "completion": _answer(f["edited"]), "label": True})
            rows.append({"prompt": f["messages"], "completion": _answer(f["answer"]), "label": False})
        else:
            rows.append({"prompt": f["messages"], "completion": _answer(f["answer"]), "label": f["kind"] == "up"})
    return rows


def edit_pairs(store: Store) -> list[dict]:
    """TRL's preference rows (conversational) from edits: the edited answer chosen over the original."""
    return [
        {"prompt": f["messages"], "chosen": _answer(f["edited"]), "rejected": _answer(f["answer"])}
        for f in listed(store)
        if f["kind"] == "edit"
    ]


def export(store: Store, out_dir=None) -> dict:
    """kto.jsonl (unpaired, from thumbs and edits) and edits.jsonl (pairs, from edits), written by `datasets`."""
    from datasets import Dataset

    kto, pairs = kto_rows(store), edit_pairs(store)
    if not kto:
        raise FeedbackError(
            "No feedback yet: give thumbs or edit answers on the Compare tab, or rate single answers on the Rank tab."
        )
    out_dir = Path(out_dir or studio_home() / "exports" / f"feedback-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"kto": out_dir / "kto.jsonl"}
    Dataset.from_list(kto).to_json(files["kto"], lines=True, force_ascii=False)
    if pairs:
        files["edits"] = out_dir / "edits.jsonl"
        Dataset.from_list(pairs).to_json(files["edits"], lines=True, force_ascii=False)
    return {"folder": out_dir, "files": files, "kto": len(kto), "pairs": len(pairs)}
