import json

import pytest
import torch

from studio.inference.decode import adapter_folded_in
from studio.inference.models import embedded_folder
from studio.training import recipes, train
from tests.helpers import POLITE, QUESTIONS, RUDE, clear_cut_rows

FAST = {
    "per_device_train_batch_size": 2,
    "learning_rate": 5e-4,
    "max_length": 128,
    "save_steps": 1000,
    "gradient_checkpointing": False,
    **recipes.studio_defaults("dpo"),
}


def run(tmp_path, method, steps, **settings):
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in clear_cut_rows()) + "\n")
    settings = {"data": str(data), "output_dir": str(tmp_path), "max_steps": steps, **FAST, **settings}
    if method != "dpo":
        settings.pop("precompute_ref_log_probs")
    recipes.save(tmp_path / "recipe.yaml", method, settings)
    result = train.run(tmp_path / "recipe.yaml")
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return result, [m for m in metrics if "loss" in m]


def test_dpo_raises_the_margin_and_changes_the_adapter(tmp_path, monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl.trainer import dpo_trainer

    def hashed(module):
        raise AssertionError("TRL hashed every weight of the model to name its reference cache")

    monkeypatch.setattr(dpo_trainer, "hash_module", hashed)  # 79 s for an 8B model on an H200
    result, metrics = run(tmp_path, "dpo", 6)
    assert result["status"] == "finished" and result["step"] == 6
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    # The adapter starts as a no-op: the first margin is the reference pass's rounding against the policy's. The
    # reference reads each prompt once (shared_prompt_logps), the policy whole rows: in float32 they agree to 1e-5
    # per row; in bf16 (a CPU with AMX) to about 0.1 nats, a margin of 0.01 at beta 0.1.
    from studio.inference.models import cpu_bf16

    assert metrics[0]["rewards/margins"] == pytest.approx(0, abs=0.03 if cpu_bf16() else 1e-4)
    assert metrics[-1]["rewards/margins"] > 1.0 and metrics[-1]["rewards/accuracies"] == 1.0
    assert all("eta_s" in m and "tokens_per_s" in m for m in metrics[1:])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(embedded_folder()), result["adapter"])
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) > 0 for p in lora_b)  # LoRA B starts at zero


def test_sft_lowers_the_loss(tmp_path):
    result, metrics = run(tmp_path, "sft", 8)
    assert result["status"] == "finished"
    assert (metrics[-1]["loss"] + metrics[-2]["loss"]) / 2 < metrics[0]["loss"] * 0.8


def test_reward_model_scores_chosen_above_rejected(tmp_path):
    from studio.data.scorers import RewardScorer

    result, metrics = run(tmp_path, "reward", 10)
    assert result["status"] == "finished"
    scorer = RewardScorer(result["adapter"])
    for question in QUESTIONS:
        polite, rude = scorer.score({"text": question, "system": ""}, [POLITE, RUDE])
        assert polite > rude


def test_group_by_length_keeps_every_row_and_groups_batches():
    from datasets import Dataset

    dataset = Dataset.from_list([{"text": "x" * n} for n in [1, 50, 2, 51, 3, 52, 4, 53]])
    grouped = train.group_by_length(dataset, batch_size=2, seed=0)
    lengths = [len(r["text"]) for r in grouped]
    assert sorted(lengths) == sorted(len(r["text"]) for r in dataset)
    assert all(abs(lengths[i] - lengths[i + 1]) < 10 for i in range(0, 8, 2))


@pytest.mark.parametrize(
    "text, message",
    [
        ("method: dpo\ndata: x.jsonl\nbogus: 1\n", "Unknown setting\\(s\\) for dpo: bogus"),
        ("method: ppo\ndata: x.jsonl\n", "'ppo' is not one of dpo, sft, reward"),
        ("data: x.jsonl\n", "a mapping with a 'method:' key"),
        ("method: dpo\n", "data: say what to train on"),
        ("method: dpo\ndata: x.jsonl\nlearning_rate: fast\n", "learning_rate: expected a number, got 'fast'"),
        (
            "method: [dpo]\ndata: x.jsonl\n",
            "method: expected one name \\(dpo, sft, reward, kto, rloo, grpo\\), got \\['dpo'\\]",
        ),
        ("method: dpo\ndata: [x.jsonl]\n", "data: expected text, got \\['x.jsonl'\\]"),
        ("method: dpo\ndata: x.jsonl\nlr_scheduler_type: [linear]\n", "lr_scheduler_type: expected text, got"),
        ("method: dpo\ndata: x.jsonl\nmax_steps: 2.5\n", "max_steps: expected a whole number, got 2.5"),
        ("method: dpo\ndata: x.jsonl\nbf16: 'yes'\n", "bf16: expected true or false, got 'yes'"),
        ("method: dpo\ndata: x.jsonl\nloss_type: [3]\n", "loss_type: expected text or a list of them, got \\[3\\]"),
        (
            "method: dpo\ndata: x.jsonl\nmodel_init_kwargs: 5\n",
            "model_init_kwargs: expected a mapping \\(key: value\\) or text",
        ),
        ("method: dpo\ndata: [unclosed\n", "is not valid YAML"),
        ("method: dpo\ndata: /nonexistent/prefs.jsonl\n", "data: could not load '/nonexistent/prefs.jsonl'"),
        (
            "method: dpo\ndata: x.jsonl\nper_device_train_batch_size: 0\n",
            "per_device_train_batch_size must be 1 or more",
        ),
        ("method: dpo\ndata: x.jsonl\nlearning_rate: -1.0e-4\n", "learning_rate must be above 0"),
        (
            "method: dpo\ndata: x.jsonl\noutput_dir: /tmp/elsewhere\n",
            "output_dir: /tmp/elsewhere is outside the recipe",
        ),
        ("method: dpo\ndata: x.jsonl\noutput_dir: ../escape\n", "output_dir: ../escape is outside the recipe"),
        pytest.param(
            "method: dpo\ndata: x.jsonl\nuse_liger_kernel: true\n",
            "use_liger_kernel: Liger's kernels are Triton kernels for a CUDA GPU, and this machine has none; set "
            "use_liger_kernel: false",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of a machine without a GPU"),
        ),
        (
            "method: dpo\ndata: x.jsonl\nuse_liger_kernel: true\nuse_cpu: true\n",
            "use_liger_kernel: Liger's kernels run on a GPU, and use_cpu keeps this job on the CPU",
        ),
    ],
)
def test_malformed_recipes_are_refused_with_a_message(tmp_path, text, message, capsys):
    (tmp_path / "recipe.yaml").write_text(text)
    assert train.main([str(tmp_path / "recipe.yaml")]) == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed"
    import re

    assert re.search(message, result["error"]), result["error"]


@pytest.mark.parametrize(
    "name", ["embedded-cpu-dpo.yaml", "llama3-8b-qlora-dpo.yaml", "embedded-cpu-rloo.yaml", "embedded-cpu-grpo.yaml"]
)
def test_shipped_example_recipes_load(name):
    from pathlib import Path

    method, recipe = recipes.load(Path(__file__).resolve().parents[1] / "assets" / "recipes" / name)
    assert recipe.lora_target_modules == "all-linear" and recipe.load_in_4bit == name.startswith("llama3")
    if method == "rloo":
        assert recipe.reward_model and recipe.reward_functions == "studio.training.rewards:toxicity_penalty"
        assert recipe.reward_weights == [1.0, 2.0] and recipe.beta == 0.05
    elif method == "grpo":  # in step with the Train tab's GRPO settings for the embedded model
        assert recipe.reward_weights == [1.0, 0.5] and recipe.loss_type == "dapo" and recipe.beta == 0.0
        assert recipe.learning_rate == recipes.recommended("grpo", "embedded", 64)["learning_rate"]
    else:
        assert method == "dpo" and recipe.precompute_ref_log_probs


@pytest.mark.parametrize(
    "name, model, rows",
    [
        ("embedded-cpu-dpo.yaml", "embedded", 60),
        ("llama3-8b-qlora-dpo.yaml", "meta-llama/Meta-Llama-3-8B-Instruct", 5000),
    ],
)
def test_shipped_recipes_keep_in_step_with_the_tabs_recommended_settings(name, model, rows):
    from pathlib import Path

    _, recipe = recipes.load(Path(__file__).resolve().parents[1] / "assets" / "recipes" / name)
    wanted = recipes.recommended("dpo", model, rows)
    for key in (
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "beta",
    ):
        assert getattr(recipe, key) == wanted[key], key
    assert recipe.loss_type == [wanted["loss_type"]]
    assert recipe.gradient_checkpointing is True
    if model == "embedded":  # on this CPU every other layer; on a GPU the tab checkpoints every layer
        assert recipe.checkpoint_share == wanted["checkpoint_share"] == 0.5


@pytest.mark.slow  # about 30 s each here; `pytest -m slow` runs them (the sigmoid default runs in the DPO test)
@pytest.mark.parametrize("loss", [k for k in recipes.LOSS_TYPES if k != "sigmoid"])
def test_each_dpo_loss_offered_on_the_train_tab_runs_a_step(tmp_path, loss):
    result, metrics = run(tmp_path, "dpo", 1, loss_type=[loss], max_length=64)
    assert result["status"] == "finished" and len(metrics) == 1 and metrics[0]["loss"] == metrics[0]["loss"]


def test_the_compact_head_gives_a_plain_forward_s_log_probs_and_gradient():
    """The studio's CPU head (compact_lm_head: only the answer tokens through the LM head, the statistics asked
    for and no others) against a plain padded forward."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    tokenizer = AutoTokenizer.from_pretrained(embedded_folder())
    batch = tokenizer(
        [POLITE, RUDE, "Hi.", QUESTIONS[0] + " " + POLITE], return_tensors="pt", padding=True, padding_side="right"
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :2] = -100  # a "prompt" that does not count

    def run_head(compact):
        model = AutoModelForCausalLM.from_pretrained(embedded_folder())
        if compact:
            add_fused_lm_head(model, outputs=("log_probs", "entropy"))
            train.compact_lm_head(model, outputs=("log_probs", "entropy"))
            out = model(**batch, labels=labels, fused_lm_head=True)
            assert out.entropy is not None and out.mean_logits is None  # only what was asked for
            log_probs = out.log_probs
        else:
            logits = model(**batch).logits[:, :-1]
            log_probs = logits.log_softmax(-1).gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
            log_probs = log_probs * (labels[:, 1:] != -100)
        log_probs.sum().backward()
        return log_probs.detach(), model.model.layers[3].mlp.down_proj.weight.grad

    compact, compact_grad = run_head(True)
    plain, plain_grad = run_head(False)
    assert torch.allclose(compact, plain, atol=2e-4), (compact - plain).abs().max()
    assert torch.allclose(compact_grad, plain_grad, atol=1e-4, rtol=1e-3)


def test_the_shared_prompt_reference_pass_gives_a_plain_forward_s_log_probs():
    """shared_prompt_logps (each pair's prompt read once, both answers continuing from its cache) against a plain
    forward of TRL's collated batch: TRL's DataCollatorForPreference builds the batch from rows as its documentation
    shows them (prompt_ids, chosen_ids, rejected_ids)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    tokenizer = AutoTokenizer.from_pretrained(embedded_folder())
    model = AutoModelForCausalLM.from_pretrained(embedded_folder()).eval()

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def turn(question):
        return ids(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")

    rows = [
        {
            "prompt_ids": turn(QUESTIONS[0]),
            "chosen_ids": ids(POLITE + "<|im_end|>"),
            "rejected_ids": ids(RUDE + "<|im_end|>"),
        },  # prompts of different lengths, answers longer and shorter
        {
            "prompt_ids": turn("Hi"),
            "chosen_ids": ids("Hello! How can I help?<|im_end|>"),
            "rejected_ids": ids(RUDE + " " + RUDE + "<|im_end|>"),
        },
    ]
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(rows)
    with torch.no_grad():
        shared = train.shared_prompt_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    picked = logits.log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    plain = (picked * batch["completion_mask"][:, 1:]).sum(1)
    assert torch.allclose(shared, plain, atol=1e-3), (shared - plain).abs().max()
    # A pair whose two rows do not start with the same prompt is left to TRL's own computation.
    cut = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=12, truncation_mode="keep_end")
    short = cut(rows)
    assert (
        train.shared_prompt_logps(model, short["input_ids"], short["attention_mask"], short["completion_mask"]) is None
    )


def test_partial_checkpointing_leaves_the_share_of_layers_checkpointed():
    """checkpoint_share: after the Trainer turns checkpointing on for every layer, the callback keeps it on for the
    share asked, spread evenly (transformers' per-layer flag)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_folder())
    layers = model.model.layers
    for share, expected in ((0.5, [i % 2 == 1 for i in range(len(layers))]), (1.0, [True] * len(layers))):
        model.gradient_checkpointing_enable()  # what the Trainer does when training begins
        train._partial_checkpointing(share).on_train_begin(None, None, None, model=model)
        assert [layer.gradient_checkpointing for layer in layers] == expected, share
    model.gradient_checkpointing_enable()
    train._partial_checkpointing(1 / 3).on_train_begin(None, None, None, model=model)
    assert sum(layer.gradient_checkpointing for layer in layers) == len(layers) // 3
    with pytest.raises(recipes.RecipeError, match="checkpoint_share must be above 0"):
        recipes.build("dpo", {"data": "x.jsonl", "checkpoint_share": 0.0})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the detection on a machine without a GPU")
def test_liger_kernels_are_on_by_default_where_a_gpu_can_run_them_and_off_here(monkeypatch):
    """Detected like bf16, where the job trains: on for the methods whose TRL trainer keeps its own fused LM head,
    when CUDA is there and liger-kernel is installed; a recipe's own setting wins. The GPU is faked for the two
    checks (transformers' own Trainer makes the second); bench/gpu.py measures the kernels on a real one."""
    import torch
    import transformers.utils

    assert recipes.build("dpo", {"data": "x.jsonl"}).use_liger_kernel is torch.cuda.is_available() is False
    for cuda in (False, True):
        for installed in (False, True):
            monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
            monkeypatch.setattr(transformers.utils, "is_liger_kernel_available", lambda: installed)
            assert recipes.liger_available() is (cuda and installed)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # TrainingArguments must not see a fake GPU
    monkeypatch.setattr(recipes, "liger_available", lambda: True)
    for method in ("dpo", "sft", "grpo", "rloo"):
        assert recipes.build(method, {"data": "x.jsonl"}).use_liger_kernel is True, method
    assert recipes.build("reward", {"data": "x.jsonl"}).use_liger_kernel is False  # TRL's RewardTrainer: not handled
    assert recipes.build("dpo", {"data": "x.jsonl", "use_cpu": True}).use_liger_kernel is False
    assert recipes.build("dpo", {"data": "x.jsonl", "use_liger_kernel": False}).use_liger_kernel is False
    asked = recipes.build("dpo", {"data": "x.jsonl", "use_liger_kernel": True})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # where the job trains: a GPU ...
    recipes.check_liger(asked)  # ... with liger-kernel: nothing to refuse
    monkeypatch.setattr(transformers.utils, "is_liger_kernel_available", lambda: False)
    with pytest.raises(recipes.RecipeError, match="liger-kernel is not installed here; install it"):
        recipes.check_liger(asked)


def test_sampling_with_the_adapter_folded_in_matches_peft_and_leaves_the_base_untouched():
    """Online RL samples on a CPU with each LoRA layer's weight folded into a copy (decode.adapter_folded_in): the
    same next-token logits as PEFT's adapter path, and the base's own tensors back, unchanged, afterwards."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(embedded_folder()),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False),
    ).eval()
    batch = AutoTokenizer.from_pretrained(embedded_folder())([POLITE, RUDE], return_tensors="pt", padding=True)
    base = {name: (p, p.data.clone()) for name, p in model.named_parameters() if "base_layer" in name}
    with torch.no_grad():
        adapted = model(**batch).logits
        plain = None
        with model.disable_adapter():
            plain = model(**batch).logits
        with adapter_folded_in(model):
            folded = model(**batch).logits
    assert not torch.allclose(adapted, plain, atol=1e-2)  # the adapter changes the answers
    assert torch.allclose(folded, adapted, atol=2e-3), (folded - adapted).abs().max()
    for name, (parameter, before) in base.items():
        assert dict(model.named_parameters())[name] is parameter and torch.equal(parameter.data, before), name
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, adapted)  # the adapter is on again
