"""Train tab: launch DPO, SFT, reward-model or online-RL jobs; watch, stop and resume them; follow the rounds."""

import json
import threading
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from pages import Ctx, cancel_button, cancellable, login, message, set_choices, waiting
from studio.core import access, jobs, methods
from studio.core.jobs import JobError
from studio.data import candidates, judges
from studio.data.preferences import PreferenceError
from studio.data.prompts import PromptError, list_prompt_sets
from studio.data.ranking import PAIR_MODES
from studio.evaluation import report
from studio.evaluation.evaluate import EvaluationError
from studio.inference import models
from studio.inference.decode import GenerationParams
from studio.training import diagnostics, launch, recipes, rewards, sagemaker

BASE_CHOICES = ["embedded", "HuggingFaceTB/SmolLM2-360M-Instruct", "meta-llama/Meta-Llama-3-8B-Instruct"]
# Round and parent are in the method cell ("dpo, round 2 from job 1"); the adapter's path is under the progress bar.
JOB_HEADERS = ["Job", "Method", "Status", "Data", "Base", "Step", "Loss", "Margin / reward"]
JOB_WIDTHS = ["6%", "17%", "11%", "26%", "12%", "8%", "9%", "11%"]
PLOTS = {  # plot title -> which logged values it shows
    "Loss": lambda key: key == "loss",
    "Rewards": lambda key: (
        (key.startswith("rewards/") and "accurac" not in key and not key.endswith("/std"))
        or key in ("margin", "reward")
    ),
    "Accuracy · KL · groups": lambda key: (
        "accurac" in key or key in ("kl", "frac_reward_zero_std", "completions/clipped_ratio")
    ),
}
# Logged names as the plots' legends show them (short enough to fit under a third of the page).
SERIES = {
    "rewards/chosen": "chosen",
    "rewards/rejected": "rejected",
    "rewards/margins": "margin",
    "rewards/accuracies": "pair accuracy",
    "mean_token_accuracy": "token accuracy",
    "frac_reward_zero_std": "groups with one reward",
    "completions/clipped_ratio": "answers cut at max length",
}
REWARDS = rewards.REWARDS
TOXICITY_PENALTY = REWARDS + "toxicity_penalty"
# Settings that follow the method, the base model and the data size (launch.recommended), in the order of the
# follow_data outputs.
FOLLOWED = (
    "learning_rate",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "beta",
    "loss_type",
    "max_length",
    "gradient_checkpointing",
    "checkpoint_share",
)
EXAMPLE_HEADERS = ["Prompt", "Base answer", "Adapter's answer", "Score: base -> adapter"]


def _base_choices(ctx: Ctx) -> list:
    """The base models offered, and the finished jobs to continue from."""
    return BASE_CHOICES + [
        (f"continue job {j['id']} ({j['method']}, {j['base_model']})", f"{jobs.JOB_KEY}{j['id']}")
        for j in jobs.finished(ctx.store, "chat")
    ]


def _launching(ctx: Ctx, form: SimpleNamespace):
    """The Launch button's handler over the form's components."""

    def do_launch(values: dict, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """The form (a dict keyed by component) -> launch.launch, which holds every rule (a lead's, where leads are
        named)."""
        f = form
        settings = {name: values[component] for name, component in f.settings.items()}
        settings.update(
            model=values[f.base] or "embedded", lora_target_modules=(values[f.targets] or "all-linear").strip()
        )
        functions = (
            ([TOXICITY_PENALTY] if values[f.toxicity_penalty] else [])
            + [REWARDS + name for name in values[f.verifiable] or []]
            + [name.strip() for name in (values[f.reward_functions] or "").split(",") if name.strip()]
        )
        method_ = values[f.method]
        remote = dict(
            prefix=values[f.sm_prefix],
            role_arn=values[f.sm_role],
            instance_type=values[f.sm_instance],
            instance_count=int(values[f.sm_count] or 1),
            region=(values[f.sm_region] or "").strip() or None,
            image=values[f.sm_image] or "",
        )
        try:
            started = ctx.jobs.submit(
                method_,
                settings,
                where=values[f.where],
                remote=remote,
                prompt_set=values[f.data_set],
                pair_mode=values[f.pair_mode],
                data=values[f.data_other] or "",
                reward_job=values[f.reward_job],
                reward_functions=functions,
                rubric_reward=bool(values[f.rubric_reward]),
                judge=values[f.judge] or "",
                report=report.AUTO if values[f.auto_report] and methods.get(method_).chats else None,
                weighted=bool(values[f.weighted]),
                judges=bool(values[f.judges]),
                by=login(request, profile),
            )
        except (PreferenceError, PromptError, recipes.RecipeError, JobError, ValueError) as error:
            return message(str(error), error=True), gr.skip(), gr.skip()
        said, job_id = message(started["said"], error=started["failed"]), started["job"]
        return (
            said,
            gr.update(choices=_job_choices(jobs.list_jobs(ctx.store)), value=job_id),
            gr.update(choices=_base_choices(ctx)),
        )

    return do_launch


def build_train_tab(ctx: Ctx) -> dict:
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            form = _launch_form(ctx)
        with gr.Column(scale=2):
            view = _job_view(ctx)
            _report_panel(ctx, view.job_pick, view.report_key)
            view.samples.render()
            round_set = _next_round_panel(ctx, view.job_pick)
            view.job_error.render()
            view.log.render()

    def on_select(selected, method_, mode, other):
        # Rankings made on the Rank tab since the last visit change the summary even when the set stays the same.
        sets = set_choices(ctx.store, selected)
        reward_jobs = [
            (f"job {j['id']}: reward model on {j['data']}", j["id"]) for j in jobs.finished(ctx.store, "reward")
        ]
        return (
            sets,
            gr.update(choices=_base_choices(ctx)),
            message(launch.describe_data(ctx.store, method_, sets.get("value"), mode, other)),
            gr.update(choices=reward_jobs),
            set_choices(ctx.store, selected),
        )

    def on_tab(selected, method_, mode, other):
        """The tab opened: as on_select, but with no set chosen yet (the page's load has not answered) it leaves the
        choice and its summary to the load, so that it cannot undo a set chosen in the meantime."""
        if selected:
            return on_select(selected, method_, mode, other)
        sets = set_choices(ctx.store)
        reward_jobs = [
            (f"job {j['id']}: reward model on {j['data']}", j["id"]) for j in jobs.finished(ctx.store, "reward")
        ]
        only = gr.update(choices=sets["choices"])
        return only, gr.update(choices=_base_choices(ctx)), gr.skip(), gr.update(choices=reward_jobs), only

    form.launch.click(
        _launching(ctx, form),
        {
            form.method,
            form.data_set,
            form.pair_mode,
            form.data_other,
            form.base,
            form.targets,
            form.reward_job,
            form.toxicity_penalty,
            form.rubric_reward,
            form.reward_functions,
            form.verifiable,
            form.judge,
            form.auto_report,
            form.weighted,
            form.judges,
            form.where,
            form.sm_prefix,
            form.sm_role,
            form.sm_instance,
            form.sm_count,
            form.sm_region,
            form.sm_image,
            *form.settings.values(),
        },
        [form.launch_status, view.job_pick, form.base],
    )
    view.stop.click(_on_job(ctx.jobs.stop), view.job_pick, form.launch_status)
    view.resume.click(_on_job(ctx.jobs.resume), view.job_pick, form.launch_status)
    return {
        "prompt_set": form.data_set,
        "select": on_select,
        "tab_select": on_tab,
        "select_inputs": [form.data_set, form.method, form.pair_mode, form.data_other],
        "select_outputs": [form.data_set, form.base, form.data_summary, form.reward_job, round_set],
    }


def _launch_form(ctx: Ctx) -> SimpleNamespace:
    """The left column: method, data, base model, settings; the data summary and the recommended settings follow
    the choices."""
    f = SimpleNamespace()
    f.method = gr.Radio(
        [(m.label, m.key) for m in methods.METHODS.values()],
        value="dpo",
        label="Method",
        info="SFT trains on the chosen answers of the pairs, or on a file of demonstrations "
        "(messages or prompt/completion)",
        elem_id="train-method",
    )
    f.data_set = gr.Dropdown([], label=methods.get("dpo").data_label, elem_id="train-set")
    f.method.change(lambda key: gr.update(label=methods.get(key).data_label), f.method, f.data_set, queue=False)
    f.pair_mode = gr.Radio(
        [(label, key) for key, label in PAIR_MODES.items()], value=recipes.PAIR_MODE, label="Pairs from each ranking"
    )
    with gr.Row():
        f.weighted = gr.Checkbox(
            False, label="Weigh each annotator's votes by their quality (Rank tab, Team)", elem_id="train-weighted"
        )
        f.judges = gr.Checkbox(False, label="Count the judges' rankings as votes", elem_id="train-judges")
    f.data_other = gr.Textbox(
        label="or a file / Hub data set id (used instead of the set when filled)",
        placeholder="/data/prefs.jsonl or Anthropic/hh-rlhf",
    )
    f.data_summary = gr.Markdown(elem_id="train-data-summary")
    f.base = gr.Dropdown(
        BASE_CHOICES,
        value="embedded",
        allow_custom_value=True,
        label="Base model",
        info="or continue from an earlier job's adapter",
        elem_id="train-base",
    )
    s = {}  # recipe field -> its component (launch.launch keeps the fields of the chosen method)
    _model_settings(f, s)
    settings_note = gr.Markdown(elem_id="train-settings-note")
    f.fit = gr.Markdown(elem_id="train-fit")  # the job's estimated peak memory against what is free
    _rl_settings(ctx, f, s)
    f.auto_report = gr.Checkbox(
        True,
        label="Make the alignment report when the job finishes",
        info=f"base and adapter answer up to {report.AUTO_LIMIT} held-out prompts per set, "
        "3 times each; the report is on the right",
        elem_id="train-auto-report",
    )
    _where_settings(f)
    f.launch = gr.Button("Launch", variant="primary", elem_id="train-launch")
    f.launch_status = gr.Markdown(elem_id="train-launch-status")
    f.settings = s

    def describe(method_, set_name, mode, other):
        return message(launch.describe_data(ctx.store, method_, set_name, mode, other))

    def follow_data(method_, set_name, mode, other, base_ref):
        """The recommended settings for this method, base and data size, and why."""
        values = launch.recommended(ctx.store, method_, set_name, mode, other, base_ref)
        updates = [gr.update(value=values[name]) if name in values else gr.skip() for name in FOLLOWED]
        updates[FOLLOWED.index("loss_type")] = gr.update(
            choices=recipes.loss_choices(method_), value=values.get("loss_type", "sigmoid")
        )
        return *updates, message(values["why"])

    gr.on(
        [f.method.change, f.data_set.change, f.pair_mode.change, f.data_other.change],
        describe,
        [f.method, f.data_set, f.pair_mode, f.data_other],
        f.data_summary,
    )
    # The data enters through its summary, which changes with the set, the pair rule, the file and with rankings made
    # on the Rank tab since (describe is wired to those changes above): one run per change, not two.
    followed = gr.on(
        [f.method.change, f.base.change, f.data_summary.change],
        follow_data,
        [f.method, f.data_set, f.pair_mode, f.data_other, f.base],
        [s[name] for name in FOLLOWED] + [settings_note],
    )
    _wire_fit_check(ctx, f, followed)
    return f


FIT_FIELDS = (
    "per_device_train_batch_size",
    "max_length",
    "gradient_checkpointing",
    "checkpoint_share",
    "load_in_4bit",
    "lora_r",
    "max_completion_length",
    "num_generations",
)


def _wire_fit_check(ctx: Ctx, f: SimpleNamespace, followed) -> None:
    """The fit line follows the base, the method and the data (once the recommended settings they bring are in:
    `followed`), and every edit of a setting that changes the peak memory."""
    fields = [f.settings[name] for name in FIT_FIELDS]

    def check(method_, set_name, mode, other, base, targets, *values):
        settings = dict(zip(FIT_FIELDS, values), model=base or "embedded", lora_target_modules=targets)
        return message(launch.fit_check(ctx.store, method_, settings, set_name, mode, other or ""))

    inputs = [f.method, f.data_set, f.pair_mode, f.data_other, f.base, f.targets, *fields]
    followed.then(check, inputs, f.fit, show_progress="hidden")
    gr.on([f.targets.input, *(c.input for c in fields)], check, inputs, f.fit, show_progress="hidden")


def _model_settings(f: SimpleNamespace, s: dict) -> None:
    """LoRA and the hyperparameters: recipe fields into `s`, the target modules into `f`."""
    help_ = recipes.help_text
    with gr.Accordion("LoRA", open=False):
        s["lora_r"] = gr.Number(16, precision=0, minimum=1, label="Rank r", info=help_("lora_r"))
        s["lora_alpha"] = gr.Number(32, precision=0, minimum=1, label="Alpha", info=help_("lora_alpha"))
        s["lora_dropout"] = gr.Number(0.05, minimum=0, maximum=0.9, label="Dropout", info=help_("lora_dropout"))
        f.targets = gr.Textbox("all-linear", label="Target modules", info=help_("lora_target_modules"))
        s["load_in_4bit"] = gr.Checkbox(False, label="4-bit QLoRA (CUDA GPU only)")
    with gr.Accordion("Hyperparameters", open=False):
        s["learning_rate"] = gr.Number(5e-5, label="Learning rate", info=help_("learning_rate"))
        s["num_train_epochs"] = gr.Number(1, minimum=0.01, label="Epochs", info=help_("num_train_epochs"))
        s["max_steps"] = gr.Number(
            -1, precision=0, label="Max steps (-1: epochs decide)", elem_id="train-steps", info=help_("max_steps")
        )
        s["per_device_train_batch_size"] = gr.Number(
            2,
            precision=0,
            minimum=1,
            label="Batch size per device",
            info=help_("per_device_train_batch_size"),
            elem_id="train-batch",
        )
        s["gradient_accumulation_steps"] = gr.Number(
            1, precision=0, minimum=1, label="Gradient accumulation steps", info=help_("gradient_accumulation_steps")
        )
        s["processes"] = gr.Number(
            0,
            precision=0,
            minimum=0,
            label="Training processes (data parallel)",
            info=help_("processes"),
            elem_id="train-processes",
        )
        s["beta"] = gr.Number(
            0.1,
            minimum=0,
            label="Beta (DPO: preference strength; RL: KL penalty weight)",
            info=help_("beta"),
            elem_id="train-beta",
        )
        s["max_length"] = gr.Number(512, precision=0, minimum=16, label="Max length (tokens)", info=help_("max_length"))
        s["save_steps"] = gr.Number(
            50, precision=0, minimum=1, label="Checkpoint every N steps", info=help_("save_steps")
        )
        s["loss_type"] = gr.Dropdown(
            [(label, key) for key, label in recipes.LOSS_TYPES.items()],
            value="sigmoid",
            label="Loss (DPO, GRPO)",
            info=help_("loss_type"),
            elem_id="train-loss",
        )
        s["seed"] = gr.Number(42, precision=0, label="Seed", info=help_("seed"))
        s["gradient_checkpointing"] = gr.Checkbox(
            True, label="Gradient checkpointing", info=help_("gradient_checkpointing"), elem_id="train-checkpointing"
        )
        s["checkpoint_share"] = gr.Slider(
            0.1,
            1.0,
            value=1.0,
            step=0.05,
            label="Share of layers checkpointed",
            info=help_("checkpoint_share"),
            elem_id="train-checkpoint-share",
        )


def _rl_settings(ctx: Ctx, f: SimpleNamespace, s: dict) -> None:
    """Online RL: the rewards (into `f`) and the sampling settings (recipe fields, into `s`)."""
    help_ = recipes.help_text

    def judge_choices() -> list:
        return [("none", ""), *judges.judge_models(ctx.store)]

    with gr.Accordion("Online RL (RLOO, GRPO): rewards and sampling", open=False, elem_id="train-rl"):
        f.reward_job = gr.Dropdown([], label="Reward model: a finished reward-model job", elem_id="train-reward")
        f.toxicity_penalty = gr.Checkbox(
            False, label="Add the toxicity penalty (minus offline toxicity, 0-1)", elem_id="train-toxicity"
        )
        f.rubric_reward = gr.Checkbox(
            False, label="Reward with the prompt set's rubric (0-1)", elem_id="train-rubric-reward"
        )
        f.judge = gr.Dropdown(
            judge_choices(),
            value="",
            allow_custom_value=True,
            label="LLM judge: scores each answer 1-10 against the set's guidelines",
            info="a model here (embedded, a Hub id) or a served one (server:<name>/<model>, Generate tab)",
            elem_id="train-judge",
        )
        # A server added on the Generate tab since the page loaded is listed when the list is opened.
        f.judge.focus(lambda: gr.update(choices=judge_choices()), None, f.judge, queue=False)
        f.verifiable = gr.CheckboxGroup(
            [(f"{name}: {line}", name) for name, line in rewards.VERIFIABLE.items()],
            label="Checks of each answer: against the prompt's reference answer (the set's answer column; bank_math "
            "has one), its format, its length",
            elem_id="train-verifiable",
        )
        f.reward_functions = gr.Textbox(
            label="More reward functions (module:function, comma separated)",
            info=help_("reward_functions"),
            elem_id="train-reward-fns",
        )
        s["reward_weights"] = gr.Textbox(
            label="Reward weights (comma separated; empty: all 1)",
            info="in this order: reward model, rubric, judge, toxicity, the checks above, more functions",
            elem_id="train-reward-weights",
        )
        s["num_generations"] = gr.Number(
            4, precision=0, minimum=2, label="Answers sampled per prompt", info=help_("num_generations")
        )
        s["max_completion_length"] = gr.Number(
            48,
            precision=0,
            minimum=4,
            label="Max answer length (tokens)",
            info=help_("max_completion_length"),
            elem_id="train-completion",
        )


def _where_settings(f: SimpleNamespace) -> None:
    """Where the job runs: here, or a SageMaker training job and its settings."""
    with gr.Accordion("Where it runs: this machine or SageMaker", open=False, elem_id="train-where-box"):
        f.where = gr.Radio(
            [("This machine", "local"), ("A SageMaker training job (your AWS credentials)", "sagemaker")],
            value="local",
            label="Run on",
            elem_id="train-where",
        )
        gr.Markdown(
            "SageMaker runs the same recipe in Hugging Face's PyTorch training container; the jobs table "
            "follows it (state and metrics every 30 s) and the adapter comes back here when it is done. "
            "Credentials come from AWS_* variables, ~/.aws or an instance role; they are never saved."
        )
        f.sm_prefix = gr.Textbox(
            label="S3 prefix for the job's files", placeholder="s3://my-bucket/align-studio", elem_id="train-sm-prefix"
        )
        f.sm_role = gr.Textbox(
            label="SageMaker execution role ARN",
            placeholder="arn:aws:iam::123456789012:role/SageMakerExecutionRole",
            elem_id="train-sm-role",
        )
        with gr.Row():
            f.sm_instance = gr.Textbox("ml.g5.2xlarge", label="Instance type", elem_id="train-sm-instance")
            f.sm_count = gr.Number(1, precision=0, minimum=1, label="Instances", elem_id="train-sm-count")
            f.sm_region = gr.Textbox(
                label="Region (else AWS_REGION)", placeholder="us-east-1", elem_id="train-sm-region"
            )
        f.sm_image = gr.Textbox(
            label="Training image (empty: Hugging Face's PyTorch training container)",
            placeholder=sagemaker.TRAINING_IMAGE.format(region="<region>"),
            elem_id="train-sm-image",
        )


def _job_choices(listed: list[dict]) -> list[tuple]:
    return [(f"{j['id']}: {j['method']} on {j['data']} ({j['status']})", j["id"]) for j in listed]


def _job_rows(listed: list[dict]) -> list[list]:
    rows = []
    for job in listed:
        last = jobs.last_metrics(jobs.metrics(job))
        method_ = (
            jobs.method_label(job)
            + (f", round {job['round']}" if job["round"] and job["round"] > 1 else "")
            + (f" from job {job['parent_job_id']}" if job["parent_job_id"] else "")
        )
        rows.append(
            [
                job["id"],
                method_,
                job["status"] + (" on SageMaker" if job["remote"] else ""),
                job["data"],
                job["base_model"],
                last.get("step", 0),
                _fmt(last.get("loss")),
                _fmt(last.get("rewards/margins", last.get("margin", last.get("reward")))),
            ]
        )
    return rows


def _plot_frames(rows: list[dict]) -> list:
    frames = []
    for wanted in PLOTS.values():
        points = [
            (row["step"], SERIES.get(key, key), value)
            for row in rows
            for key, value in row.items()
            if wanted(key) and isinstance(value, (int, float))
        ]
        frames.append(pd.DataFrame(points, columns=["step", "metric", "value"]) if points else None)
    return frames


def _job_view(ctx: Ctx) -> SimpleNamespace:
    """The jobs table and the selected job: progress, plots, lineage, RL samples, error and log (the last three are
    made here and placed by the caller, with render())."""
    v = SimpleNamespace()
    v.table = gr.Dataframe(
        headers=JOB_HEADERS,
        interactive=False,
        wrap=True,
        max_height=260,
        column_widths=JOB_WIDTHS,
        label="Jobs",
        elem_id="train-jobs",
    )
    with gr.Row():
        v.job_pick = gr.Dropdown([], label="Job", elem_id="train-job", scale=3)
        v.stop = gr.Button("Stop", variant="secondary", interactive=False, elem_id="train-stop", scale=1)
        v.resume = gr.Button("Resume", elem_id="train-resume", scale=1)
    progress = gr.Slider(
        0, 1, value=0, step=1, label="Progress (steps)", interactive=False, elem_id="train-progress-bar"
    )
    progress_text = gr.Markdown(elem_id="train-progress")
    findings = gr.Markdown(elem_id="train-diagnostics")
    with gr.Row():
        plots = [
            gr.LinePlot(x="step", y="value", color="metric", title=title, height=240, elem_id=f"train-plot-{i}")
            for i, title in enumerate(PLOTS)
        ]
    lineage = gr.Markdown(elem_id="train-lineage")
    v.samples = gr.Dataframe(
        headers=["Step", "Reward function", "Reward", "Prompt", "Sampled answer"],
        interactive=False,
        wrap=True,
        max_height=260,
        visible=False,
        elem_id="train-samples",
        label="RL: sampled answers and their rewards (latest first)",
        render=False,
    )
    v.job_error = gr.Textbox(
        label="Error", visible=False, lines=6, interactive=False, elem_id="train-error", render=False
    )
    v.log = gr.Textbox(
        label="Log (last lines)",
        lines=10,
        max_lines=10,
        interactive=False,
        autoscroll=True,
        elem_id="train-log",
        render=False,
    )
    # report_key changes when the selected job's state or its newest report does: the report panel follows it.
    v.report_key = gr.State("")
    timer = gr.Timer(2.0)

    gr.on(
        [timer.tick, v.job_pick.change],
        lambda job_id: _show_job(ctx, job_id),
        v.job_pick,
        [
            v.table,
            v.job_pick,
            progress,
            progress_text,
            findings,
            *plots,
            v.job_error,
            v.log,
            lineage,
            v.samples,
            v.report_key,
            v.stop,
            v.resume,
        ],
        show_progress="hidden",
    )
    return v


def _no_job(said: str) -> list:
    """The selected job's outputs (after the table and the choices) when there is none to show."""
    off = gr.update(interactive=False, variant="secondary")
    # progress, its line, findings, plots, error, log, lineage, samples, report key, Stop, Resume
    hidden = gr.update(visible=False)
    return [gr.update(value=0), said, "", *[None] * len(PLOTS), hidden, "", "", hidden, "", off, off]


def _show_job(ctx: Ctx, job_id):
    """Table, choices and the selected job's progress, plots, error and log. With none selected (a fresh page),
    the running job is selected, else the newest one."""
    listed = jobs.list_jobs(ctx.store)
    if job_id is None and listed:
        job_id = next((j["id"] for j in listed if j["status"] == "running"), listed[0]["id"])
    outputs = [_job_rows(listed), gr.update(choices=_job_choices(listed), value=job_id)]
    if job_id is None:
        return outputs + _no_job("")
    try:
        job = jobs.get(ctx.store, int(job_id))
    except JobError as error:
        return outputs + _no_job(message(str(error), error=True))
    rows = jobs.metrics(job)
    last = jobs.last_metrics(rows)
    step, total = int(last.get("step", 0)), int(last.get("max_steps", 0) or 1)
    found = report.latest(ctx.store, job["id"])
    sampled = jobs.rl_samples(job)
    said = diagnostics.diagnose(job["method"], rows, json.loads(job["data_info"] or "{}").get("pairs"))
    return outputs + [
        gr.update(value=min(step, total), maximum=total),
        message(" · ".join(filter(None, (jobs.progress_line(job, last), sagemaker.progress(job))))),
        "\n".join(f"- {message(line)}" for line in said),
        *_plot_frames(rows),
        gr.update(value=job["error"] or "", visible=bool(job["error"])),
        jobs.log_tail(job),
        message(jobs.lineage_line(ctx.store, job["id"])),
        gr.update(visible=False)
        if sampled is None
        else gr.update(
            visible=True,
            value=[[r["step"], r["reward_function"], _fmt(r["reward"]), r["prompt"], r["completion"]] for r in sampled],
        ),
        f"{job['id']}/{job['status']}/{found and found['id']}/{found and found['status']}",
        # Stop for a job that is queued or running, Resume for one that stopped or failed.
        gr.update(
            interactive=(stoppable := job["status"] in ("queued", "running")),
            variant="stop" if stoppable else "secondary",
        ),
        gr.update(interactive=job["status"] in ("stopped", "failed")),
    ]


def _no_report(choices, said=""):
    return [choices, said, [], [], "", []]


def _report_view(ctx: Ctx, job_id):
    """The selected job's held-out sets (default ones chosen) and its newest report."""
    if job_id is None:
        return _no_report(gr.update(choices=[], value=[]))
    try:
        job = jobs.get(ctx.store, int(job_id))
    except JobError:
        return _no_report(gr.update(choices=[], value=[]))
    choices = gr.update(choices=[s["name"] for s in list_prompt_sets(ctx.store)])
    if not methods.get(job["method"]).chats:
        return _no_report(choices, message("A reward model scores answers; reports are for DPO, SFT and RL adapters."))
    if jobs.adapter_folder(job) is None:
        return _no_report(choices, message(f"The report can be made once job {job['id']} has finished."))
    try:
        choices = gr.update(choices=choices["choices"], value=report.default_sets(ctx.store, job["id"]))
    except report.ReportError:
        pass
    found = report.latest(ctx.store, job["id"])
    if found is None:
        return _no_report(choices, message("No report yet: press Make the alignment report."))
    if found["summary"] is None:
        state = "is being made" if found["status"] == "generating" else f"{found['status']}: {found['error']}"
        return _no_report(choices, message(f"Report {found['id']} {state}."))
    summary = found["summary"]
    said = summary["warnings"] + [f"Not learned: {line}" for line in report.rule_lines(summary)]
    listed = "\n".join(f"- {message(w)}" for w in said) or message("No warnings.")
    shown = [
        [
            e["prompt"],
            e["base"],
            e["aligned"],
            f"{e['base_score']:.2f} -> {e['aligned_score']:.2f}" if e["base_score"] is not None else "",
        ]
        for entry in summary["sets"]
        for e in entry["examples"]
    ]
    sizes = ", ".join(
        f"{e['prompt_set']} {e['prompts']} prompts x {e['samples']}, words "
        f"{e['words']['base']:.0f} -> {e['words']['aligned']:.0f}"
        for e in summary["sets"]
    )
    return [
        choices,
        message(f"Report {found['id']} ({found['created_at'][:16].replace('T', ' ')}): {sizes}."),
        report.table(summary),
        report.rule_table(summary),
        listed,
        shown,
    ]


def _report_panel(ctx: Ctx, job_pick, report_key):
    """The alignment report of the selected job (it follows report_key, which changes with the job's state and its
    newest report): made automatically after training, or on demand here."""
    with gr.Accordion("Alignment report: did it work?", open=True, elem_id="train-report-box"):
        with gr.Row():
            sets = gr.Dropdown(
                [],
                multiselect=True,
                label="Held-out prompt sets",
                scale=3,
                info="default: prompts the job did not train on",
                elem_id="train-report-sets",
            )
            samples = gr.Number(
                3,
                precision=0,
                minimum=1,
                maximum=8,
                label="Samples per prompt",
                scale=1,
                elem_id="train-report-samples",
            )
            limit = gr.Number(
                0,
                precision=0,
                minimum=0,
                label="First N prompts per set (0 = all)",
                scale=1,
                elem_id="train-report-limit",
            )
            tokens = gr.Number(
                report.ReportSettings.max_new_tokens,
                precision=0,
                minimum=8,
                maximum=1024,
                label="Max new tokens",
                scale=1,
                info="as in generation: shorter is quicker, but cuts answers",
                elem_id="train-report-tokens",
            )
        with gr.Row():
            go = gr.Button("Make the alignment report", elem_id="train-report-go")
            cancel = cancel_button(elem_id="train-report-cancel")
        status = gr.Markdown(elem_id="train-report-status")
        table = gr.Dataframe(
            headers=report.TABLE_HEADERS,
            interactive=False,
            wrap=True,
            elem_id="train-report",
            column_widths=["13%", "10%", "15%", "14%", "13%", "20%", "15%"],
            label="Adapter against the base, per scorer",
        )
        rules = gr.Dataframe(
            headers=report.RULE_HEADERS,
            interactive=False,
            wrap=True,
            elem_id="train-report-rules",
            column_widths=["12%", "24%", "8%", "16%", "16%", "14%", "10%"],
            label="Rules of the rubric: answers that pass each one, base against adapter (and declining to help)",
        )
        warnings = gr.Markdown(elem_id="train-report-warnings")
        examples = gr.Dataframe(
            headers=EXAMPLE_HEADERS,
            interactive=False,
            wrap=True,
            max_height=360,
            column_widths=["18%", "36%", "36%", "10%"],
            elem_id="train-report-examples",
            label="Examples",
        )

    def make(job_id, chosen_sets, samples_, first_n, tokens_, request: gr.Request, progress_=gr.Progress()):
        if job_id is None:
            return message("Choose a finished job above.", error=True)
        event = ctx.cancel_events[request.session_hash] = threading.Event()
        try:
            progress_(0, desc="Loading the base model and the adapter")
            made = report.create(
                ctx.store,
                int(job_id),
                report.ReportSettings(
                    prompt_sets=list(chosen_sets or []),
                    samples=int(samples_ or 3),
                    limit=int(first_n or 0),
                    max_new_tokens=int(tokens_ or report.ReportSettings.max_new_tokens),
                ),
                cancel=event,
                on_progress=lambda done, total, what: progress_((done, total), desc=what, unit=""),
            )
        except (report.ReportError, JobError, EvaluationError, models.ModelError, ValueError) as error:
            return message(str(error), error=True)
        finally:
            ctx.cancel_events.pop(request.session_hash, None)
        return message(f"Report {made} is ready.")

    outputs = [sets, status, table, rules, warnings, examples]
    report_key.change(lambda job_id: _report_view(ctx, job_id), job_pick, outputs)
    cancellable(
        go.click(waiting, None, status, queue=False),
        cancel,
        make,
        [job_pick, sets, samples, limit, tokens],
        status,
        concurrency_limit=1,
        concurrency_id="model",
    ).then(lambda job_id: _report_view(ctx, job_id), job_pick, outputs)
    cancel.click(ctx.canceller("Cancelling the report…"), None, status)


def _next_round_panel(ctx: Ctx, job_pick):
    """Candidates from the selected job's adapter for the next round of ranking; returns its prompt-set list."""
    with gr.Accordion("Next round: candidates from this job's adapter", open=False):
        with gr.Row():
            round_set = gr.Dropdown([], label="Prompt set", elem_id="train-round-set", scale=2)
            k = gr.Number(2, precision=0, minimum=1, maximum=8, label="Candidates per prompt", scale=1)
            limit = gr.Number(
                0, precision=0, minimum=0, label="First N prompts (0 = all)", scale=1, elem_id="train-round-limit"
            )
        with gr.Row():
            go = gr.Button("Generate next-round candidates", elem_id="train-round-go")
            cancel = cancel_button(elem_id="train-round-cancel")
        status = gr.Markdown(elem_id="train-round-status")

    def next_round(job_id, set_name, k_, first_n, request: gr.Request, progress_=gr.Progress()):
        if job_id is None or not set_name:
            return message("Choose a finished job above and a prompt set.", error=True)
        event = ctx.cancel_events[request.session_hash] = threading.Event()
        try:
            progress_(0, desc="Loading the base model and the adapter")
            result = candidates.next_round_candidates(
                ctx.store,
                int(job_id),
                set_name,
                GenerationParams(k=int(k_)),
                int(first_n or 0),
                cancel=event,
                on_progress=lambda done, total: progress_((done, total), desc="prompts", unit="prompts"),
            )
        except (JobError, PromptError, models.ModelError, ValueError) as error:
            return message(str(error), error=True)
        finally:
            ctx.cancel_events.pop(request.session_hash, None)
        return message(
            f"Saved {result.responses_added} candidates from job {job_id}'s adapter for "
            f"{result.prompts_done} prompts of {set_name}; they are in the Rank queue for the next round."
        )

    cancellable(
        go.click(waiting, None, status, queue=False),
        cancel,
        next_round,
        [job_pick, round_set, k, limit],
        status,
        concurrency_limit=1,
        concurrency_id="model",
    )
    cancel.click(ctx.canceller("Cancelling: finished prompts are kept…"), None, status)
    return round_set


def _on_job(action):
    """A handler for Stop or Resume: the manager's answer, or what is wrong."""

    def handler(job_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if job_id is None:
            return message("Choose a job.", error=True)
        try:
            return message(action(int(job_id), by=login(request, profile)))
        except (JobError, access.TeamError) as error:
            return message(str(error), error=True)

    return handler


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4g}"
