"""Online RL (TRL's RLOO) on the embedded model, and the rounds: lineage, next-round candidates, the Rank queue."""

import json
import math
from pathlib import Path

import pytest

from studio.core import jobs
from studio.data import candidates, ranking
from studio.data.prompts import get_prompts
from studio.inference import decode, models
from studio.inference.decode import GenerationParams, prompt_messages
from studio.training import launch, recipes
from studio.training.launch import Manager
from studio.training.train import run
from tests.helpers import QUESTIONS, SETTINGS, clear_cut_rows, clear_cut_set, new_job, wait_for

PLAIN = {k: v for k, v in SETTINGS.items() if k != "precompute_ref_log_probs"}  # settings every method has

RL = {
    **recipes.studio_defaults("rloo"),
    "max_completion_length": 24,
    "learning_rate": 2e-3,
    "save_steps": 1000,
    "gradient_checkpointing": False,
    "temperature": 0.8,
    "seed": 42,
}


def prompt_rows():
    return [{"prompt": [{"role": "user", "content": q}]} for q in QUESTIONS]


def lora_b_max(folder: Path) -> float:
    from safetensors.torch import load_file

    return max(
        t.abs().max().item() for k, t in load_file(folder / "adapter_model.safetensors").items() if "lora_B" in k
    )


@pytest.mark.slow  # the shared online-RL path (sampling, rewards, samples) runs by default in test_grpo.py
def test_rloo_raises_a_clear_reward_with_a_finite_kl(store):
    job_id = launch.create(
        store,
        "rloo",
        {**RL, "max_steps": 8, "reward_functions": "tests.helpers:polite_reward"},
        data_label="bank questions",
        data_rows=prompt_rows(),
        data_info={"prompts": 8},
    )
    result = run(Path(jobs.get(store, job_id)["folder"]) / "recipe.yaml")
    assert result["status"] == "finished" and result["step"] == 8
    rows = [m for m in jobs.metrics(jobs.get(store, job_id)) if "reward" in m]
    rewards = [m["reward"] for m in rows]
    assert len(rewards) == 8
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3, rewards
    assert all(math.isfinite(m["kl"]) for m in rows)
    assert all(m["generation_s"] > 0 for m in rows)
    assert lora_b_max(Path(result["adapter"])) > 0  # LoRA B starts at zero: the adapter learnt something
    samples = [json.loads(line) for line in (Path(result["adapter"]).parent / "samples.jsonl").read_text().splitlines()]
    assert samples and {"step", "prompt", "completion", "reward"} <= set(samples[0])


def test_rloo_with_a_reward_model_job_and_the_toxicity_penalty(store):
    # In this process (a job's own process adds about 8 s of imports each; the Manager runs RL jobs in the browser
    # test and in the stop/resume test).
    clear_cut_set(store)
    rows = prompt_rows()
    reward_job = launch.create(
        store,
        "reward",
        {**PLAIN, **recipes.studio_defaults("reward"), "max_steps": 3},
        data_label="polite",
        data_rows=clear_cut_rows(),
    )
    assert run(Path(jobs.get(store, reward_job)["folder"]) / "recipe.yaml")["status"] == "finished"
    adapter = Path(jobs.get(store, reward_job)["folder"]) / "adapter"
    rl_job = launch.create(
        store,
        "rloo",
        {
            **RL,
            "max_steps": 2,
            "reward_model": str(adapter),
            "reward_functions": "studio.training.rewards:toxicity_penalty",
        },
        data_label="bank questions",
        data_rows=rows,
    )
    assert run(Path(jobs.get(store, rl_job)["folder"]) / "recipe.yaml")["status"] == "finished"
    metrics = [m for m in jobs.metrics(jobs.get(store, rl_job)) if "reward" in m]
    assert len(metrics) == 2
    assert all(
        math.isfinite(m["rewards/reward_model/mean"]) and -1 <= m["rewards/toxicity_penalty/mean"] <= 0 for m in metrics
    )
    # Its alignment report will say that a gain by this reward model is what the job was trained to raise.
    from studio.data import scorers
    from studio.evaluation import report

    said = f"reward model job {reward_job} was the job's reward"
    assert report._optimised(store, rl_job) == {scorers.reward_key(reward_job): said}

    bad = launch.create(store, "rloo", {**RL, "max_steps": 1}, data_label="x", data_rows=rows)
    with pytest.raises(recipes.RecipeError, match="online RL needs a reward"):
        run(Path(jobs.get(store, bad)["folder"]) / "recipe.yaml")


def test_rounds_next_candidates_from_the_adapter_reach_the_rank_queue(store):
    clear_cut_set(store)  # round 1: anna ranked the base model's candidates of 8 prompts
    assert ranking.queue(store, "polite", "anna") == []
    first = new_job(store, 3)
    wait_for(lambda: jobs.get(store, first)["status"] == "finished", Manager(store))
    assert jobs.get(store, first)["round"] == 1
    adapter = str(jobs.adapter_folder(jobs.get(store, first)))

    result = candidates.next_round_candidates(store, first, "polite", GenerationParams(k=1, max_new_tokens=12), limit=3)
    assert result.responses_added == 3
    new = store.query("SELECT prompt_id, model, adapter FROM responses WHERE adapter IS NOT NULL")
    assert [(r["model"], r["adapter"]) for r in new] == [("embedded", adapter)] * 3
    # The adapter answered folded into copies of the weights (a CPU): the base's weights are exactly as they were.
    import torch

    loaded = models.load("embedded")
    names = models.with_adapters(loaded, [adapter])  # loaded already by the round above: the same name
    base = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if "lora_" not in n}
    assert decode.sample(
        loaded, get_prompts(store, "polite")[:1], GenerationParams(k=2, max_new_tokens=6), None, names
    )[0][0]
    assert all(torch.equal(p, base[n]) for n, p in loaded.model.named_parameters() if "lora_" not in n)
    # Those three prompts are back in anna's queue, with the earlier candidates and the new one to rank together.
    polite = get_prompts(store, "polite")
    assert sorted(ranking.queue(store, "polite", "anna")) == sorted(p["id"] for p in polite[:3])
    task = ranking.next_task(store, "polite", "anna")
    assert len(task.response_ids) == 3
    ranking.submit(store, "anna", task.prompt_id, [[task.response_ids[0]], task.response_ids[1:]])
    assert len(ranking.queue(store, "polite", "anna")) == 2
    assert ranking.progress(store, "polite", "anna")["mine"] == 6

    # Round 2 continues from round 1's adapter: parent, round and data are recorded, and the lineage reads back.
    from studio.data.preferences import training_snapshot

    rows, info = training_snapshot(store, "polite")
    second = launch.create(
        store,
        "dpo",
        {**SETTINGS, "max_steps": 1, "continue_from": adapter},
        data_label="polite r2",
        data_rows=rows,
        data_info=info,
        parent_job_id=first,
    )
    assert jobs.get(store, second)["round"] == 2
    assert [j["id"] for j in jobs.lineage(store, second)] == [second, first]
    # A job from the base that learns from rankings of the round-1 adapter's candidates is round 2 as well.
    third = launch.create(
        store,
        "sft",
        {**PLAIN, **recipes.studio_defaults("sft"), "max_steps": 1},
        data_label="polite",
        data_rows=rows,
        data_info=info,
    )
    assert jobs.get(store, third)["round"] == 2
    assert prompt_messages(polite[0])[-1]["content"] == QUESTIONS[0]


@pytest.mark.slow  # 30 s here; stop and resume go through the same Manager and checkpoints as DPO's (test_jobs)
def test_an_rloo_job_stops_with_a_checkpoint_and_resumes(store):
    job_id = launch.create(
        store,
        "rloo",
        {**RL, "max_steps": 5, "max_completion_length": 12, "reward_functions": "tests.helpers:polite_reward"},
        data_label="bank questions",
        data_rows=prompt_rows(),
    )
    manager = Manager(store)
    rewarded = lambda: [m["step"] for m in jobs.metrics(jobs.get(store, job_id)) if "reward" in m]  # noqa: E731
    wait_for(lambda: len(rewarded()) >= 2, manager)
    manager.stop(job_id)
    wait_for(lambda: jobs.get(store, job_id)["status"] not in ("running", "stopping"), manager)
    job = jobs.get(store, job_id)
    stopped_at = max(rewarded())
    assert job["status"] == "stopped" and stopped_at < 5
    assert (Path(job["folder"]) / f"checkpoint-{stopped_at}").is_dir()
    manager.resume(job_id)
    wait_for(lambda: jobs.get(store, job_id)["status"] not in ("queued", "running"), manager)
    assert jobs.get(store, job_id)["status"] == "finished", jobs.get(store, job_id)["error"]
    assert rewarded() == [1, 2, 3, 4, 5]
