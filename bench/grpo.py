"""One GRPO round on the built-in bank_math set (fees and interest, numeric reference answers), headless, through the
studio: does the embedded model answer more held-out prompts correctly afterwards?

    python bench/grpo.py [--steps 40] [--num-generations 8] [--temperature 0.7] [--max-completion-length 96]

Splits bank_math into train and held-out parts (seed 0), launches a GRPO job on the train part with the Train tab's
settings for GRPO (TRL's loss and beta, the studio's learning rate unless given) and the verifiable rewards
correct_number and answer_line (weights 1 and 0.5), runs it (`studio.training.train.run`, this process), then has the
base and the adapter answer every held-out prompt `--samples` times (an evaluation: same prompts, seeds and settings
for both). Prints the share of answers that are correct (correct_number) and in the asked format (answer_line)
before and after, each with its 95% interval (bootstrap over prompts), the change with its paired interval, the
answers' length, the reward per step and each phase's time.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def paired_change(before: list[list[float]], after: list[list[float]]) -> tuple[float, float, float]:
    """Mean per-prompt change (after - before) with a 95% percentile-bootstrap interval over prompts."""
    from scipy.stats import bootstrap

    changes = np.array([np.mean(a) - np.mean(b) for b, a in zip(before, after)])
    if np.all(changes == changes[0]):
        return float(changes[0]), float(changes[0]), float(changes[0])
    result = bootstrap(
        (changes,), np.mean, confidence_level=0.95, n_resamples=4000, method="percentile", rng=np.random.default_rng(0)
    )
    return float(changes.mean()), float(result.confidence_interval.low), float(result.confidence_interval.high)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--held-out", type=float, default=0.33)
    parser.add_argument("--samples", type=int, default=4, help="answers per held-out prompt and model")
    parser.add_argument("--learning-rate", type=float, default=0.0, help="0: the Train tab's GRPO setting")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=96)
    parser.add_argument("--max-new-tokens", type=int, default=96, help="answer length when evaluating")
    parser.add_argument("--functions", default="correct_number,answer_line")
    parser.add_argument("--weights", default="1,0.5")
    parser.add_argument("--loss-type", default="")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling while training (0: the method's)")
    args = parser.parse_args()
    os.environ.setdefault("STUDIO_HOME", tempfile.mkdtemp(prefix="bench-grpo-"))

    from studio.core import jobs
    from studio.core.store import Store
    from studio.data.prompts import get_prompts, install_builtin_sets, split_set
    from studio.evaluation import evaluate
    from studio.inference import chat, models
    from studio.inference.decode import GenerationParams
    from studio.training import launch, recipes, rewards
    from studio.training.train import run

    store = Store(Path(os.environ["STUDIO_HOME"]) / "studio.db")
    install_builtin_sets(store)
    train_set, held_set = split_set(store, "bank_math", args.held_out, 0)
    sizes = [len(get_prompts(store, name)) for name in (train_set, held_set)]
    print(f"bank_math: {sizes[0]} train prompts, {sizes[1]} held out")
    settings = {
        k: v
        for k, v in recipes.recommended("grpo", models.EMBEDDED, len(get_prompts(store, train_set))).items()
        if k != "why"
    }
    settings.update(
        max_steps=args.steps,
        num_generations=args.num_generations,
        per_device_train_batch_size=args.num_generations,
        max_completion_length=args.max_completion_length,
        reward_weights=args.weights,
        save_steps=10_000,
        gradient_checkpointing=False,
    )
    if args.learning_rate:
        settings["learning_rate"] = args.learning_rate
    if args.loss_type:
        settings["loss_type"] = args.loss_type
    if args.temperature:
        settings["temperature"] = args.temperature
    names = [n.strip() for n in args.functions.split(",") if n.strip()]
    started = time.perf_counter()
    job_id = launch.launch(
        store, "grpo", settings, prompt_set=train_set, reward_functions=[f"studio.training.rewards:{n}" for n in names]
    )
    job = jobs.get(store, job_id)
    _, recipe = recipes.load(Path(job["folder"]) / "recipe.yaml")
    print(
        f"GRPO: {args.steps} steps, lr {recipe.learning_rate:g}, loss {recipe.loss_type}, beta {recipe.beta}, "
        f"temperature {recipe.temperature}, "
        f"{recipe.num_generations} answers per prompt, up to {recipe.max_completion_length} tokens, rewards "
        f"{names} weights {recipe.reward_weights}"
    )
    result = run(Path(job["folder"]) / "recipe.yaml")
    train_s = time.perf_counter() - started
    with store.tx() as db:
        db.execute("UPDATE jobs SET status = ? WHERE id = ?", (result["status"], job_id))
    rows = [m for m in jobs.metrics(jobs.get(store, job_id)) if "reward" in m]
    for name in names:
        curve = [m.get(f"rewards/{name}/mean", float("nan")) for m in rows]
        quarter = max(1, len(curve) // 4)
        print(
            f"  {name}: first quarter of steps {np.nanmean(curve[:quarter]):.2f}, last quarter "
            f"{np.nanmean(curve[-quarter:]):.2f}"
        )
    zero = [m.get("frac_reward_zero_std", float("nan")) for m in rows]
    print(f"  groups with no reward spread: {np.nanmean(zero):.0%} of steps' groups; trained in {train_s:.0f} s")

    started = time.perf_counter()
    choices = [chat.pick(store, "base:embedded"), chat.pick(store, f"{jobs.JOB_KEY}{job_id}")]
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.7, seed=1)
    evaluation = evaluate.create_evaluation(store, held_set, choices, params, samples=args.samples)
    eval_s = time.perf_counter() - started
    answers = store.query(
        "SELECT a.position, a.prompt_id, a.text, p.answer FROM eval_answers a JOIN prompts p ON p.id = a.prompt_id "
        "WHERE a.evaluation_id = ? ORDER BY a.prompt_id, a.sample",
        (evaluation,),
    )
    for name in ("correct_number", "answer_line"):
        function = getattr(rewards, name)
        per = {0: {}, 1: {}}
        for row in answers:
            value = function(None, [row["text"]], answer=[row["answer"]])[0]
            per[row["position"]].setdefault(row["prompt_id"], []).append(value)
        prompts = sorted(per[0])
        before, after = [per[0][p] for p in prompts], [per[1][p] for p in prompts]
        b, a = evaluate.share_interval(before), evaluate.share_interval(after)
        change, low, high = paired_change(before, after)
        print(
            f"{name}: base {b['value']:.0%} ({b['low']:.0%}-{b['high']:.0%}) -> adapter {a['value']:.0%} "
            f"({a['low']:.0%}-{a['high']:.0%}) on {len(prompts)} held-out prompts x {args.samples}; change "
            f"{change:+.0%} (95% {low:+.0%} to {high:+.0%}){' EXCLUDES 0' if low > 0 or high < 0 else ''}"
        )
    words = {0: [], 1: []}
    for row in answers:
        words[row["position"]].append(len(row["text"].split()))
    print(f"words per answer: base {np.mean(words[0]):.0f} -> adapter {np.mean(words[1]):.0f}")
    print(f"phases: train {train_s:.0f} s, held-out answers {eval_s:.0f} s; total {train_s + eval_s:.0f} s")


if __name__ == "__main__":
    main()
