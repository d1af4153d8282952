"""Train tab: launch DPO, SFT, reward-model or online-RL jobs; watch, stop and resume them; follow the rounds."""

import json
import threading
from pathlib import Path

import pandas as pd

import gradio as gr

from pages import Ctx, message, set_choices
from studio import jobs, models, recipes
from studio.generate import GenerationParams
from studio.jobs import JobError
from studio.preferences import PreferenceError, training_snapshot
from studio.prompts import PromptError, get_prompts, prompt_messages
from studio.ranking import PAIR_MODES

BASE_CHOICES = ["embedded", "HuggingFaceTB/SmolLM2-360M-Instruct", "meta-llama/Meta-Llama-3-8B-Instruct"]
JOB_HEADERS = ["Job", "Method", "Round", "Parent", "Status", "Data", "Base model", "Step", "Loss", "Margin / reward",
               "Adapter"]
PLOTS = {  # plot title -> which logged values it shows
    "Loss": lambda key: key == "loss",
    "Rewards (DPO: chosen, rejected, margin; RL: mean reward)": lambda key: (
        key.startswith("rewards/") and "accurac" not in key and not key.endswith("/std")) or key in ("margin", "reward"),
    "Accuracy (DPO, reward model) · KL (RL)": lambda key: "accurac" in key or key == "kl",
}
TOXICITY_PENALTY = "studio.rewards:toxicity_penalty"


def build_train_tab(ctx: Ctx) -> dict:
    help_ = recipes.help_text

    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            method = gr.Radio([(label.split(" on ")[0], key) for key, label in recipes.METHODS.items()], value="dpo",
                              label="Method", info="SFT trains on the chosen answers of the pairs, or on a file "
                                                   "of demonstrations (messages or prompt/completion)",
                              elem_id="train-method")
            data_set = gr.Dropdown([], label="Data: the rankings of a prompt set", elem_id="train-set")
            pair_mode = gr.Radio([(label, key) for key, label in PAIR_MODES.items()], value="best_worst",
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
                seed = gr.Number(42, precision=0, label="Seed", info=help_("seed"))
            with gr.Accordion("Online RL (RLOO)", open=False, elem_id="train-rl"):
                reward_job = gr.Dropdown([], label="Reward model: a finished reward-model job", elem_id="train-reward")
                toxicity_penalty = gr.Checkbox(False, label="Add the toxicity penalty (minus offline toxicity, 0-1)",
                                               elem_id="train-toxicity")
                reward_functions = gr.Textbox(label="More reward functions (module:function, comma separated)",
                                              info=help_("reward_functions"), elem_id="train-reward-fns")
                generations = gr.Number(4, precision=0, minimum=2, label="Answers sampled per prompt",
                                        info=help_("num_generations"))
                completion_length = gr.Number(48, precision=0, minimum=4, label="Max answer length (tokens)",
                                              info=help_("max_completion_length"), elem_id="train-completion")
            launch = gr.Button("Launch", variant="primary", elem_id="train-launch")
            launch_status = gr.Markdown(elem_id="train-launch-status")
        with gr.Column(scale=2):
            jobs_table = gr.Dataframe(headers=JOB_HEADERS, interactive=False, wrap=True, max_height=260,
                                      label="Jobs", elem_id="train-jobs")
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
        except PreferenceError as error:
            return message(str(error), error=True)
        what = "chosen answers" if method_ == "sft" else "pairs"
        return message(f"{info['pairs']} {what} from {info['rankings']} rankings by {len(info['annotators'])} "
                       f"annotator(s) on {info['prompts']} prompts ({info['conflicts']} conflicting, "
                       f"{info['unresolved']} dropped).")

    def base_choices():
        finished = [(f"continue job {j['id']} ({j['method']}, {j['base_model']})", f"job:{j['id']}")
                    for j in jobs.list_jobs(ctx.store) if jobs.adapter_folder(j) and j["method"] != "reward"]
        return BASE_CHOICES + finished

    def do_launch(method_, set_name, mode, other, base_ref, r, alpha, dropout, target, q4, lr, n_epochs, steps,
                  batch, accum, dpo_beta, length, every, seed_, reward_key, penalty, more_rewards, n_gen, answer_len):
        settings = {
            "model": base_ref or "embedded", "lora_r": int(r), "lora_alpha": int(alpha), "lora_dropout": float(dropout),
            "lora_target_modules": (target or "all-linear").strip(), "load_in_4bit": bool(q4),
            "learning_rate": float(lr), "num_train_epochs": float(n_epochs), "max_steps": int(steps),
            "per_device_train_batch_size": int(batch), "gradient_accumulation_steps": int(accum),
            "max_length": int(length), "save_steps": int(every), "seed": int(seed_),
            **recipes.studio_defaults(method_),
        }
        if method_ == "dpo":
            settings["beta"] = float(dpo_beta)
        parent = None
        try:
            if method_ == "rloo":
                del settings["max_length"]  # RL bounds the sampled answer instead
                functions = [f.strip() for f in (more_rewards or "").split(",") if f.strip()]
                settings.update(beta=float(dpo_beta), num_generations=int(n_gen), max_completion_length=int(answer_len),
                                reward_functions=",".join(([TOXICITY_PENALTY] if penalty else []) + functions))
                if reward_key is not None:
                    reward = jobs.get(ctx.store, int(reward_key))
                    if reward["method"] != "reward" or not jobs.adapter_folder(reward):
                        raise JobError(f"Job {reward['id']} is not a finished reward-model job.")
                    settings["reward_model"] = str(jobs.adapter_folder(reward))
                if not settings.get("reward_model") and not settings["reward_functions"]:
                    raise JobError("Online RL needs a reward: choose a reward-model job and/or the toxicity penalty.")
                # TRL needs whole groups: the batch is rounded up to a multiple of the answers per prompt.
                settings["per_device_train_batch_size"] = -(-int(batch) // int(n_gen)) * int(n_gen)
            if settings["model"].startswith("job:"):
                parent = jobs.get(ctx.store, int(settings["model"].split(":", 1)[1]))
                if not jobs.adapter_folder(parent):
                    raise JobError(f"Job {parent['id']} has no finished adapter to continue from.")
                settings["model"], settings["continue_from"] = parent["base_model"], str(jobs.adapter_folder(parent))
            if (other or "").strip():
                rows, info, label = None, {}, other.strip()
                settings["data"] = label
            elif method_ == "rloo":
                if not set_name:
                    raise PreferenceError("Choose the prompt set the policy practises on.")
                prompts = get_prompts(ctx.store, set_name)
                rows = [{"prompt": prompt_messages(p)} for p in prompts]
                info, label = {"prompt_set": set_name, "prompts": len(prompts)}, f"{set_name} (prompts)"
            else:
                if not set_name:
                    raise PreferenceError("Choose a prompt set, or give a file or a Hub data set id.")
                rows, info = training_snapshot(ctx.store, set_name, mode)
                label = f"{set_name} ({PAIR_MODES[mode]})"
            job_id = jobs.create(ctx.store, method_, settings, data_label=label, data_rows=rows, data_info=info,
                                 parent_job_id=parent["id"] if parent else None)
        except (PreferenceError, PromptError, recipes.RecipeError, JobError, ValueError) as error:
            return message(str(error), error=True), gr.skip(), gr.skip()
        ctx.jobs.refresh()
        return (message(f"Job {job_id} is {jobs.get(ctx.store, job_id)['status']}."),
                gr.update(choices=job_choices(), value=job_id), gr.update(choices=base_choices()))

    def job_choices():
        return [(f"{j['id']}: {j['method']} on {j['data']} ({j['status']})", j["id"]) for j in jobs.list_jobs(ctx.store)]

    def table():
        rows = []
        for job in jobs.list_jobs(ctx.store):
            last = {}
            for row in jobs.metrics(job):
                last.update(row)
            adapter = jobs.adapter_folder(job)
            rows.append([job["id"], job["method"], job["round"], job["parent_job_id"] or "", job["status"], job["data"],
                         job["base_model"], last.get("step", 0), _fmt(last.get("loss")),
                         _fmt(last.get("rewards/margins", last.get("margin", last.get("reward")))),
                         str(adapter) if adapter else ""])
        return rows

    def show(job_id):
        """Table, choices and the selected job's progress, plots, error and log."""
        outputs = [table(), gr.update(choices=job_choices())]
        nothing = ["", gr.update(visible=False)]
        if job_id is None:
            return outputs + [gr.update(value=0), "", *[None] * len(PLOTS), gr.update(visible=False), "", *nothing]
        try:
            job = jobs.get(ctx.store, int(job_id))
        except JobError as error:
            return outputs + [gr.update(value=0), message(str(error), error=True), *[None] * len(PLOTS),
                              gr.update(visible=False), "", *nothing]
        rows = jobs.metrics(job)
        last = {}
        for row in rows:
            last.update(row)
        step, total = int(last.get("step", 0)), int(last.get("max_steps", 0) or 1)
        parts = [f"Job {job['id']} ({job['method']}): **{job['status']}**", f"step {step} / {total}"]
        if job["status"] == "running" and "eta_s" in last:
            parts.append(f"ETA {int(last['eta_s'])} s")
        if "tokens_per_s" in last:
            parts.append(f"{last['tokens_per_s']:.0f} tokens/s")
        if jobs.adapter_folder(job):
            parts.append(f"adapter: {jobs.adapter_folder(job)}")
        frames = []
        for wanted in PLOTS.values():
            points = [(row["step"], key, value) for row in rows for key, value in row.items()
                      if wanted(key) and isinstance(value, (int, float))]
            frames.append(pd.DataFrame(points, columns=["step", "metric", "value"]) if points else None)
        return outputs + [gr.update(value=min(step, total), maximum=total), message(" · ".join(parts)), *frames,
                          gr.update(value=job["error"] or "", visible=bool(job["error"])), jobs.log_tail(job),
                          lineage(job), sampled(job)]

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
    view_outputs = [jobs_table, job_pick, progress, progress_text, *plots, job_error, log, lineage_text, samples]
    gr.on([method.change, data_set.change, pair_mode.change, data_other.change], describe,
          [method, data_set, pair_mode, data_other], data_summary)
    launch.click(do_launch, [method, data_set, pair_mode, data_other, base, lora_r, lora_alpha, lora_dropout, targets,
                             four_bit, learning_rate, epochs, max_steps, batch_size, accumulation, beta, max_length,
                             save_steps, seed, reward_job, toxicity_penalty, reward_functions, generations,
                             completion_length], [launch_status, job_pick, base])
    round_cancel.click(ctx.canceller("Cancelling: finished prompts are kept…"), None, round_status)
    round_go.click(next_round, [job_pick, round_set, round_k, round_limit], round_status, concurrency_limit=1,
                   concurrency_id="model")
    gr.on([timer.tick, job_pick.change], show, job_pick, view_outputs, show_progress="hidden")
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
