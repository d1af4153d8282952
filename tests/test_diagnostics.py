"""Each diagnostic fires on a constructed metrics file and stays quiet on a healthy one."""

import json
import math

from studio.core import jobs
from studio.training.diagnostics import diagnose


def run(tmp_path, rows):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return jobs.metrics({"folder": str(tmp_path)})


def dpo_rows(
    n=12,
    loss=lambda i: 0.69 - 0.03 * i,
    accuracy=lambda i: min(0.5 + 0.04 * i, 0.9),
    chosen=lambda i: 0.01 * i,
    margin=lambda i: 0.05 * i,
):
    return [
        {
            "step": i,
            "loss": loss(i),
            "rewards/accuracies": accuracy(i),
            "rewards/chosen": chosen(i),
            "rewards/margins": margin(i),
        }
        for i in range(1, n + 1)
    ]


def test_a_healthy_dpo_run_and_a_healthy_rl_run_get_no_finding(tmp_path):
    assert diagnose("dpo", run(tmp_path, dpo_rows()), pairs=300) == []
    rl = [{"step": i, "loss": 0.1, "kl": 0.02 + 0.001 * i, "frac_reward_zero_std": 0.1} for i in range(1, 13)]
    assert diagnose("rloo", run(tmp_path, rl)) == []


def test_each_finding_fires_on_its_case(tmp_path):
    flat = diagnose("dpo", run(tmp_path, dpo_rows(loss=lambda i: math.log(2) + 0.001)), pairs=300)
    assert any("stays at 0.693" in f for f in flat)
    memorised = diagnose("dpo", run(tmp_path, dpo_rows(accuracy=lambda i: 1.0 if i >= 3 else 0.5)), pairs=30)
    assert any("accuracy reached 1.0 within 3 steps on 30 pairs: likely memorising" in f for f in memorised)
    assert not any(
        "memorising" in f
        for f in diagnose("dpo", run(tmp_path, dpo_rows(accuracy=lambda i: 1.0 if i >= 3 else 0.5)), pairs=5000)
    )  # plenty of pairs: not a worry
    falling = diagnose("dpo", run(tmp_path, dpo_rows(chosen=lambda i: -0.1 * i)), pairs=300)
    assert any("normal for DPO" in f for f in falling)
    rising = diagnose("sft", run(tmp_path, [{"step": i, "loss": 1.0 + 0.1 * i} for i in range(1, 13)]))
    assert any("The loss is rising" in f for f in rising)
    broken = diagnose("dpo", run(tmp_path, dpo_rows()[:3] + [{"step": 4, "loss": float("nan")}]))
    assert broken and "not a number" in broken[0]
    kl = diagnose("rloo", run(tmp_path, [{"step": i, "loss": 0.1, "kl": 0.02 * i * i} for i in range(1, 13)]))
    assert any("KL to the starting model is rising fast" in f for f in kl)
    same = diagnose("rloo", run(tmp_path, [{"step": i, "loss": 0.1, "frac_reward_zero_std": 1.0} for i in range(1, 5)]))
    assert any("same reward" in f for f in same)
    cut = diagnose("grpo", run(tmp_path, [{"step": i, "completions/clipped_ratio": 0.75} for i in range(1, 5)]))
    assert any("75% of the sampled answers are cut at the max answer length" in f for f in cut)
