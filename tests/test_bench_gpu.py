"""bench/gpu.py --tiny: every GPU check's code path (the studio's DPO job through `python -m studio train` with the
shipped Llama 3 recipe, TRL's DPOTrainer with its defaults, batched generation against the naive loop, the Compare
tab's mixed-adapter batch against two copies, GRPO with the shipped recipe's rewards) on a tiny Llama on the CPU, so
that the bench still runs when a task gets a GPU machine. Outcomes only: no timing is asserted."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_tiny_runs_every_section(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--workdir", str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "OUT": str(out)},
    )
    lines = run.stdout.splitlines()
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    assert not [line for line in lines if "FAILED" in line], run.stdout[-5000:]
    for start in (
        "[0 versions]",
        "[0 requirements]",
        "[0 imports]",
        "[0 model]",
        "[0 limits]",
        "[1 qlora] skipped",
        "[2 lora] studio DPO",
        "[2 lora] TRL DPOTrainer",
        "[2 lora] ratio studio / TRL",
        "[3 generate] studio generate_candidates vs naive",
        "[3 generate] studio vs decode bound",
        "[4 compare] one copy, mixed-adapter batch vs two copies",
        "[5 handover] app model handed over to job 1 | ",
        "[6 vllm] ",
        "[7 grpo] studio GRPO (python -m studio train, shipped GRPO recipe",
        "[8 liger] skipped on CPU",
        "[done]",
    ):
        assert any(line.startswith(start) for line in lines), f"no line {start!r} in:\n{run.stdout[-5000:]}"
    imports = next(line for line in lines if line.startswith("[0 imports]"))
    assert "none of gradio, profanity_check, gguf imported" in imports
    done = next(line for line in lines if line.startswith("[done]"))
    assert "failed: none" in done and "skipped: [1 qlora], [8 liger]" in done
    # The training children ran to the end, and the probe read their peak memory and times.
    for job in ("studio-lora", "trl-defaults", "studio-grpo"):
        assert (work / job / "adapter" / "adapter_config.json").is_file(), job
        assert (work / job / "probe.json").is_file(), job
    assert all(
        "peak " in line and " tokens/s" in line
        for line in lines
        if line.startswith("[2 lora] ") and "ratio" not in line
    )
    grpo = next(line for line in lines if line.startswith("[7 grpo]"))
    assert " s per step, " in grpo and " answers/s, " in grpo and "Liger kernels off" in grpo
    # The studio's candidates were saved as the Generate tab saves them: 4 prompts x k=4 (and the warm-up's 2).
    with sqlite3.connect(work / "generate.db") as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 4 * 4 + 2
    # Every line went to $OUT/gpu_bench.txt as well, in order.
    written = (out / "gpu_bench.txt").read_text().splitlines()
    assert written == [line for line in lines if line in set(written)] and written[-1].startswith("[done]")
