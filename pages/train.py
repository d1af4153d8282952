"""Train tab: launch DPO, SFT, reward-model or online-RL jobs; watch, stop and resume them; follow the rounds."""

import json
import threading
from pathlib import Path

import pandas as pd

import gradio as gr

from pages import Ctx, message, set_choices, waiting
from studio import jobs, methods, models, recipes, report
from studio.generate import GenerationParams
from studio.jobs import JobError
from studio.preferences import PreferenceError, preference_rows, training_snapshot
from studio.evaluate import EvaluationError
from studio.prompts import PromptError, get_prompts, list_prompt_sets
from studio.ranking import PAIR_MODES

BASE_CHOICES = ["embedded", "HuggingFaceTB/SmolLM2-360M-Instruct", "meta-llama/Meta-Llama-3-8B-Instruct"]
# Round and parent are in the method cell ("dpo, round 2 from job 1"); the adapter's path is under the progress bar.
JOB_HEADERS = ["Job", "Method", "Status", "Data", "Base", "Step", "Loss", "Margin / reward"]
JOB_WIDTHS = ["6%", "17%", "11%", "26%", "12%", "8%", "9%", "11%"]
PLOTS = {  # plot title -> which logged values it shows
    "Loss": lambda key: key == "loss",
    "Rewards": lambda key: (
        key.startswith("rewards/") and "accurac" not in key and not key.endswith("/std")) or key in ("margin", "reward"),
    "Accuracy · KL": lambda key: "accurac" in key or key == "kl",
}
# Logged names as the plots' legends show them (short enough to fit under a third of the page).
SERIES = {"rewards/chosen": "chosen", "rewards/rejected": "rejected", "rewards/margins": "margin",
          "rewards/accuracies": "pair accuracy", "mean_token_accuracy": "token accuracy"}
TOXICITY_PENALTY = "studio.rewards:toxicity_penalty"
# Settings that follow the method, the base model and the data size (recipes.recommended), in the order of the
# follow_data outputs.
FOLLOWED = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "beta",
            "loss_type", "max_length", "gradient_checkpointing")
EXAMPLE_HEADERS = ["Prompt", "Base answer", "Adapter's answer", "Score: base -> adapter"]


def build_train_tab(ctx: Ctx) -> dict:
    help_ = recipes.help_text

    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            method = gr.Radio([(label.split(" on ")[0], key) for key, label in recipes.METHODS.items()], value="dpo",
                              label="Method", info="SFT trains on the chosen answers of the pairs, or on a file "
                                                   "of demonstrations (messages or prompt/completion)",
                              elem_id="train-method")
            data_set = gr.Dropdown([], label="Data: the rankings of a prompt set", elem_id="train-set")
            pair_mode = gr.Radio([(label, key) for key, label in PAIR_MODES.items()], value=recipes.PAIR_MODE,
                                 label="Pairs from each ranking")
            data_other = gr.Textbox(label="or a file / Hub data set id (used instead of the set when filled)",
                                    placeholder="/data/prefs.jsonl or Anthropic/hh-rlhf")
            data_summary = gr.Markdown(elem_id="train-data-summary")
            base = gr.Dropdown(BASE_CHOICES, value="embedded", allow_custom_value=True, label="Base model",
                               info="or continue from an earlier job's adapter", elem_id="train-base")
            with gr.Accordion("LoRA", open=False):
                lora_r = gr.Number(16, precision=0, minimum=1, label="Rank r", info=help_("lora_r"))
                lora_alpha = gr.Number(32, precision=0, minimum=1, label="Alpha", info=help_("lora_alpha"))
                lora_dropout = gr.Number(0.05, minimum=0, maximum=0.9, label="Dropout", info=help_("lora_dropout"))
                targets = gr.Textbox("all-linear", label="Target modules", info=help_("lora_target_modules"))
                four_bit = gr.Checkbox(False, label="4-bit QLoRA (CUDA GPU only)")
            with gr.Accordion("Hyperparameters", open=False):
                learning_rate = gr.Number(5e-5, label="Learning rate", info=help_("learning_rate"))
                epochs = gr.Number(1, minimum=0.01, label="Epochs", info=help_("num_train_epochs"))
                max_steps = gr.Number(-1, precision=0, label="Max steps (-1: epochs decide)", elem_id="train-steps",
                                      info=help_("max_steps"))
                batch_size = gr.Number(2, precision=0, minimum=1, label="Batch size per device",
                                       info=help_("per_device_train_batch_size"), elem_id="train-batch")
                accumulation = gr.Number(1, precision=0, minimum=1, label="Gradient accumulation steps",
                                         info=help_("gradient_accumulation_steps"))
                beta = gr.Number(0.1, minimum=0, label="Beta (DPO: preference strength; RL: KL penalty weight)",
                                 info=help_("beta"), elem_id="train-beta")
                max_length = gr.Number(512, precision=0, minimum=16, label="Max length (tokens)",
                                       info=help_("max_length"))
                save_steps = gr.Number(50, precision=0, minimum=1, label="Checkpoint every N steps",
                                       info=help_("save_steps"))
                loss_type = gr.Dropdown([(label, key) for key, label in recipes.LOSS_TYPES.items()],
                                        value="sigmoid", label="DPO loss", info=help_("loss_type"),
                                        elem_id="train-loss")
                seed = gr.Number(42, precision=0, label="Seed", info=help_("seed"))
                checkpointing = gr.Checkbox(True, label="Gradient checkpointing", info=help_("gradient_checkpointing"),
                                            elem_id="train-checkpointing")
            settings_note = gr.Markdown(elem_id="train-settings-note")
            with gr.Accordion("Online RL (RLOO)", open=False, elem_id="train-rl"):
                reward_job = gr.Dropdown([], label="Reward model: a finished reward-model job", elem_id="train-reward")
                toxicity_penalty = gr.Checkbox(False, label="Add the toxicity penalty (minus offline toxicity, 0-1)",
                                               elem_id="train-toxicity")
                rubric_reward = gr.Checkbox(False, label="Reward with the prompt set's rubric (0-1)",
                                            elem_id="train-rubric-reward")
                reward_functions = gr.Textbox(label="More reward functions (module:function, comma separated)",
                                              info=help_("reward_functions"), elem_id="train-reward-fns")
                generations = gr.Number(4, precision=0, minimum=2, label="Answers sampled per prompt",
                                        info=help_("num_generations"))
                completion_length = gr.Number(48, precision=0, minimum=4, label="Max answer length (tokens)",
                                              info=help_("max_completion_length"), elem_id="train-completion")
            auto_report = gr.Checkbox(True, label="Make the alignment report when the job finishes",
                                      info=f"base and adapter answer up to {report.AUTO_LIMIT} held-out prompts "
                                           "per set, 3 times each; the report is on the right",
                                      elem_id="train-auto-report")
            launch = gr.Button("Launch", variant="primary", elem_id="train-launch")
            launch_status = gr.Markdown(elem_id="train-launch-status")
        with gr.Column(scale=2):
            jobs_table = gr.Dataframe(headers=JOB_HEADERS, interactive=False, wrap=True, max_height=260,
                                      column_widths=JOB_WIDTHS, label="Jobs", elem_id="train-jobs")
            with gr.Row():
                job_pick = gr.Dropdown([], label="Job", elem_id="train-job", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="train-stop", scale=1)
                resume = gr.Button("Resume", elem_id="train-resume", scale=1)
            progress = gr.Slider(0, 1, value=0, step=1, label="Progress (steps)", interactive=False,
                                 elem_id="train-progress-bar")
            progress_text = gr.Markdown(elem_id="train-progress")
            with gr.Row():
                plots = [gr.LinePlot(x="step", y="value", color="metric", title=title, height=240,
                                     elem_id=f"train-plot-{i}") for i, title in enumerate(PLOTS)]
            lineage_text = gr.Markdown(elem_id="train-lineage")
            with gr.Accordion("Alignment report: did it work?", open=True, elem_id="train-report-box"):
                with gr.Row():
                    report_sets = gr.Dropdown([], multiselect=True, label="Held-out prompt sets", scale=3,
                                              info="default: prompts the job did not train on",
                                              elem_id="train-report-sets")
                    report_samples = gr.Number(3, precision=0, minimum=1, maximum=8, label="Samples per prompt",
                                               scale=1, elem_id="train-report-samples")
                    report_limit = gr.Number(0, precision=0, minimum=0, label="First N prompts per set (0 = all)",
                                             scale=1, elem_id="train-report-limit")
                    report_tokens = gr.Number(report.ReportSettings.max_new_tokens, precision=0, minimum=8,
                                              maximum=1024, label="Max new tokens", scale=1,
                                              info="as in generation: shorter is quicker, but cuts answers",
                                              elem_id="train-report-tokens")
                with gr.Row():
                    report_go = gr.Button("Make the alignment report", elem_id="train-report-go")
                    report_cancel = gr.Button("Cancel", variant="stop")
                report_status = gr.Markdown(elem_id="train-report-status")
                report_table = gr.Dataframe(headers=report.TABLE_HEADERS, interactive=False, wrap=True,
                                            elem_id="train-report", label="Adapter against the base, per scorer")
                report_warnings = gr.Markdown(elem_id="train-report-warnings")
                report_examples = gr.Dataframe(headers=EXAMPLE_HEADERS, interactive=False, wrap=True, max_height=360,
                                               column_widths=["18%", "36%", "36%", "10%"],
                                               elem_id="train-report-examples", label="Examples")
            samples = gr.Dataframe(headers=["Step", "Reward function", "Reward", "Prompt", "Sampled answer"],
                                   interactive=False, wrap=True, max_height=260, visible=False, elem_id="train-samples",
                                   label="RL: sampled answers and their rewards (latest first)")
            with gr.Accordion("Next round: candidates from this job's adapter", open=False):
                with gr.Row():
                    round_set = gr.Dropdown([], label="Prompt set", elem_id="train-round-set", scale=2)
                    round_k = gr.Number(2, precision=0, minimum=1, maximum=8, label="Candidates per prompt", scale=1)
                    round_limit = gr.Number(0, precision=0, minimum=0, label="First N prompts (0 = all)", scale=1,
                                            elem_id="train-round-limit")
                with gr.Row():
                    round_go = gr.Button("Generate next-round candidates", elem_id="train-round-go")
                    round_cancel = gr.Button("Cancel", variant="stop")
                round_status = gr.Markdown(elem_id="train-round-status")
            job_error = gr.Textbox(label="Error", visible=False, lines=6, interactive=False, elem_id="train-error")
            log = gr.Textbox(label="Log (last lines)", lines=10, max_lines=10, interactive=False, autoscroll=True,
                             elem_id="train-log")
    timer = gr.Timer(2.0)

    def describe(method_, set_name, mode, other):
        if (other or "").strip():
            return message(f"Trains on {other.strip()} (checked when the job starts).")
        if not set_name:
            return message("Choose a prompt set, or give a file or a Hub data set id.")
        if method_ == "rloo":
            count = len(get_prompts(ctx.store, set_name))
            return message(f"{count} prompts of {set_name}: the policy samples its own answers, the reward scores them.")
        try:
            rows, info = training_snapshot(ctx.store, set_name, mode)
        except PreferenceError as error:  # an empty state (nothing ranked yet), not a mistake: said in neutral words
            return message(str(error))
        what = "chosen answers" if method_ == "sft" else "pairs"
        return message(f"{info['pairs']} {what} from {info['rankings']} rankings by {len(info['annotators'])} "
                       f"annotator(s) on {info['prompts']} prompts ({info['conflicts']} conflicting, "
                       f"{info['unresolved']} dropped).")

    def follow_data(method_, set_name, mode, other, base_ref):
        """The recommended settings for this method, base and data size (recipes.recommended), and why."""
        rows = 0
        if set_name and not (other or "").strip():
            rows = len(get_prompts(ctx.store, set_name)) if method_ == "rloo" else \
                len(preference_rows(ctx.store, set_name, mode)[0])
        model = base_ref or "embedded"
        if model.startswith("job:"):
            try:
                model = jobs.get(ctx.store, int(model.removeprefix("job:")))["base_model"]
            except (ValueError, JobError):
                model = "embedded"
        values = recipes.recommended(method_, model, rows)
        updates = [gr.update(value=values[name]) if name in values else gr.skip() for name in FOLLOWED]
        return *updates, message(values["why"])

    def base_choices():
        finished = [(f"continue job {j['id']} ({j['method']}, {j['base_model']})", f"job:{j['id']}")
                    for j in jobs.list_jobs(ctx.store) if jobs.adapter_folder(j) and j["method"] != "reward"]
        return BASE_CHOICES + finished

    def do_launch(form: dict):
        """The form (a dict keyed by component) -> jobs.launch, which holds every rule."""
        method_ = form[method]
        settings = {
            "model": form[base] or "embedded", "lora_r": int(form[lora_r]), "lora_alpha": int(form[lora_alpha]),
            "lora_dropout": float(form[lora_dropout]),
            "lora_target_modules": (form[targets] or "all-linear").strip(), "load_in_4bit": bool(form[four_bit]),
            "learning_rate": float(form[learning_rate]), "num_train_epochs": float(form[epochs]),
            "max_steps": int(form[max_steps]), "per_device_train_batch_size": int(form[batch_size]),
            "gradient_accumulation_steps": int(form[accumulation]), "max_length": int(form[max_length]),
            "save_steps": int(form[save_steps]), "seed": int(form[seed]),
            "gradient_checkpointing": bool(form[checkpointing]),
        }
        if method_ in ("dpo", "rloo"):
            settings["beta"] = float(form[beta])
        if method_ == "dpo":
            settings["loss_type"] = [form[loss_type] or "sigmoid"]
        if method_ == "rloo":
            settings.update(num_generations=int(form[generations]), max_completion_length=int(form[completion_length]))
        functions = ([TOXICITY_PENALTY] if form[toxicity_penalty] else []) + \
            [f.strip() for f in (form[reward_functions] or "").split(",") if f.strip()]
        try:
            job_id = jobs.launch(
                ctx.store, method_, settings, prompt_set=form[data_set], pair_mode=form[pair_mode],
                data=form[data_other] or "", reward_job=form[reward_job], reward_functions=functions,
                rubric_reward=bool(form[rubric_reward]),
                report=report.AUTO if form[auto_report] and methods.get(method_).chats else None)
        except (PreferenceError, PromptError, recipes.RecipeError, JobError, ValueError) as error:
            return message(str(error), error=True), gr.skip(), gr.skip()
        ctx.jobs.refresh()
        return (message(f"Job {job_id} is {jobs.get(ctx.store, job_id)['status']}."),
                gr.update(choices=job_choices(), value=job_id), gr.update(choices=base_choices()))

    def job_choices(listed=None):
        return [(f"{j['id']}: {j['method']} on {j['data']} ({j['status']})", j["id"])
                for j in (jobs.list_jobs(ctx.store) if listed is None else listed)]

    def table(listed):
        rows = []
        for job in listed:
            last = {}
            for row in jobs.metrics(job):
                last.update(row)
            method_ = job["method"] + (f", round {job['round']}" if job["round"] and job["round"] > 1 else "") + (
                f" from job {job['parent_job_id']}" if job["parent_job_id"] else "")
            rows.append([job["id"], method_, job["status"], job["data"], job["base_model"], last.get("step", 0),
                         _fmt(last.get("loss")),
                         _fmt(last.get("rewards/margins", last.get("margin", last.get("reward"))))])
        return rows

    def show(job_id):
        """Table, choices and the selected job's progress, plots, error and log. With none selected (a fresh page),
        the running job is selected, else the newest one."""
        listed = jobs.list_jobs(ctx.store)
        if job_id is None and listed:
            job_id = next((j["id"] for j in listed if j["status"] == "running"), listed[0]["id"])
        outputs = [table(listed), gr.update(choices=job_choices(listed), value=job_id)]
        nothing = ["", gr.update(visible=False)]
        buttons = [gr.update(interactive=False), gr.update(interactive=False)]
        if job_id is None:
            return outputs + [gr.update(value=0), "", *[None] * len(PLOTS), gr.update(visible=False), "", *nothing,
                              "", *buttons]
        try:
            job = jobs.get(ctx.store, int(job_id))
        except JobError as error:
            return outputs + [gr.update(value=0), message(str(error), error=True), *[None] * len(PLOTS),
                              gr.update(visible=False), "", *nothing, "", *buttons]
        # Stop for a job that is queued or running, Resume for one that stopped or failed.
        buttons = [gr.update(interactive=job["status"] in ("queued", "running")),
                   gr.update(interactive=job["status"] in ("stopped", "failed"))]
        rows = jobs.metrics(job)
        last = {}
        for row in rows:
            last.update(row)
        step, total = int(last.get("step", 0)), int(last.get("max_steps", 0) or 1)
        parts = [f"Job {job['id']} ({job['method']}): {job['status']}", f"step {step} / {total}"]
        if job["status"] == "running" and "eta_s" in last:
            parts.append(f"ETA {int(last['eta_s'])} s")
        if "tokens_per_s" in last:
            parts.append(f"{last['tokens_per_s']:.0f} tokens/s")
        if jobs.adapter_folder(job):
            parts.append(f"adapter: {jobs.adapter_folder(job)}")
        frames = []
        for wanted in PLOTS.values():
            points = [(row["step"], SERIES.get(key, key), value) for row in rows for key, value in row.items()
                      if wanted(key) and isinstance(value, (int, float))]
            frames.append(pd.DataFrame(points, columns=["step", "metric", "value"]) if points else None)
        found = report.latest(ctx.store, job["id"])
        report_key = f"{job['id']}/{job['status']}/{found and found['id']}/{found and found['status']}"
        return outputs + [gr.update(value=min(step, total), maximum=total), message(" · ".join(parts)), *frames,
                          gr.update(value=job["error"] or "", visible=bool(job["error"])), jobs.log_tail(job),
                          lineage(job), sampled(job), report_key, *buttons]

    def lineage(job):
        chain = jobs.lineage(ctx.store, job["id"])
        steps = [f"job {j['id']} ({j['method']}, round {j['round']}, data: {j['data']})" for j in chain]
        return message("Lineage: " + " ← ".join(steps + [f"base {chain[-1]['base_model']}"]))

    def sampled(job):
        path = Path(job["folder"]) / "samples.jsonl"
        if job["method"] != "rloo" or not path.is_file():
            return gr.update(visible=False)
        lines = path.read_text(encoding="utf-8").splitlines()[-12:]
        rows = []
        for line in reversed(lines):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # being written
                continue
            rows.append([row["step"], row["reward_function"], _fmt(row["reward"]), row["prompt"], row["completion"]])
        return gr.update(value=rows, visible=True)

    def next_round(job_id, set_name, k_, first_n, request: gr.Request, progress_=gr.Progress()):
        if job_id is None or not set_name:
            return message("Choose a finished job above and a prompt set.", error=True)
        event = ctx.cancel_events[request.session_hash] = threading.Event()
        try:
            progress_(0, desc="Loading the base model and the adapter")
            result = jobs.generate_next_round(
                ctx.store, int(job_id), set_name, GenerationParams(k=int(k_)), int(first_n or 0), cancel=event,
                on_progress=lambda done, total: progress_((done, total), desc="prompts", unit="prompts"))
        except (JobError, PromptError, models.ModelError, ValueError) as error:
            return message(str(error), error=True)
        finally:
            ctx.cancel_events.pop(request.session_hash, None)
        return message(f"Saved {result.responses_added} candidates from job {job_id}'s adapter for "
                       f"{result.prompts_done} prompts of {set_name}; they are in the Rank queue for the next round.")

    def report_view(job_id):
        """The selected job's held-out sets (default ones chosen) and its newest report."""
        empty = [gr.update(choices=[], value=[]), "", [], "", []]
        if job_id is None:
            return empty
        try:
            job = jobs.get(ctx.store, int(job_id))
        except JobError:
            return empty
        sets = gr.update(choices=[s["name"] for s in list_prompt_sets(ctx.store)])
        if not methods.get(job["method"]).chats:
            return [sets, message("A reward model scores answers; reports are for DPO, SFT and RL adapters."), [],
                    "", []]
        if jobs.adapter_folder(job) is None:
            return [sets, message(f"The report can be made once job {job['id']} has finished."), [], "", []]
        try:
            sets = gr.update(choices=sets["choices"], value=report.default_sets(ctx.store, job["id"]))
        except report.ReportError:
            pass
        found = report.latest(ctx.store, job["id"])
        if found is None:
            return [sets, message("No report yet: press Make the alignment report."), [], "", []]
        if found["summary"] is None:
            state = "is being made" if found["status"] == "generating" else f"{found['status']}: {found['error']}"
            return [sets, message(f"Report {found['id']} {state}."), [], "", []]
        summary = found["summary"]
        warnings = "\n".join(f"- {message(w)}" for w in summary["warnings"]) or message("No warnings.")
        examples = [[e["prompt"], e["base"], e["aligned"], f"{e['base_score']:.2f} -> {e['aligned_score']:.2f}"
                     if e["base_score"] is not None else ""] for entry in summary["sets"] for e in entry["examples"]]
        sizes = ", ".join(f"{e['prompt_set']} {e['prompts']} prompts x {e['samples']}, words "
                          f"{e['words']['base']:.0f} -> {e['words']['aligned']:.0f}" for e in summary["sets"])
        return [sets, message(f"Report {found['id']} ({found['created_at'][:16].replace('T', ' ')}): {sizes}."),
                report.table(summary), warnings, examples]

    def make_report(job_id, sets, samples_, first_n, tokens, request: gr.Request, progress_=gr.Progress()):
        if job_id is None:
            return message("Choose a finished job above.", error=True)
        event = ctx.cancel_events[request.session_hash] = threading.Event()
        try:
            progress_(0, desc="Loading the base model and the adapter")
            made = report.create(ctx.store, int(job_id), report.ReportSettings(
                prompt_sets=list(sets or []), samples=int(samples_ or 3), limit=int(first_n or 0),
                max_new_tokens=int(tokens or report.ReportSettings.max_new_tokens)), cancel=event,
                on_progress=lambda done, total, what: progress_((done, total), desc=what, unit=""))
        except (report.ReportError, JobError, EvaluationError, models.ModelError, ValueError) as error:
            return message(str(error), error=True)
        finally:
            ctx.cancel_events.pop(request.session_hash, None)
        return message(f"Report {made} is ready.")

    def on_job(action):
        """A handler for Stop or Resume: the manager's answer, or what is wrong."""

        def handler(job_id):
            if job_id is None:
                return message("Choose a job.", error=True)
            try:
                return message(action(int(job_id)))
            except JobError as error:
                return message(str(error), error=True)

        return handler

    # Wiring
    # report_key changes when the selected job's state or its newest report does: the report panel follows it.
    report_key = gr.State("")
    view_outputs = [jobs_table, job_pick, progress, progress_text, *plots, job_error, log, lineage_text, samples,
                    report_key, stop, resume]
    gr.on([method.change, data_set.change, pair_mode.change, data_other.change], describe,
          [method, data_set, pair_mode, data_other], data_summary)
    launch.click(do_launch, {method, data_set, pair_mode, data_other, base, lora_r, lora_alpha, lora_dropout, targets,
                             four_bit, learning_rate, epochs, max_steps, batch_size, accumulation, beta, loss_type,
                             max_length, save_steps, seed, checkpointing, reward_job, toxicity_penalty, rubric_reward,
                             reward_functions, generations, completion_length, auto_report},
                 [launch_status, job_pick, base])
    round_cancel.click(ctx.canceller("Cancelling: finished prompts are kept…"), None, round_status)
    round_go.click(next_round, [job_pick, round_set, round_k, round_limit], round_status, concurrency_limit=1,
                   concurrency_id="model")
    gr.on([timer.tick, job_pick.change], show, job_pick, view_outputs, show_progress="hidden")
    report_outputs = [report_sets, report_status, report_table, report_warnings, report_examples]
    report_key.change(report_view, job_pick, report_outputs)
    report_go.click(waiting, None, report_status, queue=False).then(
        make_report, [job_pick, report_sets, report_samples, report_limit, report_tokens], report_status,
        concurrency_limit=1, concurrency_id="model").then(report_view, job_pick, report_outputs)
    report_cancel.click(ctx.canceller("Cancelling the report…"), None, report_status)
    # The data enters through its summary, which changes with the set, the pair rule, the file and with rankings made
    # on the Rank tab since (describe is wired to those changes above): one run per change, not two.
    gr.on([method.change, base.change, data_summary.change], follow_data,
          [method, data_set, pair_mode, data_other, base],
          [learning_rate, epochs, batch_size, accumulation, beta, loss_type, max_length, checkpointing, settings_note])
    stop.click(on_job(ctx.jobs.stop), job_pick, launch_status)
    resume.click(on_job(ctx.jobs.resume), job_pick, launch_status)

    def on_select(selected, method_, mode, other):
        # Rankings made on the Rank tab since the last visit change the summary even when the set stays the same.
        sets = set_choices(ctx.store, selected)
        reward_jobs = [(f"job {j['id']}: reward model on {j['data']}", j["id"]) for j in jobs.list_jobs(ctx.store)
                       if j["method"] == "reward" and jobs.adapter_folder(j)]
        return (sets, gr.update(choices=base_choices()), describe(method_, sets.get("value"), mode, other),
                gr.update(choices=reward_jobs), set_choices(ctx.store, selected))

    return {"prompt_set": data_set, "select": on_select, "select_inputs": [data_set, method, pair_mode, data_other],
            "select_outputs": [data_set, base, data_summary, reward_job, round_set]}


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4g}"
