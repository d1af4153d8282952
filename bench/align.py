"""One (or more) alignment rounds through the studio, headless, with a scripted annotator that ranks by a known
preference (a prompt set's rubric by default; --judge module:function for another).

    python bench/align.py [--rounds 2] [--sets bank,provocative] [--held-out 0.33] [--extra helpful_harmless]

Round 1: split each training set into train and held-out parts (fixed seed), generate k candidates per train prompt
with the studio's defaults, rank them with the scripted annotator, make pairs with the default rule, train DPO with
the Train tab's defaults for that data size (a real `python -m studio train` job), and make the alignment report on
the held-out parts (and --extra sets): the base and the adapter answer each prompt several times, the same
preference judges them. Round 2 generates candidates from the round-1 adapter, ranks them, continues training from
the round-1 adapter and reports again. Prints each phase's time and, per held-out set, the effect with its 95%
interval beside the noise floor (base against itself), the length-matched effect, mean lengths and toxicity, and per
rule of the rubric the share of answers passing it before and after, with how often the answers decline to help.

--demonstrations N: after ranking in round 1, the scripted annotator also writes demonstrations for at most N training
prompts per rule where every candidate fails the rule, from a template of our own per rule (TEMPLATES: their wording
is not taken from any held-out prompt); the round then trains on them with the rankings (each demonstration chosen
over its prompt's failing candidates), after --demo-sft-steps steps of SFT on the demonstrations alone if given.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Clock:
    def __init__(self):
        self.phases = []

    def __call__(self, name):
        clock = self

        class Phase:
            def __enter__(self):
                self.start = time.monotonic()
                print(f"[{name}] ...", flush=True)

            def __exit__(self, *exc):
                seconds = time.monotonic() - self.start
                clock.phases.append((name, seconds))
                print(f"[{name}] {seconds:.0f} s", flush=True)

        return Phase()


# What the scripted annotator writes for a rule no candidate shows: a fixed answer per rule (bank's fraud rule).
TEMPLATES = {
    "Fraud: freeze the card and call the fraud line": (
        "I'm sorry this happened. Please freeze your card right away in the Lumen app, then call our fraud line "
        "on the number on the back of your card, so the team can stop any more payments and help you."
    ),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="bank,provocative", help="prompt sets to train on (each is split)")
    parser.add_argument("--held-out", type=float, default=0.33, help="share of each set held out")
    parser.add_argument("--extra", default="helpful_harmless", help="more held-out sets for the report ('' for none)")
    parser.add_argument("--limit", type=int, default=15, help="the first N held-out prompts of each report set")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=3, help="answers per held-out prompt and model")
    parser.add_argument("--judge", default="", help="module:function(prompt_row, answers) -> tiers; default: rubric")
    parser.add_argument("--home", default="", help="STUDIO_HOME to use (default: a fresh temporary folder)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a generation (k, temperature, max_new_tokens, ...) or training setting",
    )
    parser.add_argument("--pair-mode", default=None)
    parser.add_argument("--demonstrations", type=int, default=0, help="per rule, in round 1 (0: none)")
    parser.add_argument("--demo-sft-steps", type=int, default=0, help="SFT steps on the demonstrations first")
    args = parser.parse_args(argv)

    home = Path(args.home or tempfile.mkdtemp(prefix="align-bench-"))
    os.environ["STUDIO_HOME"] = str(home)
    from studio.core import jobs
    from studio.core.paths import db_path, models_dir
    from studio.core.store import Store
    from studio.data import demonstrations, preferences, ranking, rubric
    from studio.data.candidates import generate_candidates
    from studio.data.prompts import get_prompts, install_builtin_sets, split_set
    from studio.evaluation import report
    from studio.inference import models
    from studio.inference.decode import GenerationParams
    from studio.training import launch, recipes

    shared = Path.home() / ".cache" / "align-studio" / "models" / models.EMBEDDED_FOLDER
    if shared.is_dir() and not (models_dir() / models.EMBEDDED_FOLDER).exists():
        (models_dir() / models.EMBEDDED_FOLDER).symlink_to(shared)  # the converted model, not converted again
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value) if value[:1] in "-0123456789.tf[" else value
    store = Store(db_path())
    install_builtin_sets(store)
    clock = Clock()
    gen_fields = set(GenerationParams.__dataclass_fields__)
    gen = GenerationParams(**{k: v for k, v in overrides.items() if k in gen_fields})
    judge = None
    if args.judge:
        from studio.training.rewards import load_function

        judge = load_function(args.judge)

    train_sets, held_sets = [], []
    for name in [s for s in args.sets.split(",") if s]:
        train, held = split_set(store, name, args.held_out, seed=0)
        train_sets.append(train)
        held_sets.append(held)
    extra = [s for s in args.extra.split(",") if s]
    print(f"home {home}; train {train_sets}; held out {held_sets + extra}; generation {gen}", flush=True)

    def rank_all(set_name):
        count = 0
        checks = rubric.for_set(store, set_name)
        for prompt_id in ranking.queue(store, set_name, "scripted"):
            task = ranking.load_task(store, prompt_id, "scripted")
            prompt = next(p for p in get_prompts(store, set_name) if p["id"] == prompt_id)
            order = judge(prompt, task.responses) if judge else rubric.rank(checks, prompt["text"], task.responses)
            if len(order) < 2:  # every candidate tied: no pair, nothing to learn
                ranking.skip(store, "scripted", prompt_id)
                continue
            ranking.submit(store, "scripted", prompt_id, [[task.response_ids[i] for i in tier] for tier in order])
            count += 1
        return count

    parent, results = None, []
    manager = launch.Manager(store)
    for round_ in range(1, args.rounds + 1):
        adapter = str(jobs.adapter_folder(jobs.get(store, parent))) if parent else None
        with clock(f"round {round_}: generate"):
            total = 0
            for name in train_sets:
                result = generate_candidates(store, models.EMBEDDED, get_prompts(store, name), gen, adapter=adapter)
                total += result.responses_added
            print(f"  {total} candidates", flush=True)
        with clock(f"round {round_}: rank"):
            print(f"  {sum(rank_all(name) for name in train_sets)} prompts ranked", flush=True)
        if round_ == 1 and args.demonstrations:
            with clock("round 1: demonstrations"):
                written = 0
                for name in train_sets:
                    checks = rubric.for_set(store, name)
                    for check in checks.checks if checks else []:
                        if check.name not in TEMPLATES:
                            continue
                        for prompt in demonstrations.to_write(store, name, check.name, args.demonstrations):
                            demonstrations.save(
                                store, "scripted", name, prompt["id"], TEMPLATES[check.name], check.name
                            )
                            written += 1
                print(f"  {written} demonstrations", flush=True)
        if round_ == 1 and args.demo_sft_steps:
            with clock("round 1: SFT on demonstrations"):
                rows = []
                for name in train_sets:
                    rows += demonstrations.pair_rows(store, name)[0]
                settings = {**recipes.recommended("sft", models.EMBEDDED, len(rows)), "max_steps": args.demo_sft_steps}
                settings.pop("why")
                job_id = launch.create(store, "sft", settings, data_label="demonstrations", data_rows=rows)
                job = wait(manager, store, job_id)
                if job["status"] != "finished":
                    print(job["error"], file=sys.stderr)
                    return 1
                parent = job_id
                adapter = str(jobs.adapter_folder(job))
        with clock(f"round {round_}: train"):
            rows = []
            for name in train_sets:
                rows += preferences.training_snapshot(store, name, args.pair_mode or recipes.PAIR_MODE)[0]
            settings = recipes.recommended("dpo", models.EMBEDDED, len(rows))
            settings.pop("why")
            settings.update({k: v for k, v in overrides.items() if k not in gen_fields})
            if parent:
                settings["continue_from"] = adapter
            print(f"  {len(rows)} pairs; settings {settings}", flush=True)
            job_id = launch.create(
                store,
                "dpo",
                settings,
                data_label=f"{'+'.join(train_sets)} round {round_}",
                data_rows=rows,
                data_info={"prompt_set": train_sets[0], "pairs": len(rows)},
                parent_job_id=parent,
            )
            job = wait(manager, store, job_id)
            if job["status"] != "finished":
                print(job["error"], file=sys.stderr)
                return 1
        with clock(f"round {round_}: report"):
            report.create(
                store,
                job_id,
                report.ReportSettings(
                    prompt_sets=held_sets + extra,
                    samples=args.samples,
                    limit=args.limit,
                    max_new_tokens=gen.max_new_tokens,
                    temperature=gen.temperature,
                ),
            )
            summary = report.latest(store, job_id)["summary"]
        results.append((round_, job_id, summary))
        print_summary(round_, summary)
        parent = job_id
    print("\nPhases:")
    for name, seconds in clock.phases:
        print(f"  {name:28s} {seconds:7.0f} s")
    round_one = sum(s for n, s in clock.phases if n.startswith("round 1"))
    print(f"  {'round 1 total':28s} {round_one:7.0f} s")
    return 0


def wait(manager, store, job_id):
    from studio.core import jobs

    while True:
        manager.refresh()
        job = jobs.get(store, job_id)
        if job["status"] not in ("queued", "running", "stopping"):
            return job
        time.sleep(2)


def print_summary(round_, summary):
    from studio.evaluation.report import _ci

    print(f"\nRound {round_}:")
    for entry in summary["sets"]:
        print(
            f"  {entry['prompt_set']}: {entry['prompts']} prompts x {entry['samples']} samples; words "
            f"{entry['words']['base']:.0f} -> {entry['words']['aligned']:.0f}; repetitive "
            f"{entry['repetitive']['base']:.0%} -> {entry['repetitive']['aligned']:.0%}"
        )
        for scorer, f in entry["scorers"].items():
            print(
                f"    {scorer:10s} at least as good {_ci(f['at_least_as_good']):16s} noise floor "
                f"{_ci(f['noise_floor']):16s} win rate {_ci(f['win_rate']):16s} length-matched "
                f"{_ci(f['length_matched']):16s} mean {f['base_mean']:.4f} -> {f['aligned_mean']:.4f}"
            )
        for row in entry.get("rules", []):
            print(
                f"    rule {row['rule'][:44]:44s} {row['prompts']:3d} prompts  passing "
                f"{_ci(row['base']):16s} -> {_ci(row['aligned']):16s} {row['verdict']}"
            )
        if entry.get("declines"):
            d = entry["declines"]
            print(
                f"    declines to help ({d['prompts']} prompts the guidelines say to answer) "
                f"{_ci(d['base'])} -> {_ci(d['aligned'])}"
            )
    for warning in summary["warnings"]:
        print(f"  warning: {warning}")


if __name__ == "__main__":
    sys.exit(main())
