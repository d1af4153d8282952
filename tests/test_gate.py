"""The publish gate's verdict on constructed evaluations, and a push that needs confirmation when it fails."""

import pytest

from studio.data import prompts
from studio.data.prompts import ParsedPrompts, add_prompt_set, get_prompts
from studio.data.ranking import annotator_id
from studio.evaluation import gate
from studio.shipping import publish


def job(store):
    with store.tx() as db:
        return db.execute(
            "INSERT INTO jobs (method, status, folder, base_model, data) VALUES "
            "('dpo', 'finished', '/nowhere', 'embedded', 'test')"
        ).lastrowid


def evaluation(store, set_name, job_id, scores=None, votes=None):
    """An evaluation of the base (position 0) against the job (1) on the set's prompts: `scores` maps a scorer to
    per-prompt (base value, adapter value); `votes` is a list of outcomes ('second' = the adapter is better)."""
    items = get_prompts(store, set_name)
    with store.tx() as db:
        ev = db.execute(
            "INSERT INTO evaluations (prompt_set_id, params, status) SELECT id, '{}', 'ready' FROM "
            "prompt_sets WHERE name = ?",
            (set_name,),
        ).lastrowid
        db.execute("INSERT INTO eval_models VALUES (?, 0, 'base (embedded)', 'embedded', NULL, NULL)", (ev,))
        db.execute("INSERT INTO eval_models VALUES (?, 1, ?, 'embedded', '/a', ?)", (ev, f"job {job_id}", job_id))
        for i, prompt in enumerate(items):
            ids = [
                db.execute(
                    "INSERT INTO eval_answers (evaluation_id, position, prompt_id, sample, text) VALUES "
                    "(?, ?, ?, 0, ?)",
                    (ev, pos, prompt["id"], f"answer {pos}"),
                ).lastrowid
                for pos in (0, 1)
            ]
            for scorer, values in (scores or {}).items():
                for answer, value in zip(ids, values[i % len(values)]):
                    db.execute("INSERT INTO eval_scores VALUES (?, ?, ?)", (answer, scorer, value))
        who = annotator_id(db, "vera")
        for i, outcome in enumerate(votes or []):
            db.execute(
                "INSERT INTO eval_votes (evaluation_id, prompt_id, sample, annotator_id, first, second, "
                "left_position, outcome) VALUES (?, ?, 0, ?, 0, 1, 0, ?)",
                (ev, items[i % len(items)]["id"], who, outcome),
            )
    return ev


def test_the_gate_passes_only_on_every_kind_of_evidence(store):
    prompts.install_builtin_sets(store)
    add_prompt_set(store, "held", ParsedPrompts(rows=[(f"question {i}", "") for i in range(30)]), "test")
    job_id = job(store)
    assert gate.verdict(store, job_id)["status"] == "incomplete"  # no evidence at all
    # Preferred by votes, and by the rubric; toxicity the same (not worse).
    evaluation(
        store,
        "held",
        job_id,
        {"toxicity": [(0.02, 0.02), (0.03, 0.02)], "rubric": [(0.5, 0.9), (0.6, 0.8)]},
        votes=["second"] * 25 + ["tie"] * 5,
    )
    result = gate.verdict(store, job_id)
    assert result["checks"]["preferred"][0] is True and result["checks"]["not more toxic"][0] is True
    assert result["status"] == "incomplete" and "capability" in result["checks"]["skills kept"][1]
    # Skills kept on the capability set: passed.
    evaluation(store, "capability", job_id, {"rubric": [(1.0, 1.0), (0.0, 0.0), (1.0, 1.0)]})
    assert gate.verdict(store, job_id)["status"] == "passed"
    # A second evaluation where the adapter is clearly more toxic fails the gate, whatever else passed.
    evaluation(store, "held", job_id, {"toxicity": [(0.01, 0.6), (0.02, 0.5)]})
    failed = gate.verdict(store, job_id)
    assert failed["status"] == "failed" and failed["checks"]["not more toxic"][0] is False
    assert "toxicity in evaluation" in failed["checks"]["not more toxic"][1]
    lines = gate.card_lines(failed, pushed_anyway=True)
    assert lines[0] == "**Did not pass.** Published anyway, by explicit confirmation."
    assert lines[2].startswith("- not more toxic: no (")


def test_skills_lost_and_a_weak_preference_fail(store):
    prompts.install_builtin_sets(store)
    job_id = job(store)
    evaluation(store, "capability", job_id, {"rubric": [(1.0, 0.0), (1.0, 1.0)]})  # half the right answers lost
    evaluation(store, "bank", job_id, votes=["first"] * 10 + ["second"] * 10)  # a coin flip
    result = gate.verdict(store, job_id)
    assert result["checks"]["skills kept"][0] is False and result["checks"]["preferred"][0] is False
    assert result["status"] == "failed"


def test_a_push_that_did_not_pass_needs_confirmation(store, monkeypatch):
    prompts.install_builtin_sets(store)
    job_id = job(store)
    monkeypatch.setattr(publish, "finished_job", lambda store, job_id: ({}, None))
    monkeypatch.setattr(publish.hub, "get_token", lambda token=None: "hf_test")
    monkeypatch.setattr(publish.hub, "reachable", lambda timeout=3.0: True)
    with pytest.raises(publish.PublishError, match='The publish gate is incomplete .*Tick "Push anyway"'):
        publish.push_adapter(store, job_id, "me/adapter")
