"""GRPO (TRL's GRPOTrainer) on the embedded model against reward functions a team writes and sees: the built-in
bank_math set's reference answers reach the verifiable rewards, each function's reward is logged per step, the
samples and the card name them; a reward function that raises or miscounts fails the job naming it."""

import json
from pathlib import Path

import pytest

from studio.core import jobs
from studio.data.prompts import get_prompts, import_prompt_file, install_builtin_sets
from studio.shipping import publish
from studio.training import launch, recipes, rewards
from studio.training.train import main, run

GRPO = {
    "max_completion_length": 24,
    "learning_rate": 1e-4,
    "save_steps": 1000,
    "gradient_checkpointing": False,
    "num_generations": 4,
    "per_device_train_batch_size": 4,
    "seed": 42,
}
CHECKS = ["studio.training.rewards:correct_number", "studio.training.rewards:answer_line"]


def wrong_count(prompts, completions, **kwargs):
    return [1.0]


def raises(prompts, completions, **kwargs):
    raise KeyError("score")


def test_grpo_trains_on_reference_answers_with_two_weighted_rewards(store):
    install_builtin_sets(store)
    prompts = get_prompts(store, "bank_math")
    assert len(prompts) == 64 and all(p["answer"] for p in prompts)
    job_id = launch.launch(
        store,
        "grpo",
        {**GRPO, "max_steps": 2, "reward_weights": "1, 0.5", "loss_type": "dapo"},
        prompt_set="bank_math",
        reward_functions=CHECKS,
    )
    job = jobs.get(store, job_id)
    _, recipe = recipes.load(Path(job["folder"]) / "recipe.yaml")
    assert recipe.reward_weights == [1.0, 0.5] and recipe.loss_type == "dapo" and recipe.beta == 0.0  # TRL's beta
    result = run(Path(job["folder"]) / "recipe.yaml")
    assert result["status"] == "finished" and result["step"] == 2
    assert (Path(result["adapter"]) / "adapter_model.safetensors").is_file()
    logged = [m for m in jobs.metrics(jobs.get(store, job_id)) if "reward" in m]
    assert len(logged) == 2
    for row in logged:  # each function's own curve, and what GRPO needs to learn: spread within groups
        assert {"rewards/correct_number/mean", "rewards/answer_line/mean", "frac_reward_zero_std"} <= set(row)
        assert 0 <= row["rewards/correct_number/mean"] <= 1
    samples = [json.loads(line) for line in (Path(job["folder"]) / "samples.jsonl").read_text().splitlines()]
    assert {s["reward_function"] for s in samples} == {"correct_number", "answer_line"}
    with store.tx() as db:  # what the job manager records when the process ends (tested in test_jobs)
        db.execute("UPDATE jobs SET status = 'finished' WHERE id = ?", (job_id,))
    label = "grpo, rewards: correct_number x1, answer_line x0.5"
    assert jobs.method_label(jobs.get(store, job_id)) == label
    assert label in jobs.lineage_line(store, job_id)
    assert label in publish.model_card(store, job_id)


@pytest.mark.parametrize(
    ("function", "said"),
    [
        ("tests.test_grpo:raises", "The reward function raises failed: KeyError"),
        ("tests.test_grpo:wrong_count", "The reward function wrong_count returned 1 values for 4 answers"),
    ],
)
def test_a_reward_function_that_fails_fails_the_job_naming_it(store, function, said):
    install_builtin_sets(store)
    job_id = launch.launch(store, "grpo", {**GRPO, "max_steps": 1}, prompt_set="bank_math", reward_functions=[function])
    folder = Path(jobs.get(store, job_id)["folder"])
    assert main([str(folder / "recipe.yaml")]) == 1
    assert said in json.loads((folder / "result.json").read_text())["error"]


def test_reward_weights_must_match_the_rewards(store):
    install_builtin_sets(store)
    for weights, said in (("1,1,1", "3 reward weights for 2 rewards"), ("one", "numbers separated by commas")):
        with pytest.raises(jobs.JobError, match=said):
            launch.launch(
                store, "grpo", {**GRPO, "reward_weights": weights}, prompt_set="bank_math", reward_functions=CHECKS
            )


def test_checks_against_reference_answers_need_a_set_that_has_them(store):
    install_builtin_sets(store)
    with pytest.raises(jobs.JobError, match="correct_number compare answers with reference answers, and 'bank' has"):
        launch.launch(store, "grpo", GRPO, prompt_set="bank", reward_functions=CHECKS)


def test_verifiable_rewards_read_the_final_answer(tmp_path, store):
    answers = ["So 3 x 4 = 12.\nAnswer: 12", "The answer is $1,200.00.", "To answer that: 13", "", '{"a": 1}']
    references = ["12", "1200", "12", "12", None]
    assert rewards.correct_number(None, answers, answer=references) == [1.0, 1.0, 0.0, 0.0, None]
    assert rewards.exact_answer(None, answers[:2], answer=["12", "1200"]) == [1.0, 0.0]
    assert rewards.answer_line(None, answers) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert rewards.matches_pattern(None, ["freeze your card now"], answer=["freeze.*card"]) == [1.0]
    schema = json.dumps({"type": "object", "required": ["a"]})
    assert rewards.valid_json(None, ['{"a": 1}', '{"b": 1}', "no"], answer=[schema] * 3) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="not a JSON schema"):
        rewards.valid_json(None, ['{"a": 1}'], answer=['{"type": 5}'])
    # An upload's answer column becomes each prompt's reference (a number in JSONL too); rows without one have none.
    upload = tmp_path / "sums.jsonl"
    upload.write_text('{"prompt": "2+2?", "answer": 4}\n{"prompt": "Hi"}\n')
    name, parsed = import_prompt_file(store, upload)
    assert "1 with a reference answer" in parsed.summary()
    assert [p["answer"] for p in get_prompts(store, name)] == ["4", None]


def test_the_length_penalty_is_trl_s_own_sized_from_the_recipe(tmp_path):
    recipe = recipes.build(
        "grpo", {"data": "x", "max_completion_length": 8, "reward_functions": rewards.REWARDS + rewards.OVERLONG}
    )
    (penalty,) = rewards.build(recipe, tmp_path)
    assert penalty.__name__ == "soft_overlong_punishment_reward"  # TRL's DAPO helper, as TRL logs it
    assert penalty(["q"] * 3, ["a", "b", "c"], completion_ids=[[1] * 6, [1] * 7, [1] * 8]) == [0.0, -0.5, -1.0]


def test_the_train_tab_offers_grpo_with_trl_s_losses():
    assert ("dapo: TRL's default, tokens of the whole batch weigh alike (no length bias)", "dapo") in (
        recipes.loss_choices("grpo")
    )
    assert recipes.loss_choices("dpo")[0][1] == "sigmoid"
    settings = recipes.recommended("grpo", "embedded", 64)
    assert settings["loss_type"] == "dapo" and settings["beta"] == 0.0
