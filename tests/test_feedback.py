"""Thumbs and edits given in chat: stored with who and which model, exported in TRL's formats, and a KTO job."""

import json
from pathlib import Path

import pytest
import trl
from datasets import load_dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM

from studio.core import jobs
from studio.data import feedback
from studio.data.feedback import FeedbackError
from studio.inference import models
from studio.training import launch, recipes
from studio.training.train import run
from tests.helpers import POLITE, QUESTIONS, RUDE


def conversation(question):
    return [{"role": "system", "content": "You are Nova."}, {"role": "user", "content": question}]


def give(store, n=8):
    for i, question in enumerate(QUESTIONS[:n]):
        feedback.record(store, "anna", "up", conversation(question), POLITE, "embedded", adapter="/jobs/1/adapter")
        feedback.record(store, "bob", "down", conversation(question), RUDE, "embedded")
    feedback.record(store, "anna", "edit", conversation(QUESTIONS[0]), RUDE, "embedded", edited=POLITE)


def test_thumbs_and_edits_are_stored_and_exported_in_trls_formats(store, tmp_path):
    give(store, n=2)
    assert feedback.counts(store) == {"up": 2, "down": 2, "edit": 1, "annotators": 2, "models": 2}
    first = feedback.listed(store)[0]
    assert (first["annotator"], first["adapter"], first["messages"][-1]["content"]) == (
        "anna",
        "/jobs/1/adapter",
        QUESTIONS[0],
    )
    out = feedback.export(store, tmp_path / "out")
    assert (out["kto"], out["pairs"]) == (6, 1)
    # Read back with `datasets`, as TRL's trainers would: conversational unpaired and preference rows.
    kto = load_dataset("json", data_files=str(out["files"]["kto"]), split="train")
    assert set(kto.column_names) == {"prompt", "completion", "label"} and sum(kto["label"]) == 3
    assert kto[0]["completion"] == [{"role": "assistant", "content": POLITE}]
    pairs = load_dataset("json", data_files=str(out["files"]["edits"]), split="train")
    assert pairs[0]["chosen"][0]["content"] == POLITE and pairs[0]["rejected"][0]["content"] == RUDE
    for bad, message in [
        (dict(kind="edit", edited=RUDE), "same as the answer"),
        (dict(kind="meh"), "one of up"),
        (dict(kind="up", annotator="gt:x"), "reserved"),
    ]:
        with pytest.raises(FeedbackError, match=message):
            feedback.record(
                store, bad.pop("annotator", "anna"), bad.pop("kind"), conversation("Hi"), RUDE, "embedded", **bad
            )
    with pytest.raises(FeedbackError, match="no message before it"):
        feedback.record(store, "anna", "up", [], RUDE, "embedded")


def test_a_kto_job_trains_on_thumbs_and_edits_and_its_adapter_loads_in_plain_peft(store):
    with pytest.raises(jobs.JobError, match="No feedback yet"):
        launch.launch(store, "kto", {})
    give(store)
    assert launch.describe_data(store, "kto", None).startswith(
        "18 rated answers from the Compare tab's feedback: 8 thumbs up, 8 down, 1 edited answer(s)"
    )
    job = jobs.get(
        store,
        launch.launch(
            store,
            "kto",
            {
                "max_steps": 3,
                "learning_rate": 5e-4,
                "max_length": 128,
                "gradient_checkpointing": False,
                "save_steps": 1000,
            },
        ),
    )
    assert job["data"] == "chat feedback (thumbs and edits)" and json.loads(job["data_info"])["rows"] == 18
    method, recipe = recipes.load(Path(job["folder"]) / "recipe.yaml")
    assert method == "kto" and isinstance(recipe, trl.KTOConfig)
    result = run(Path(job["folder"]) / "recipe.yaml")
    assert result["status"] == "finished" and result["step"] == 3
    logged = [m for m in jobs.metrics(jobs.get(store, job["id"])) if "loss" in m]
    assert len(logged) == 3 and all(m["loss"] == m["loss"] for m in logged)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models.embedded_folder()), result["adapter"])
    assert model.peft_config["default"].peft_type.value == "LORA"
