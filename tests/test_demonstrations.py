"""Demonstrations: a person's answer for a rule that no candidate shows, kept apart from the model's candidates and
trained on (the chosen side of DPO pairs against the failing candidates; once each in SFT)."""

import json
from pathlib import Path

import pytest

from studio.core import jobs
from studio.data import demonstrations, ranking, rubric
from studio.data.demonstrations import DemonstrationError
from studio.data.preferences import training_snapshot
from studio.data.prompts import ParsedPrompts, add_prompt_set, get_prompts
from studio.training import launch, recipes
from studio.training.launch import Manager
from tests.helpers import wait_for

RUBRIC = """
categories:
  fraud: "fraud|did not make|scam"
checks:
  - name: "Fraud: freeze the card and call the fraud line"
    when: fraud
    must: ["freez", "fraud line"]
  - name: Friendly
    any: ["happy|glad|sorry"]
"""
PROMPTS = [
    "There is a payment I did not make on my card.",
    "I think I was hit by a scam, what now?",
    "Someone used my card for fraud last night.",
    "How do I change my address?",
]
CANDIDATES = {
    0: ["Sorry to hear that. Check your statement.", "Please wait a few days and see."],
    1: ["Sorry! Scams happen. Be careful next time.", "Glad you asked: report it to the police."],
    # This prompt has a candidate that shows the rule: ranking can teach it, so no demonstration is asked for.
    2: ["Sorry: freeze the card in the app and call the fraud line now.", "That is bad luck."],
    3: ["Happy to help: go to Settings in the app.", "Visit a branch."],
}
GOOD = "I'm sorry this happened. Freeze the card in the app now, then call our fraud line on 0800 123 456."


@pytest.fixture
def fraud_set(store):
    add_prompt_set(store, "fraud", ParsedPrompts(rows=[(p, "You are Nova.") for p in PROMPTS]), "test")
    prompts = get_prompts(store, "fraud")
    with store.tx() as db:
        for index, prompt in enumerate(prompts):
            for text in CANDIDATES[index]:
                db.execute(
                    "INSERT INTO responses (prompt_id, model, text, params) VALUES (?, 'embedded', ?, '{}')",
                    (prompt["id"], text),
                )
    rubric.save(store, "fraud", RUBRIC)
    return [p["id"] for p in prompts]


RULE = "Fraud: freeze the card and call the fraud line"


def test_the_prompts_to_write_for_are_those_where_every_candidate_fails_the_rule(store, fraud_set):
    found = demonstrations.to_write(store, "fraud", RULE)
    assert [p["id"] for p in found] == fraud_set[:2]  # not prompt 3 (a candidate passes), not 4 (no fraud)
    first = found[0]
    assert first["best"]["text"] == "Sorry to hear that. Check your statement."  # friendly: the rubric's best
    assert [c["text"] for c in first["candidates"]] == CANDIDATES[0]
    with pytest.raises(DemonstrationError, match="no rule named 'Fraud'; its rules: Fraud: freeze the card"):
        demonstrations.to_write(store, "fraud", "Fraud")
    with pytest.raises(DemonstrationError, match="No prompt set named 'nope'"):
        demonstrations.to_write(store, "nope", RULE)


def test_a_demonstration_is_saved_with_its_author_and_rule_and_never_as_a_candidate(store, fraud_set):
    candidates_before = store.query("SELECT COUNT(*) AS n FROM responses")[0]["n"]
    first = demonstrations.to_write(store, "fraud", RULE)[0]
    made = demonstrations.save(store, "anna", "fraud", first["id"], GOOD, RULE, first["best"]["id"])
    assert made["passes"] is True
    weak = demonstrations.save(store, "bob", "fraud", fraud_set[1], "Call the bank.", RULE)
    assert weak["passes"] is False  # kept, and the page says it does not pass the check
    listed = demonstrations.listed(store, "fraud")
    assert [(d["annotator"], d["rule"], d["edited_from"]) for d in listed] == [
        ("anna", RULE, first["best"]["id"]),
        ("bob", RULE, None),
    ]
    assert store.query("SELECT COUNT(*) AS n FROM responses")[0]["n"] == candidates_before
    assert demonstrations.to_write(store, "fraud", RULE) == []  # each prompt has its demonstration now
    # The Rank queue shows the model's candidates only.
    task = ranking.load_task(store, first["id"], "carl")
    assert task.responses and GOOD not in task.responses and task.total_responses == 2
    for bad, said in (
        (dict(text="  "), "the demonstration is empty"),
        (dict(prompt_id=10**6), "is not in the prompt set 'fraud'"),
        (dict(rule="Nope"), "no rule named 'Nope'"),
        (dict(annotator=""), "Enter your annotator name"),
        (dict(edited_from=first["best"]["id"], prompt_id=fraud_set[3]), "is not an answer to prompt"),
    ):
        args = {"annotator": "anna", "set_name": "fraud", "prompt_id": first["id"], "text": GOOD, "rule": RULE}
        with pytest.raises(DemonstrationError, match=said):
            demonstrations.save(store, **{**args, **bad})


def test_a_job_of_the_set_trains_on_demonstrations_chosen_over_the_failing_candidates(store, fraud_set):
    """With no ranking at all, the demonstrations alone make the data: DPO pairs of the demonstration over each
    candidate that fails its rule, and an SFT job that trains on each demonstration once, to a finished adapter."""
    demonstrations.save(store, "anna", "fraud", fraud_set[0], GOOD, RULE)
    other = "Sorry about that! Freeze the card in the app and call the fraud line straight away."
    demonstrations.save(store, "anna", "fraud", fraud_set[1], other, RULE)
    rows, info = training_snapshot(store, "fraud")
    assert len(rows) == 4 and info["pairs"] == 4 and info["demonstrations"] == 2
    assert info["demonstration_authors"] == ["anna"] and info["demonstration_rules"] == [RULE]
    assert {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows} == {
        (GOOD, CANDIDATES[0][0]),
        (GOOD, CANDIDATES[0][1]),
        (other, CANDIDATES[1][0]),
        (other, CANDIDATES[1][1]),
    }
    assert rows[0]["prompt"] == [
        {"role": "system", "content": "You are Nova."},
        {"role": "user", "content": PROMPTS[0]},
    ]
    said = launch.describe_data(store, "sft", "fraud")
    assert said == (
        "4 chosen answers from 2 demonstration(s), each chosen over the candidates that fail its rule (no ranking yet)."
    )
    # The Train tab's recommended settings say how a round learns from them, with the figures behind the choice.
    assert "Demonstrations: DPO takes each as the chosen answer" in launch.recommended(store, "dpo", "fraud")["why"]
    assert "Demonstrations" not in launch.recommended(store, "dpo", None)["why"]
    settings = {
        **recipes.studio_defaults("sft"),
        "per_device_train_batch_size": 2,
        "max_length": 128,
        "max_steps": 2,
        "save_steps": 1000,
        "gradient_checkpointing": False,
    }
    job_id = launch.launch(store, "sft", settings, prompt_set="fraud")
    job = jobs.get(store, job_id)
    snapshot = [json.loads(x) for x in (Path(job["folder"]) / "data.jsonl").read_text().splitlines()]
    assert len(snapshot) == 4 and json.loads(job["data_info"])["demonstrations"] == 2
    manager = Manager(store)
    wait_for(lambda: jobs.get(store, job_id)["status"] not in ("queued", "running"), manager)
    job = jobs.get(store, job_id)
    assert job["status"] == "finished", job["error"]
    assert "2 conversations to learn" in jobs.log_tail(job, 200)  # SFT: each demonstration once, not 4 rows


def test_a_ground_truth_demonstrations_job_renders_and_its_answers_import_as_demonstrations(store, fraud_set, tmp_path):
    """The demonstrations job: one manifest line per prompt where every candidate fails the rule; the template, rendered
    with a real Liquid engine from the pre-annotation Lambda's output, starts the worker's text area from the best
    candidate; what the form submits (crowd-text-area's output under its name, our hidden inputs) imports as
    demonstrations by gt:<worker>, from the worker response files or our consolidation's output manifest."""
    from studio.data import groundtruth
    from tests.test_groundtruth import FormReader, lambda_module, render

    ranking.save_guidelines(store, "fraud", "Fraud first: <b>freeze</b> the card.")
    out = groundtruth.export_job(store, "fraud", tmp_path / "job", bucket="b", name="demo1", rule=RULE)
    folder = out["folder"]
    lines = [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]
    assert [line["studio-prompt-id"] for line in lines] == fraud_set[:2] and out["prompts"] == 2
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["LabelAttributeName"] == "studio-demonstration"
    assert settings["HumanTaskConfig"]["TaskTitle"] == "Write the answer the guidelines ask for"
    template = (folder / "template.liquid.html").read_text()
    assert "&lt;b&gt;freeze&lt;/b&gt;" in template and "<b>freeze" not in template

    pre = lambda_module(folder, "pre_annotation")
    responses = tmp_path / "result" / "demo1" / "annotations" / "worker-response" / "iteration-1"
    manifest = []
    for i, line in enumerate(lines):
        form = FormReader()
        page = render(template, pre.lambda_handler({"dataObject": line}, None)["taskInput"])
        form.feed(page)
        assert form.area["name"] == "demonstration" and form.area["value"] == line["candidate"]
        assert form.area["value"] in CANDIDATES[i] and form.hidden["studioRule"] == RULE
        assert RULE in page and line["source"] in page
        submitted = {**form.hidden, "demonstration": f"{GOOD} ({i})"}
        (responses / str(i)).mkdir(parents=True)
        (responses / str(i) / "2026-12-06_10:00:00.json").write_text(
            json.dumps({"answers": [{"workerId": "w1", "answerContent": submitted}]})
        )
        label = {"workers": [{"workerId": "w2", "answerContent": {**submitted, "demonstration": "Freeze it, sorry."}}]}
        manifest.append(json.dumps({**line, "studio-demonstration": label}))
    (tmp_path / "result" / "demo1" / "manifests" / "output").mkdir(parents=True)
    (tmp_path / "result" / "demo1" / "manifests" / "output" / "output.manifest").write_text("\n".join(manifest))

    checked = groundtruth.read_results(store, tmp_path / "result")
    assert checked.summary()["demonstrations"] == 4 and "a demonstration of" in groundtruth.preview(store, checked)
    result = groundtruth.import_results(store, tmp_path / "result")
    assert result["demonstrations"] == 4 and result["rankings"] == 0 and result["workers"] == 2
    saved = demonstrations.listed(store, "fraud")
    assert sorted((d["annotator"], d["prompt_id"]) for d in saved) == sorted(
        (w, p) for w in ("gt:w1", "gt:w2") for p in fraud_set[:2]
    )
    assert {d["rule"] for d in saved} == {RULE}
    assert all(
        d["edited_from"] == line["studio-edited-from"]
        for d in saved
        for line in lines
        if line["studio-prompt-id"] == d["prompt_id"]
    )
    assert store.query("SELECT COUNT(*) AS n FROM responses")[0]["n"] == 8  # never a model's candidate
    rows, info = training_snapshot(store, "fraud", recipes.PAIR_MODE)
    assert info["demonstrations"] == 4 and any(row["chosen"][-1]["content"].startswith(GOOD) for row in rows)
    assert groundtruth.import_results(store, tmp_path / "result")["unchanged"] == 4  # again: nothing new
    # Nothing left to write for: the next export says so.
    with pytest.raises(groundtruth.GroundTruthError, match="needs a demonstration"):
        groundtruth.export_job(store, "fraud", tmp_path / "job2", bucket="b", name="demo2", rule=RULE)
