"""Job records: a job's row, folder, adapter, metrics, log and lineage, and how a model choice names a job
(`job:N`). Creating, queueing and running jobs is studio.training.launch."""

import json
import os
import re
from pathlib import Path

import psutil
import yaml

from studio.core import methods
from studio.core.paths import studio_home
from studio.core.store import Store


class JobError(ValueError):
    """A job action that cannot be done; the message says why."""


def jobs_dir() -> Path:
    path = studio_home() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lineage(store: Store, job_id: int) -> list[dict]:
    """The job, its parent, the parent's parent, ... down to the base model (last entry is the oldest job)."""
    chain, seen = [], set()
    while job_id is not None and job_id not in seen:
        seen.add(job_id)
        job = get(store, job_id)
        chain.append(job)
        job_id = job["parent_job_id"]
    return chain


JOB_KEY = "job:"  # how a job's adapter is named where a model is chosen: job:N


def referenced(store: Store, key: str) -> dict:
    """The job named by `job:N` (as the model lists name jobs)."""
    try:
        return get(store, int(key.removeprefix(JOB_KEY)))
    except ValueError:
        raise JobError(f"{key!r} is not a job; write job:N.") from None


def base_model(store: Store, model: str) -> str:
    """The base model behind a model choice: a job's base for `job:N`, else the choice itself."""
    try:
        return referenced(store, model)["base_model"] if model.startswith(JOB_KEY) else model
    except JobError:
        return model


def finished(store: Store, output: str) -> list[dict]:
    """Finished jobs (newest first) whose adapter is of this kind: "chat" (answers) or "reward" (scores)."""
    return [j for j in list_jobs(store) if methods.get(j["method"]).output == output and adapter_folder(j)]


def finished_folder(store: Store, job_id: int, output: str) -> Path:
    """The adapter folder of finished job `job_id`, which must be of this kind ("chat" or "reward")."""
    job = get(store, job_id)
    folder = adapter_folder(job)
    if folder is None or methods.get(job["method"]).output != output:
        what = "reward-model job" if output == "reward" else "DPO, SFT or RL job"
        raise JobError(f"Job {job_id} ({job['method']}, {job['status']}) is not a finished {what}.")
    return folder


def get(store: Store, job_id: int) -> dict:
    rows = store.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
    if not rows:
        raise JobError(f"There is no job {job_id}.")
    return dict(rows[0])


def list_jobs(store: Store) -> list[dict]:
    return [dict(r) for r in store.query("SELECT * FROM jobs ORDER BY id DESC")]


def metrics(job: dict) -> list[dict]:
    path = Path(job["folder"]) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return rows


# A library warning ("<file>:<line>: FutureWarning: ..."); it and its indented source line(s) are left in train.log
# but not shown in the log view: they drown what the job itself says.
_LIBRARY_WARNING = re.compile(r"^\S+:\d+: \w*Warning: ")


def log_tail(job: dict, lines: int = 30) -> str:
    """The last lines of the job's log as the Train tab shows them: progress bars at their last redraw, library
    warnings left out (train.log keeps everything)."""
    path = Path(job["folder"]) / "train.log"
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 64_000))
        text = f.read().decode("utf-8", errors="replace")
    # Progress bars redraw with carriage returns: keep what the last redraw shows.
    shown, skip = [], False
    for line in (line.rsplit("\r", 1)[-1] for line in text.split("\n")):
        if _LIBRARY_WARNING.search(line):
            skip = True  # the warning's source line(s) follow, indented
            continue
        if skip and line.startswith((" ", "\t")) and not line.strip().startswith(("File ", "Traceback")):
            continue
        skip = False
        if line.strip():
            shown.append(line)
    return "\n".join(shown[-lines:])


def last_metrics(rows: list[dict]) -> dict:
    """The newest value of every metric in a job's metrics rows (step, max_steps, loss, eta_s, ...)."""
    last = {}
    for row in rows:
        last.update(row)
    return last


def progress_line(job: dict, last: dict | None = None) -> str:
    """`Job 3 (dpo): running · step 4 / 15 · ETA 40 s · 812 tokens/s · adapter: ...` for the Train tab."""
    last = last_metrics(metrics(job)) if last is None else last
    parts = [
        f"Job {job['id']} ({job['method']}): {job['status']}",
        f"step {int(last.get('step', 0))} / {int(last.get('max_steps', 0) or 1)}",
    ]
    if job["status"] == "running" and "eta_s" in last:
        parts.append(f"ETA {int(last['eta_s'])} s")
    if "tokens_per_s" in last:
        parts.append(f"{last['tokens_per_s']:.0f} tokens/s")
    if adapter_folder(job):
        parts.append(f"adapter: {adapter_folder(job)}")
    return " · ".join(parts)


def rl_samples(job: dict, count: int = 12) -> list[dict] | None:
    """The newest `count` sampled answers with their rewards (newest first) of an online-RL job; None for a job that
    does not sample."""
    path = Path(job["folder"]) / "samples.jsonl"
    if methods.get(job["method"]).data != "prompts" or not path.is_file():
        return None
    rows = []
    for line in reversed(path.read_text(encoding="utf-8").splitlines()[-count:]):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # being written
            continue
    return rows


def method_label(job: dict) -> str:
    """The method as the jobs table, the lineage and the card name it: `dpo`, or `dpo, ipo loss` when DPO trained
    with another loss than TRL's default sigmoid; online RL with its rewards and their weights, `grpo, rewards:
    correct_number x1, answer_line x0.5` (read from the job's recipe)."""
    recipe = recipe_of(job)
    if not recipe:
        return job["method"]
    if methods.get(job["method"]).data == "prompts":
        named = reward_names(recipe)
        weights = recipe.get("reward_weights") or [1] * len(named)
        return f"{job['method']}, rewards: " + ", ".join(f"{n} x{w:g}" for n, w in zip(named, weights))
    if job["method"] != "dpo":
        return job["method"]
    losses = recipe.get("loss_type")
    losses = [losses] if isinstance(losses, str) else list(losses or [])
    return job["method"] if losses in ([], ["sigmoid"]) else f"dpo, {'+'.join(losses)} loss"


def recipe_of(job: dict) -> dict:
    """The job's recipe as written in its folder (recipe.yaml); empty where it cannot be read."""
    try:
        recipe = yaml.safe_load((Path(job["folder"]) / "recipe.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return recipe if isinstance(recipe, dict) else {}


def reward_names(recipe: dict) -> list[str]:
    """An online RL recipe's rewards by name, in TRL's order (reward model, rubric, judge, functions)."""
    functions = [spec.strip().rpartition(":")[2] for spec in (recipe.get("reward_functions") or "").split(",")]
    return (
        (["reward_model"] if recipe.get("reward_model") else [])
        + (["rubric"] if recipe.get("rubric") else [])
        + ([f"llm_judge ({recipe['judge']})"] if recipe.get("judge") else [])
        + [name for name in functions if name]
    )


def lineage_line(store: Store, job_id: int) -> str:
    chain = lineage(store, job_id)
    steps = [f"job {j['id']} ({method_label(j)}, round {j['round']}, data: {j['data']})" for j in chain]
    return "Lineage: " + " ← ".join(steps + [f"base {chain[-1]['base_model']}"])


def adapter_folder(job: dict) -> Path | None:
    folder = Path(job["folder"]) / "adapter"
    return folder if job["status"] == "finished" and (folder / "adapter_config.json").is_file() else None


def has_checkpoint(job: dict) -> bool:
    return any(Path(job["folder"]).glob("checkpoint-*"))


def alive(pid: int | None, *words: str) -> bool:
    """Whether pid is still a process of ours whose command line holds `words` (a module and a folder): after an
    app restart only the pid is known, and the pid may have been reused by another program."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # ended, not yet reaped
            return False
        cmdline = " ".join(process.cmdline())
        if all(word in cmdline for word in words):
            return True
        # Started by this process a moment ago and not yet exec'd: it still shows our own command line.
        return process.ppid() == os.getpid() and process.cmdline() == psutil.Process().cmdline()
    except psutil.Error:
        return False
