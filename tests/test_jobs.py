import dataclasses
import json
import os
import signal
import threading
from pathlib import Path

import pytest

from studio.core import jobs, methods
from studio.core.jobs import JobError
from studio.core.store import Store
from studio.data import feedback
from studio.training import launch, recipes
from studio.training.launch import Manager
from tests.helpers import SETTINGS, clear_cut_set, new_job, steps_logged, wait_for


def test_a_job_from_rankings_trains_to_an_adapter(store):
    clear_cut_set(store)
    job_id = new_job(store, 3)
    job = jobs.get(store, job_id)
    assert job["status"] == "queued" and (Path(job["folder"]) / "recipe.yaml").is_file()
    snapshot = [json.loads(x) for x in (Path(job["folder"]) / "data.jsonl").read_text().splitlines()]
    assert len(snapshot) == 8 and snapshot[0]["chosen"][0]["content"].startswith("Happy to help")
    info = json.loads(job["data_info"])
    assert info["pairs"] == 8 and info["annotators"] == ["anna"] and len(info["ranking_ids"]) == 8
    manager = Manager(store)
    wait_for(lambda: jobs.get(store, job_id)["status"] not in ("queued", "running"), manager)
    job = jobs.get(store, job_id)
    assert job["status"] == "finished", job["error"]
    assert jobs.adapter_folder(job) and steps_logged(job) == [1, 2, 3]
    assert '"status": "finished"' in jobs.log_tail(job)  # train.py's last line
    assert json.loads((Path(job["folder"]) / "result.json").read_text())["status"] == "finished"


def test_stop_leaves_a_checkpoint_and_resume_continues_the_count(store):
    clear_cut_set(store)
    job_id = new_job(store, 10)
    manager = Manager(store)
    wait_for(lambda: len(steps_logged(jobs.get(store, job_id))) >= 2, manager)
    # An app restart: a new manager finds the job still running by its pid, and can stop it.
    restarted = Manager(store)
    restarted.refresh()
    assert jobs.get(store, job_id)["status"] == "running"
    restarted.stop(job_id)
    assert jobs.get(store, job_id)["status"] == "stopping"
    wait_for(lambda: jobs.get(store, job_id)["status"] not in ("running", "stopping"), restarted)
    job = jobs.get(store, job_id)
    assert job["status"] == "stopped", job["error"]
    stopped_at = max(steps_logged(job))
    assert stopped_at < 10 and (Path(job["folder"]) / f"checkpoint-{stopped_at}").is_dir()
    with pytest.raises(JobError, match="only a queued or running job can be stopped"):
        restarted.stop(job_id)

    assert restarted.resume(job_id) == "Resuming from the latest checkpoint."
    wait_for(lambda: jobs.get(store, job_id)["status"] not in ("queued", "running"), restarted)
    job = jobs.get(store, job_id)
    assert job["status"] == "finished", job["error"]
    logged = steps_logged(job)
    assert logged == list(range(1, stopped_at + 1)) + list(range(stopped_at + 1, 11))


@pytest.mark.slow  # about 60 s here: two training processes, stopped and resumed (`pytest -m slow`)
def test_two_processes_train_one_adapter_stop_together_and_resume(store):
    """The recipe's `processes: 2` runs through accelerate launch, on this CPU joined by gloo: one data-parallel
    run (one metrics stream, each step once), stopped at the same step by both processes, resumed, finished."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    clear_cut_set(store)
    job_id = new_job(store, 12, processes=2, save_steps=1)
    folder = Path(jobs.get(store, job_id)["folder"])
    argv = launch.launch_argv(folder / "recipe.yaml")
    assert argv[:2] == ["-m", "accelerate.commands.launch"] and argv[argv.index("--num_processes") + 1] == "2"
    manager = Manager(store)
    wait_for(lambda: len(steps_logged(jobs.get(store, job_id))) >= 2, manager)
    manager.stop(job_id)
    wait_for(lambda: jobs.get(store, job_id)["status"] not in ("running", "stopping"), manager)
    job = jobs.get(store, job_id)
    assert job["status"] == "stopped", job["error"]
    stopped_at = max(steps_logged(job))
    assert stopped_at < 12 and (folder / f"checkpoint-{stopped_at}").is_dir()

    assert manager.resume(job_id) == "Resuming from the latest checkpoint."
    wait_for(lambda: jobs.get(store, job_id)["status"] not in ("queued", "running"), manager)
    job = jobs.get(store, job_id)
    assert job["status"] == "finished", job["error"]
    assert steps_logged(job) == list(range(1, 13))  # one process writes: every step once
    result = json.loads((folder / "result.json").read_text())
    assert result["processes"] == 2
    base = AutoModelForCausalLM.from_pretrained(result["base_path"])
    adapted = PeftModel.from_pretrained(base, result["adapter"])
    assert any("lora_B" in name and weight.abs().max() > 0 for name, weight in adapted.named_parameters())


def test_a_killed_job_is_failed_with_its_log_and_the_queue_goes_on(store):
    clear_cut_set(store)
    first, second = new_job(store, 200), new_job(store, 1)
    manager = Manager(store)
    manager.refresh()
    assert [jobs.get(store, j)["status"] for j in (first, second)] == ["running", "queued"]  # one at a time
    wait_for(lambda: steps_logged(jobs.get(store, first)), manager)
    os.killpg(jobs.get(store, first)["pid"], signal.SIGKILL)
    wait_for(lambda: jobs.get(store, first)["status"] == "failed", manager)
    error = jobs.get(store, first)["error"]
    assert "ended without a result (killed?)" in error and "--- end of train.log ---" in error
    wait_for(lambda: jobs.get(store, second)["status"] == "finished", manager)
    with pytest.raises(JobError, match="only a stopped or failed job can be resumed"):
        manager.resume(second)


def test_a_malformed_recipe_creates_no_job(store):
    clear_cut_set(store)
    with pytest.raises(recipes.RecipeError, match="learning_rate: expected a number"):
        new_job(store, 2, learning_rate="fast")
    assert jobs.list_jobs(store) == []
    assert not (jobs.jobs_dir() / "1-dpo").exists()  # the folder made for it is gone too


def test_launch_holds_the_rules_the_train_tab_relies_on(store):
    """launch.launch: what a page, the API and the terminal all call; each refusal names what to fix and creates no
    job."""
    from studio.data import rubric

    clear_cut_set(store)
    job_id = launch.launch(store, "dpo", {**SETTINGS, "max_steps": 1}, prompt_set="polite", report=None)
    job = jobs.get(store, job_id)
    assert job["data"] == "polite (one pair per prompt, best vs worst)" and job["report_settings"] is None
    assert len((Path(job["folder"]) / "data.jsonl").read_text().splitlines()) == 8
    before = len(jobs.list_jobs(store))
    with pytest.raises(JobError, match="Online RL needs a reward"):
        launch.launch(store, "rloo", {"num_generations": 2}, prompt_set="polite")
    with pytest.raises(JobError, match="has no rubric to reward with"):
        launch.launch(store, "rloo", {"num_generations": 2}, prompt_set="polite", rubric_reward=True)
    with pytest.raises(JobError, match="has no finished chat adapter"):
        launch.launch(store, "dpo", {"model": f"job:{job_id}"}, prompt_set="polite")  # still queued
    with pytest.raises(JobError, match="'job:x' is not a job"):
        launch.launch(store, "dpo", {"model": "job:x"}, prompt_set="polite")
    assert len(jobs.list_jobs(store)) == before
    rubric.save(store, "polite", "checks:\n  - name: Kind\n    any: ['happy']\n")
    rl = jobs.get(
        store,
        launch.launch(
            store,
            "rloo",
            {"num_generations": 4, "per_device_train_batch_size": 6},
            prompt_set="polite",
            rubric_reward=True,
            report={"samples": 2},
        ),
    )
    _, recipe = recipes.load(Path(rl["folder"]) / "recipe.yaml")
    assert recipe.rubric == str(Path(rl["folder"]) / "rubric.yaml") and "Kind" in Path(recipe.rubric).read_text()
    assert recipe.per_device_train_batch_size == 8  # rounded up to whole groups of 4 answers
    assert json.loads(rl["report_settings"]) == {"samples": 2}
    # Its alignment report will say that a gain by the rubric is what the job was trained to raise; the DPO job's not.
    from studio.evaluation import report

    assert report._optimised(store, rl["id"]) == {"rubric": "the rubric was the job's reward"}
    assert report._optimised(store, job_id) == {}


def test_the_form_sends_every_field_and_each_method_keeps_its_own(store):
    clear_cut_set(store)
    feedback.record(store, "anna", "up", [{"role": "user", "content": "Hi"}], "Hello!", "embedded")  # for KTO
    form = {
        "beta": 0.3,
        "loss_type": "ipo",
        "num_generations": 2,
        "max_completion_length": 16,
        "max_steps": 1,
        "learning_rate": 1e-4,
    }
    made = {
        m: recipes.load(
            Path(
                jobs.get(
                    store,
                    launch.launch(
                        store, m, form, prompt_set="polite", reward_functions=["tests.helpers:polite_reward"]
                    ),
                )["folder"]
            )
            / "recipe.yaml"
        )[1]
        for m in methods.METHODS
    }
    assert made["dpo"].beta == 0.3 and made["dpo"].loss_type == ["ipo"]
    assert made["rloo"].beta == 0.3 and made["rloo"].num_generations == 2 and made["rloo"].max_completion_length == 16
    assert made["sft"].learning_rate == 1e-4 and made["reward"].max_steps == 1
    for method, recipe in made.items():  # TRL's defaults where the method does not offer the field
        defaults = {
            f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
            for f in dataclasses.fields(recipes.recipe_class(method))
            if (f.default, f.default_factory) != (dataclasses.MISSING, dataclasses.MISSING)
        }
        for key in set(methods.OPTIONS) - set(methods.get(method).options):
            if key in defaults:
                assert getattr(recipe, key) == defaults[key], (method, key)


def test_two_managers_on_one_database_start_a_queued_job_once(store, tmp_path):
    clear_cut_set(store)
    job_id = new_job(store, 1)
    claims = []

    def claim(manager):
        claims.append(manager._claim())

    threads = [threading.Thread(target=claim, args=(Manager(Store(store.path)),)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [c["id"] for c in claims if c] == [job_id]
    job = jobs.get(store, job_id)
    assert job["status"] == "running" and job["pid"] is None  # claimed, its process not started yet
    Manager(store).refresh()  # another app's refresh leaves a job being started alone
    assert jobs.get(store, job_id)["status"] == "running"
    with pytest.raises(JobError, match="is starting"):
        Manager(store).stop(job_id)


def test_the_log_view_leaves_library_warnings_out_and_the_file_keeps_them(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "/usr/lib/python3.11/site-packages/transformers/training_args.py:1541: FutureWarning: `gradient_checkpointing`"
        ' is deprecated\n  warnings.warn(f"`{old}` is deprecated", FutureWarning)\n'
        "Tokenizing train dataset:  50%|#    | 2/4\rTokenizing train dataset: 100%|#####| 4/4\n"
        "/x/dataloader.py:759: UserWarning: 'pin_memory' argument is set as true\n  super().__init__(loader)\n"
        "{'loss': '0.6931', 'epoch': '0.5'}\n"
        'Traceback (most recent call last):\n  File "train.py", line 3, in <module>\nValueError: bad\n'
    )
    shown = jobs.log_tail({"folder": str(tmp_path)})
    assert shown.splitlines() == [
        "Tokenizing train dataset: 100%|#####| 4/4",
        "{'loss': '0.6931', 'epoch': '0.5'}",
        "Traceback (most recent call last):",
        '  File "train.py", line 3, in <module>',
        "ValueError: bad",
    ]
    assert "FutureWarning" in log.read_text()


def test_a_hub_model_that_cannot_load_is_refused_at_launch_not_a_minute_later(store, tmp_path, monkeypatch):
    import huggingface_hub

    from studio.core import hub
    from studio.data import scorers

    clear_cut_set(store)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    before = len(jobs.list_jobs(store))
    with pytest.raises(
        JobError, match="out of reach .* the base model 'nobody/no-such-model' is not in the local cache"
    ):
        launch.launch(store, "dpo", {**SETTINGS, "model": "nobody/no-such-model"}, prompt_set="polite")
    with pytest.raises(scorers.ScorerError, match="the classifier 'unitary/toxic-bert' is not in the local cache"):
        scorers.hub_toxicity("unitary/toxic-bert")
    assert len(jobs.list_jobs(store)) == before
    # In the local cache (laid out as the Hub client writes it), the same id is accepted offline.
    snapshot = tmp_path / "hub" / "models--nobody--cached-model" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    job = jobs.get(
        store, launch.launch(store, "dpo", {**SETTINGS, "model": "nobody/cached-model"}, prompt_set="polite")
    )
    assert job["base_model"] == "nobody/cached-model"


def test_the_train_tabs_summary_and_recommended_settings_come_from_the_engine(store, tmp_path):
    assert launch.describe_data(store, "dpo", None) == "Choose a prompt set, or give a file or a Hub data set id."
    assert (
        launch.describe_data(store, "dpo", "x", data=" a.jsonl ") == "Trains on a.jsonl (checked when the job starts)."
    )
    clear_cut_set(store)
    assert (
        launch.describe_data(store, "dpo", "polite", "best_worst")
        == "8 pairs from 8 rankings by 1 annotator(s) on 8 prompts (0 conflicting, 0 dropped)."
    )
    assert launch.describe_data(store, "sft", "polite", "best_worst").startswith("8 chosen answers from 8 rankings")
    assert launch.describe_data(store, "rloo", "polite").startswith("8 prompts of polite: the policy samples")
    assert launch.recommended(store, "dpo", "polite", "best_worst")["learning_rate"] == 5e-4  # few pairs, small model
    assert "8 pairs on a small model" in launch.recommended(store, "dpo", "polite", "best_worst")["why"]
    assert (
        launch.recommended(store, "dpo", "polite", model="meta-llama/Meta-Llama-3-8B-Instruct")["learning_rate"] == 5e-6
    )
    job = {"id": 7, "method": "rloo", "status": "running", "folder": str(tmp_path)}
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "max_steps": 5, "eta_s": 12.5}\n{"step": 3, "loss": 0.5}\n')
    assert jobs.progress_line(job) == "Job 7 (rloo): running · step 3 / 5 · ETA 12 s"
    assert jobs.rl_samples(job) is None  # nothing sampled yet
    (tmp_path / "samples.jsonl").write_text(
        "".join(
            json.dumps({"step": i, "reward_function": "f", "reward": 0.1 * i, "prompt": "p", "completion": "c"}) + "\n"
            for i in range(20)
        )
        + '{"step": 20, "rew'
    )  # the last line is being written
    assert [r["step"] for r in jobs.rl_samples(job)] == list(range(19, 8, -1))  # newest first, the partial left out
    assert jobs.rl_samples({**job, "method": "dpo"}) is None


def test_the_dpo_loss_is_named_in_the_table_lineage_and_card(store):
    clear_cut_set(store)
    plain = jobs.get(store, launch.launch(store, "dpo", {}, prompt_set="polite"))
    ipo = jobs.get(store, launch.launch(store, "dpo", {"loss_type": "ipo"}, prompt_set="polite"))
    assert jobs.method_label(plain) == "dpo" and jobs.method_label(ipo) == "dpo, ipo loss"
    assert jobs.lineage_line(store, ipo["id"]).startswith(f"Lineage: job {ipo['id']} (dpo, ipo loss, round 1")
