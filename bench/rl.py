"""One online RL step (RLOO, or GRPO with --method grpo) on the embedded model: 1 prompt x 4 sampled answers x 24
new tokens, LoRA r=16 on all linear layers, the toxicity penalty as the reward.

    python bench/rl.py [--steps 8] [--method rloo|grpo]

The same job runs three times, each in its own process with the same data and seed: TRL's trainer (RLOOTrainer or
GRPOTrainer) at its defaults (transformers' generate() for sampling, TRL's fused LM head) in float32, what the studio
ran before this bench was written (the baseline); the same TRL trainer in the studio's precision (like for like); and
the studio's job as it runs now: its decode loop for sampling, the compact LM head on a CPU, and the precision the
studio picks here (bf16 on a GPU or a CPU with AMX). Prints the median step time (the first step, which warms up,
left out), the time from the start of a step to its rewards (sampling, and the log-probabilities TRL computes before
rewarding), and the ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_side(out: Path, steps: int, stock: bool, method: str) -> dict:
    from studio.training import recipes, train

    if stock:  # TRL's trainer as it comes
        train._with_studio_sampling = train._with_compact_head = lambda trainer_class, *module: trainer_class
    from studio.data.prompts import ASSETS, parse_prompt_file

    questions = [text for text, _ in parse_prompt_file(ASSETS / "bank.jsonl").rows][:steps]
    (out / "prompts.jsonl").write_text(
        "\n".join(json.dumps({"prompt": [{"role": "user", "content": q}]}) for q in questions) + "\n"
    )
    recipes.save(
        out / "recipe.yaml",
        method,
        {
            **recipes.studio_defaults(method),
            "data": str(out / "prompts.jsonl"),
            "model": "embedded",
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_target_modules": "all-linear",
            "output_dir": str(out),
            "max_steps": steps,
            "per_device_train_batch_size": 4,
            "num_generations": 4,
            "max_completion_length": 24,
            "reward_functions": "studio.training.rewards:toxicity_penalty",
            "save_strategy": "no",
            "seed": 0,
            "gradient_checkpointing": False,
        },
    )
    train.run(out / "recipe.yaml")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "generation_s" in r]
    times = [b["time"] - a["time"] for a, b in zip(rows, rows[1:])]
    return {
        "step_s": statistics.median(times),
        "generation_s": statistics.median(r["generation_s"] for r in rows[1:]),
        "bf16": recipes.build(method, {**recipes.studio_defaults(method), "data": "x"}).bf16,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--method", choices=["rloo", "grpo"], default="rloo")
    parser.add_argument("--side", choices=["stock", "studio"], help=argparse.SUPPRESS)  # one side, in a child
    args = parser.parse_args()
    if args.side:
        with tempfile.TemporaryDirectory() as out:
            print("RESULT " + json.dumps(run_side(Path(out), args.steps, args.side == "stock", args.method)))
        return
    from studio.inference.models import embedded_folder

    embedded_folder()  # convert once, outside the timings
    results = {}
    # TRL in float32 is what the studio ran before (the baseline); TRL in the studio's precision isolates what
    # the studio's sampling and LM head add (loaded as the studio loads: bf16 with eager attention on AMX).
    sides = (
        ("TRL, float32", "stock", {"STUDIO_CPU_BF16": "0"}),
        ("TRL, studio's", "stock", {}),
        ("studio", "studio", {}),
    )
    for name, side, env in sides:
        child = subprocess.run(
            [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--method", args.method],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        line = next((x for x in child.stdout.splitlines() if x.startswith("RESULT ")), None)
        if child.returncode or line is None:
            sys.exit(f"{name} failed:\n{child.stderr[-3000:]}")
        r = results[name] = json.loads(line[7:])
        print(
            f"{name:12}: {'bf16' if r['bf16'] else 'float32':7} median step {r['step_s']:.2f} s, of which "
            f"{r['generation_s']:.2f} s before the rewards (sampling, log-probabilities)"
        )
    base, same, studio = results.values()
    print(
        f"{args.method.upper()} step, 1 prompt x 4 answers x 24 tokens, embedded model: the studio's is "
        f"{base['step_s'] / studio['step_s']:.2f}x as fast as TRL's in float32, "
        f"{same['step_s'] / studio['step_s']:.2f}x TRL's in the same precision"
    )


if __name__ == "__main__":
    main()
