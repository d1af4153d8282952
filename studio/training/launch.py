"""Training jobs: create (recipe + data snapshot in a job folder), queue, start, watch, stop, resume.

Each job runs `python -m studio train job_dir/recipe.yaml` as its own process group (list argv, no shell, output to
job_dir/train.log). Its state lives in the jobs table, so a reload, a closed browser or an app restart changes
nothing: a restarted app finds a still-running job by its pid, and a job that died without writing result.json is
marked failed with the end of its log. One job runs at a time (one device); the others wait in the queue.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from studio.core import access, hub, methods
from studio.core.jobs import (
    JOB_KEY,
    JobError,
    adapter_folder,
    alive,
    base_model,
    finished_folder,
    get,
    has_checkpoint,
    jobs_dir,
    lineage,
    log_tail,
    referenced,
)
from studio.core.paths import ROOT
from studio.core.store import Store
from studio.data import feedback, rubric
from studio.data.preferences import PreferenceError, training_snapshot
from studio.data.prompts import PromptError, get_prompts, messages_key, read_records
from studio.data.ranking import PAIR_MODES, get_guidelines
from studio.inference import models, servers
from studio.inference.decode import prompt_messages
from studio.training import fit, recipes, rewards
from studio.training.rewards import REWARDS

ACTIVE = ("running", "stopping")
STOP_GRACE_S = 60
FOLLOW_REMOTE_S = 30.0  # how often the watcher asks SageMaker about a job running there
CLAIM_S = 60  # a claimed job gets its pid within this; after it, the claiming app is taken to have died


def launch(
    store: Store,
    method: str,
    settings: dict,
    *,
    prompt_set: str | None = None,
    pair_mode: str = recipes.PAIR_MODE,
    data: str = "",
    reward_job: int | None = None,
    reward_functions: list[str] = (),
    rubric_reward: bool = False,
    judge: str = "",
    report: dict | None = None,
    weighted: bool = False,
    judges: bool = False,
    by: str | None = None,
    where: str = "local",
) -> int:
    """Queue a training job the way the Train tab, the API and tests do; returns its id.

    `settings` are recipe fields; `model` may be `job:N` to continue from job N's adapter. The data is `data` (a
    file or Hub data set id) or a snapshot of the prompt set: its preference pairs (`pair_mode`), or for online RL
    its prompts. RL rewards: a finished reward-model job, `module:function`s, and/or the prompt set's rubric.
    `report`: settings of the alignment report to make when the job finishes (None: none). `weighted`: pairs by a
    majority weighted by annotator quality (team.quality); `judges`: judges' rankings count as votes. `by`: who
    launches (a lead, where leads are named). `where`: "local" (the queue here) or "sagemaker" (queued for
    studio.training.sagemaker.start, which runs it as a SageMaker training job; the local queue leaves it alone)."""
    if where not in ("local", "sagemaker"):
        raise JobError(f"A job runs here (local) or on SageMaker (sagemaker), not {where!r}.")
    access.check_lead(by, "launch training")
    spec = methods.get(method)
    # The form sends every method's fields: the method keeps its own (methods.Method.options).
    settings = {
        **recipes.studio_defaults(method),
        **{k: v for k, v in settings.items() if k not in methods.OPTIONS or k in spec.options},
    }
    if method == "dpo" and isinstance(settings.get("loss_type"), str):  # DPO takes a list (their weighted sum)
        settings["loss_type"] = [settings["loss_type"] or "sigmoid"]
    parent = None
    model = str(settings.get("model") or "embedded")
    if model.startswith(JOB_KEY):
        parent = referenced(store, model)
        if not adapter_folder(parent) or not methods.get(parent["method"]).chats:
            raise JobError(f"Job {parent['id']} has no finished chat adapter to continue from.")
        settings["model"], settings["continue_from"] = parent["base_model"], str(adapter_folder(parent))
    files = {}
    if spec.data == "prompts":
        settings.pop("max_length", None)  # RL bounds the sampled answer instead
        functions = list(reward_functions)
        if reward_job is not None:
            settings["reward_model"] = str(finished_folder(store, int(reward_job), "reward"))
        settings["reward_functions"] = ",".join(functions)
        if rubric_reward:
            if not prompt_set or not rubric.get_text(store, prompt_set).strip():
                raise JobError(
                    f"The prompt set {prompt_set!r} has no rubric to reward with; write one on the Rank "
                    "tab or untick the rubric reward."
                )
            files["rubric.yaml"] = rubric.get_text(store, prompt_set)
        judge = (judge or "").strip()
        if judge:
            settings.update(_judge_settings(store, judge))
            files["guidelines.md"] = get_guidelines(store, prompt_set) if prompt_set else ""
        if not settings.get("reward_model") and not functions and not rubric_reward and not judge:
            raise JobError("Online RL needs a reward: a reward-model job, the rubric, a judge and/or reward functions.")
        rewards_count = bool(settings.get("reward_model")) + bool(rubric_reward) + bool(judge) + len(functions)
        settings["reward_weights"] = _weights(settings.get("reward_weights"), rewards_count)
        # TRL needs whole groups: the batch is rounded up to a multiple of the answers per prompt.
        groups = int(settings.get("num_generations", 4))
        batch = int(settings.get("per_device_train_batch_size", groups))
        settings["per_device_train_batch_size"] = -(-batch // groups) * groups
    model = settings["model"] = str(settings.get("model") or "embedded").strip()
    if model != models.EMBEDDED and not Path(model).expanduser().is_dir():
        try:  # a Hub id: refused now when it cannot load, not a minute into the job
            hub.check_available(models.resolve(model), "the base model")
        except ValueError as error:  # models.ModelError is one
            raise JobError(str(error)) from None
    if (data or "").strip():
        rows, info, label = None, {}, data.strip()
        settings["data"] = label
    elif spec.data == "feedback":
        rows = feedback.kto_rows(store)
        if not rows:
            raise JobError("No feedback yet: give thumbs up or down, or edit answers, on the Compare tab.")
        info, label = {**feedback.counts(store), "rows": len(rows)}, "chat feedback (thumbs and edits)"
    elif not prompt_set:
        raise PreferenceError("Choose a prompt set, or give a file or a Hub data set id.")
    elif spec.data == "prompts":
        prompts = get_prompts(store, prompt_set)
        rows = [{"prompt": prompt_messages(p)} for p in prompts]
        if any(p["answer"] is not None for p in prompts):  # reference answers reach reward functions as `answer`
            rows = [{**row, "answer": p["answer"]} for row, p in zip(rows, prompts)]
        else:
            needing = [f for f in reward_functions if f.removeprefix(REWARDS) in rewards.NEED_REFERENCE]
            if needing:
                raise JobError(
                    f"{', '.join(f.removeprefix(REWARDS) for f in needing)} compare answers with reference answers, "
                    f"and {prompt_set!r} has none: choose a set uploaded with an answer column (bank_math has one)."
                )
        info, label = {"prompt_set": prompt_set, "prompts": len(prompts)}, f"{prompt_set} (prompts)"
    else:
        rows, info = training_snapshot(store, prompt_set, pair_mode, weighted, judges)
        label = (
            f"{prompt_set} ({PAIR_MODES[pair_mode]}{', weighted by quality' if weighted else ''}"
            f"{', with judges' if judges else ''})"
        )
    return create(
        store,
        method,
        settings,
        data_label=label,
        data_rows=rows,
        data_info=info,
        parent_job_id=parent["id"] if parent else None,
        files=files,
        report=report,
        remote={"service": where} if where != "local" else None,
    )


def describe_data(
    store: Store, method: str, prompt_set: str | None, pair_mode: str = recipes.PAIR_MODE, data: str = ""
) -> str:
    """What a job of `method` would train on, in a line for the Train tab (an empty state is said in neutral words,
    not as a mistake)."""
    spec = methods.get(method)
    if (data or "").strip():
        return f"Trains on {data.strip()} (checked when the job starts)."
    if spec.data == "feedback":
        found = feedback.counts(store)
        return (
            f"{len(feedback.kto_rows(store))} {spec.rows} from the Compare tab's feedback: "
            f"{found['up']} thumbs up, "
            f"{found['down']} down, {found['edit']} edited answer(s) (each gives a good and a bad row) by "
            f"{found['annotators']} person(s). The prompt set is not used."
        )
    if not prompt_set:
        return "Choose a prompt set, or give a file or a Hub data set id."
    if spec.data == "prompts":
        return (
            f"{len(get_prompts(store, prompt_set))} prompts of {prompt_set}: the policy samples its own answers, "
            "the reward scores them."
        )
    try:
        _, info = training_snapshot(store, prompt_set, pair_mode)
    except PreferenceError as error:  # nothing ranked yet
        return str(error)
    if not info["rankings"]:
        return (
            f"{info['pairs']} {spec.rows} from {info['demonstrations']} demonstration(s), each chosen over the "
            "candidates that fail its rule (no ranking yet)."
        )
    shown = (
        f", and {info['demonstrations']} demonstration(s) chosen over the candidates that fail their rule "
        f"({info['demonstration_pairs']} {spec.rows})"
        if info.get("demonstrations")
        else ""
    )
    return (
        f"{info['pairs']} {spec.rows} from {info['rankings']} rankings by {len(info['annotators'])} "
        f"annotator(s) on {info['prompts']} prompts ({info['conflicts']} conflicting, {info['unresolved']} "
        f"dropped){shown}."
    )


def recommended(
    store: Store,
    method: str,
    prompt_set: str | None,
    pair_mode: str = recipes.PAIR_MODE,
    data: str = "",
    model: str = "embedded",
) -> dict:
    """recipes.recommended for this method, the base behind `model` (job:N: that job's base) and the number of rows
    the data gives (0 for a file or Hub data, which is read only when the job starts)."""
    rows, demonstrations = 0, 0
    if methods.get(method).data == "feedback":
        rows = len(feedback.kto_rows(store))
    elif prompt_set and not (data or "").strip():
        if methods.get(method).data == "prompts":
            rows = len(get_prompts(store, prompt_set))
        else:
            try:
                info = training_snapshot(store, prompt_set, pair_mode)[1]
                rows, demonstrations = info["pairs"], info.get("demonstrations", 0)
            except PreferenceError:
                pass
    found = recipes.recommended(method, base_model(store, model or "embedded"), rows)
    if demonstrations:
        found["why"] += " " + recipes.DEMONSTRATIONS_WHY
    return found


def fit_check(
    store: Store,
    method: str,
    settings: dict,
    prompt_set: str | None = None,
    pair_mode: str = recipes.PAIR_MODE,
    data: str = "",
) -> str:
    """The Train tab's line before launch: the job's estimated peak memory against what the device has free, and
    what to change when it will not fit (training/fit.py). Empty when the base's shape cannot be read."""
    spec = methods.get(method)
    model = str(settings.get("model") or models.EMBEDDED).strip()
    if model.startswith(JOB_KEY):
        try:
            model = referenced(store, model)["base_model"]
        except JobError:
            return ""
    shape = fit.shape_of(model)
    if shape is None:
        return ""
    settings = {**recipes.studio_defaults(method), **settings}
    if spec.data == "prompts":  # online RL: a prompt and a sampled answer, num_generations of them per prompt
        longest = 256 + int(settings.get("max_completion_length", 48))
    elif prompt_set and not (data or "").strip() and spec.data == "pairs":
        try:
            rows = training_snapshot(store, prompt_set, pair_mode)[0]
        except PreferenceError:
            rows = []
        longest = fit.longest_row(rows) if rows else int(settings.get("max_length") or 512)
    else:  # a file, a Hub data set or the feedback: as long as max_length allows
        longest = int(settings.get("max_length") or 512)
    device, _ = models.device_and_dtype()
    bf16 = device == "cuda" or models.cpu_bf16()
    found = fit.estimate(shape, settings, method, longest, device, bf16)
    found.free = fit.free_memory(device)
    return found.line()


def create(
    store: Store,
    method: str,
    settings: dict,
    *,
    data_label: str,
    data_rows: list[dict] | None = None,
    data_info: dict | None = None,
    parent_job_id: int | None = None,
    files: dict | None = None,
    report: dict | None = None,
    remote: dict | None = None,
) -> int:
    """A queued job: its folder with recipe.yaml (checked) and, for studio data, a snapshot of the rows. `files`
    (name -> text) are written into the folder too; `rubric.yaml` becomes the recipe's rubric. `remote`: where it
    runs when not here (the jobs table's remote column)."""
    settings = dict(settings)
    with store.tx() as db:
        job_id = db.execute(
            "INSERT INTO jobs (method, status, folder, base_model, data, data_info, parent_job_id, round, "
            "report_settings, remote) VALUES (?, 'queued', '', ?, ?, ?, ?, ?, ?, ?)",
            (
                method,
                settings.get("model", "embedded"),
                data_label,
                json.dumps(data_info or {}),
                parent_job_id,
                next_round(store, parent_job_id, (data_info or {}).get("prompt_set")),
                json.dumps(report) if report is not None else None,
                json.dumps(remote) if remote else None,
            ),
        ).lastrowid
        folder = jobs_dir() / f"{job_id}-{method}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            if data_rows is not None:
                # The job trains on a snapshot: later rankings do not change what this job saw.
                with open(folder / "data.jsonl", "w", encoding="utf-8") as f:
                    for row in data_rows:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                settings["data"] = str(folder / "data.jsonl")
            for name, text in (files or {}).items():
                (folder / name).write_text(text, encoding="utf-8")
            if "rubric.yaml" in (files or {}):
                settings["rubric"] = str(folder / "rubric.yaml")
            if "guidelines.md" in (files or {}):
                settings["judge_guidelines"] = str(folder / "guidelines.md")
            settings["output_dir"] = str(folder)
            recipes.save(folder / "recipe.yaml", method, settings)
            (folder / "data_info.json").write_text(json.dumps({"data": data_label, **(data_info or {})}, indent=2))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        db.execute("UPDATE jobs SET folder = ? WHERE id = ?", (str(folder), job_id))
    return job_id


def next_round(store: Store, parent_job_id: int | None, set_name: str | None) -> int:
    """A new job's round: one more than its parent's, and than that of any job whose adapter wrote candidates in the
    prompt set it learns from (round 1 learns from the base model's candidates)."""
    rounds = [0]
    if parent_job_id is not None:
        rounds += [r["round"] for r in store.query("SELECT round FROM jobs WHERE id = ?", (parent_job_id,))]
    if set_name:
        rounds += [
            r["round"]
            for r in store.query(
                """SELECT DISTINCT j.round FROM responses r JOIN prompts p ON p.id = r.prompt_id
               JOIN prompt_sets s ON s.id = p.prompt_set_id JOIN jobs j ON r.adapter = j.folder || '/adapter'
               WHERE s.name = ?""",
                (set_name,),
            )
        ]
    return max(rounds) + 1


def training_prompt_keys(store: Store, job_id: int) -> set[tuple]:
    """prompts.prompt_key of every prompt this job, and each job it continued from, trained on: read from the data
    snapshot in its folder (or the local file its recipe names). Data only on the Hub cannot be checked here."""
    keys = set()
    for job in lineage(store, job_id):
        path = Path(job["folder"]) / "data.jsonl"
        if not path.is_file():
            candidate = Path(job["data"]).expanduser()
            path = candidate if candidate.is_file() else None
        if path is None:
            continue
        try:
            records = read_records(path, 10**9, (".jsonl", ".csv", ".parquet"))
        except PromptError:
            continue
        for record in records:
            key = messages_key(record.get("prompt") if "prompt" in record else record.get("messages"))
            if key is not None:
                keys.add(key)
    return keys


def _judge_settings(store: Store, judge: str) -> dict:
    """The recipe fields of an LLM judge reward: a served judge's connection (its URLs and the name of its key's
    variable, never the key), checked now; an in-process one must resolve."""
    if servers.is_served(judge):
        try:
            connection = servers.client(store, judge).connection
        except servers.ServerError as error:
            raise JobError(str(error)) from None
        return {"judge": judge, "judge_urls": ",".join(connection.urls), "judge_key_env": connection.key_env or ""}
    try:
        models.resolve(judge)
    except models.ModelError as error:
        raise JobError(f"The judge: {error}") from None
    return {"judge": judge}


def _weights(given, count: int) -> list[float] | None:
    """TRL's reward_weights from the form's text (or a list): one per reward, in the order rewards.build calls them
    (reward model, rubric, judge, then the functions: toxicity, the checks, the rest); None (all 1) when none are
    given."""
    if given is None or (isinstance(given, str) and not given.strip()):
        return None
    try:
        weights = [float(w) for w in (given.replace(",", " ").split() if isinstance(given, str) else given)]
    except (TypeError, ValueError):
        raise JobError(f"Reward weights must be numbers separated by commas, e.g. 1, 0.5; got {given!r}.") from None
    if len(weights) != count:
        raise JobError(
            f"{len(weights)} reward weights for {count} rewards: give one per reward, in the order reward model, "
            "rubric, judge, toxicity, the checks, more functions (or none: all weigh 1)."
        )
    return weights


def launch_argv(recipe_path: Path, resume: bool = False, hosts: list[str] = (), rank: int = 0) -> list[str]:
    """The training command after `python`: `-m studio.training.train recipe`, or through accelerate launch when the
    recipe's
    `processes` (0: one per GPU) is more than one, or `hosts` (several machines, this one `hosts[rank]`, as on a
    SageMaker training job) are: data parallel, NCCL on GPUs, gloo on a CPU."""
    argv = ["-m", "studio.training.train", str(recipe_path)] + (["--resume"] if resume else [])
    gpus = _gpu_count()
    processes = int((yaml.safe_load(Path(recipe_path).read_text()) or {}).get("processes") or gpus)
    if processes <= 1 and len(hosts) <= 1:
        return argv
    # Without GPUs, accelerate's --multi_gpu launcher (torch.distributed.run) starts CPU processes that join by gloo.
    config = (
        ["--config_file", str(ROOT / "assets/accelerate/multi_gpu.yaml")]
        if gpus
        else ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    )
    if len(hosts) > 1:  # every machine runs this with its own rank; they meet at the first one's port 29500
        machines = [
            "--num_machines",
            str(len(hosts)),
            "--machine_rank",
            str(rank),
            "--main_process_ip",
            hosts[0],
            "--main_process_port",
            "29500",
        ]
    else:
        with socket.socket() as probe:  # a free port for the processes to meet on (another job may hold 29500)
            probe.bind(("127.0.0.1", 0))
            machines = ["--num_machines", "1", "--main_process_port", str(probe.getsockname()[1])]
    return [
        "-m",
        "accelerate.commands.launch",
        *config,
        "--num_processes",
        str(max(processes, 1) * max(len(hosts), 1)),
        *machines,
    ] + argv


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _seconds_since(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    started = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (datetime.now(timezone.utc) - started).total_seconds()


class Manager:
    """Starts queued jobs one at a time and keeps the jobs table in step with the processes."""

    def __init__(self, store: Store, on_finished=None, remote=None):
        """`on_finished(job_id)` is called (in the watcher's thread) when a job is seen to finish. `remote`: the runner
        of jobs that run elsewhere (training/sagemaker.py, passed in by the app: follow, stop, resume and remote_info
        of a job, SageMakerError for what it cannot reach); without it such jobs are left alone."""
        self.store = store
        self.on_finished = on_finished
        self.remote = remote
        self._processes: dict[int, subprocess.Popen] = {}
        self.remote_every_s = FOLLOW_REMOTE_S
        self._lock = threading.Lock()
        self.gpu: bool | None = None  # whether jobs train on a GPU here (asked once, when first needed)

    def on_gpu(self) -> bool:
        if self.gpu is None:
            self.gpu = _gpu_count() > 0
        return self.gpu

    def refresh(self) -> None:
        with self._lock:
            self._reconcile()
            if models.user() is not None and self.on_gpu():
                return  # the app is generating on the GPU: the queued job starts when it is done, not beside it
            job = self._claim()
            if job is not None:
                self._launch(job)

    def gpu_line(self) -> str:
        """What the app's model does while a job holds the GPU (empty on a CPU, or when no job holds it)."""
        holder = models.gpu_holder()
        return f"The app's model was unloaded from the GPU: {holder}." if holder else ""

    def _claim(self) -> dict | None:
        """The oldest queued job, claimed by one conditional UPDATE while no job runs: with two app processes on
        one database, only one of them gets it (the process lock alone covers one app)."""
        with self.store.tx() as db:
            row = db.execute(
                "UPDATE jobs SET status = 'running', pid = NULL, error = NULL, finished_at = NULL, "
                "started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                "WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND remote IS NULL ORDER BY id LIMIT 1) "
                "AND NOT EXISTS (SELECT 1 FROM jobs WHERE status IN ('running', 'stopping') AND remote IS NULL) "
                "RETURNING *"
            ).fetchone()
        return dict(row) if row else None

    def _launch(self, job: dict) -> None:
        """Start the claimed job's training process and record its pid. On a GPU the job gets it to itself: the app's
        model is released first (models.hand_over), and the app waits for the job to end before it loads again."""
        if self.on_gpu():
            models.hand_over(f"job {job['id']} is training on it")
        folder = Path(job["folder"])
        argv = [sys.executable] + launch_argv(folder / "recipe.yaml", bool(job["resume"]))
        try:
            with open(folder / "train.log", "ab") as log:
                process = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: stop reaches the whole tree
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
        except OSError as error:
            with self.store.tx() as db:
                db.execute(
                    "UPDATE jobs SET status = 'failed', error = ? WHERE id = ?",
                    (f"could not start the training process: {error}", job["id"]),
                )
            if self.on_gpu():
                models.take_back()
            return
        self._processes[job["id"]] = process
        with self.store.tx() as db:
            db.execute("UPDATE jobs SET pid = ? WHERE id = ?", (process.pid, job["id"]))

    def _reconcile(self) -> None:
        training_here = False
        for job in self.store.query("SELECT * FROM jobs WHERE status IN ('running', 'stopping')"):
            job = dict(job)
            if job["remote"]:
                self._follow_remote(job)
                continue
            process = self._processes.get(job["id"])
            if process is None and job["pid"] is None and _seconds_since(job["started_at"]) < CLAIM_S:
                training_here = True
                continue  # claimed by an app process that is starting it right now
            running = process.poll() is None if process else alive(job["pid"], "studio.training.train", job["folder"])
            if running:
                training_here = True
                if self.on_gpu() and models.gpu_holder() is None:  # started before this app did, or by another
                    models.hand_over(f"job {job['id']} is training on it")
                continue
            self._processes.pop(job["id"], None)
            result_path = Path(job["folder"]) / "result.json"
            try:
                result = json.loads(result_path.read_text())
            except (OSError, json.JSONDecodeError):
                result = {"status": "failed", "error": "the training process ended without a result (killed?)"}
            error = None
            if result["status"] == "failed":
                error = result.get("error", "failed") + "\n--- end of train.log ---\n" + log_tail(job, 15)
            with self.store.tx() as db:
                db.execute(
                    "UPDATE jobs SET status = ?, error = ?, pid = NULL, "
                    "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
                    (result["status"], error, job["id"]),
                )
            if result["status"] == "finished" and self.on_finished is not None:
                self.on_finished(job["id"])
        if not training_here and models.gpu_holder() is not None:
            models.take_back()  # the job that held the GPU has ended

    def _follow_remote(self, job: dict) -> None:
        """A job on SageMaker: asked about every remote_every_s (its state, metrics and, once done, its output)."""
        if (
            self.remote is None
            or time.time() - self.remote.remote_info(job).get("followed_at", 0) < self.remote_every_s
        ):
            return
        try:
            job = self.remote.follow(self.store, job["id"])
        except self.remote.SageMakerError as error:  # no network or credentials now: the next tick asks again
            print(f"job {job['id']}: {error}", file=sys.stderr)
            return
        if job["status"] == "finished" and self.on_finished is not None:
            self.on_finished(job["id"])

    def stop(self, job_id: int, by: str | None = None, grace_s: float = STOP_GRACE_S) -> str:
        """Queued: cancelled. Running: SIGTERM (checkpoint, then exit), SIGKILL if still alive after grace_s. On
        SageMaker: StopTrainingJob. A lead's action."""
        access.check_lead(by, "stop a job")
        job = get(self.store, job_id)
        if job["remote"] and job["status"] == "running":
            return self._runner(job_id).stop(self.store, job_id, by)
        if job["status"] == "queued":
            with self.store.tx() as db:
                db.execute("UPDATE jobs SET status = 'stopped' WHERE id = ? AND status = 'queued'", (job_id,))
            return "Removed from the queue."
        if job["status"] != "running":
            raise JobError(f"Job {job_id} is {job['status']}; only a queued or running job can be stopped.")
        pid = job["pid"]
        if pid is None:
            raise JobError(f"Job {job_id} is starting; stop it in a moment.")
        with self.store.tx() as db:
            db.execute("UPDATE jobs SET status = 'stopping' WHERE id = ?", (job_id,))
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return "The process had already ended."

        def kill_if_alive():
            if alive(pid, "studio.training.train", job["folder"]):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        timer = threading.Timer(grace_s, kill_if_alive)
        timer.daemon = True
        timer.start()
        return "Stopping: a checkpoint is saved at the end of the current step."

    def resume(self, job_id: int, by: str | None = None) -> str:
        """A stopped or failed job again, from its latest checkpoint (on SageMaker: a new training job). A lead's
        action."""
        access.check_lead(by, "resume a job")
        job = get(self.store, job_id)
        if job["status"] not in ("stopped", "failed"):
            raise JobError(f"Job {job_id} is {job['status']}; only a stopped or failed job can be resumed.")
        if job["remote"]:
            runner = self._runner(job_id)
            if not runner.remote_info(job).get("name"):
                raise JobError(f"Job {job_id} never started on SageMaker; launch it again.")
            return runner.resume(self.store, job_id, by)
        if not has_checkpoint(job):
            raise JobError(f"Job {job_id} has no checkpoint to resume from; launch it again instead.")
        with self.store.tx() as db:
            db.execute("UPDATE jobs SET status = 'queued', resume = 1, error = NULL WHERE id = ?", (job_id,))
        self.refresh()
        return "Resuming from the latest checkpoint."

    def submit(self, method: str, settings: dict, *, where: str = "local", remote: dict | None = None, **data) -> dict:
        """Launch a job and start it: here (the queue) or on SageMaker (checked before the job is made, then started
        with `remote`: prefix, role_arn, instance_type, instance_count, region, image). `data` and `by` go to
        launch(). Returns {"job": id, "said": the line for the user, "failed": the start failed (the job is kept,
        marked failed, to be started again)}."""
        if where == "sagemaker":
            runner = self._runner(None)
            remote = dict(remote or {})
            runner.check(remote.get("prefix", ""), remote.get("role_arn", ""), remote.get("instance_type", ""))
        job_id = launch(self.store, method, settings, where=where, **data)
        if where != "sagemaker":
            self.refresh()
            said = f"Job {job_id} is {get(self.store, job_id)['status']}. {self.gpu_line()}".strip()
            return {"job": job_id, "said": said, "failed": False}
        try:
            name = runner.start(self.store, job_id, **remote, by=data.get("by"))
        except runner.SageMakerError as error:
            return {"job": job_id, "said": f"Job {job_id} could not start on SageMaker: {error}", "failed": True}
        said = f"Job {job_id} is running on SageMaker as {name}; the jobs table follows it."
        return {"job": job_id, "said": said, "failed": False}

    def _runner(self, job_id: int | None):
        if self.remote is None:
            raise JobError(
                (f"Job {job_id} runs" if job_id is not None else "Jobs run")
                + " on SageMaker, and this studio was started without its runner."
            )
        return self.remote

    def start_watcher(self, every_s: float = 2.0) -> threading.Thread:
        """A daemon thread that refreshes the jobs, so queued jobs start with no browser open."""

        def loop():
            while True:
                try:
                    self.refresh()
                except Exception as error:  # keep watching; the next tick retries
                    print(f"job watcher: {error}", file=sys.stderr)
                threading.Event().wait(every_s)

        thread = threading.Thread(target=loop, name="align-studio-jobs", daemon=True)
        thread.start()
        return thread
