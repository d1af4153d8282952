"""Data tab: rankings as preference pairs (export, push), imports of existing preference data, Ground Truth."""

import gradio as gr

from pages import Ctx, login, message, set_choices
from studio.core import access
from studio.data import demonstrations, feedback, groundtruth, preferences, rubric
from studio.data.groundtruth import GroundTruthError
from studio.data.preferences import PreferenceError
from studio.data.ranking import PAIR_MODES
from studio.training.recipes import PAIR_MODE


def build_data_tab(ctx: Ctx) -> dict:
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Preference pairs")
            prompt_set = gr.Dropdown([], label="Prompt set", elem_id="data-set")
            mode = gr.Radio(
                [(label, key) for key, label in PAIR_MODES.items()],
                value=PAIR_MODE,
                label="Pairs from each ranking",
                elem_id="data-mode",
            )
            summary = gr.Markdown(elem_id="data-summary")
            export = gr.Button("Export JSONL + Parquet", elem_id="data-export")
            files = gr.File(label="Exported files", file_count="multiple", interactive=False, elem_id="data-files")
            with gr.Row():
                repo = gr.Textbox(label="Hub data set repo", placeholder="my-org/bank-preferences", scale=3)
                private = gr.Checkbox(True, label="Private", scale=1)
            push = gr.Button("Push to the Hub")
            pairs_status = gr.Markdown(elem_id="data-status")
            feedback_summary, describe_feedback = _feedback_section(ctx)
        with gr.Column():
            _import_section(ctx, prompt_set)
            _groundtruth_section(ctx, prompt_set, mode, summary)

    def describe(set_name, pair_mode):
        return _pairs_summary(ctx, set_name, pair_mode)

    def do_export(set_name, pair_mode):
        try:
            out = preferences.export_preferences(ctx.store, set_name, pair_mode)
        except (PreferenceError, ValueError) as error:
            return gr.skip(), message(str(error), error=True)
        return [str(out["jsonl"]), str(out["parquet"])], message(
            f"Exported {len(out['pairs'].pairs)} pairs to {out['folder']}."
        )

    def do_push(
        set_name,
        pair_mode,
        repo_id,
        is_private,
        request: gr.Request,
        profile: gr.OAuthProfile | None = None,
        oauth_token: gr.OAuthToken | None = None,
    ):
        try:
            url = preferences.push_preferences(
                ctx.store,
                set_name,
                repo_id,
                pair_mode,
                is_private,
                token=oauth_token.token if oauth_token else None,
                by=login(request, profile),
            )
        except (PreferenceError, ValueError) as error:
            return message(str(error), error=True)
        except Exception as error:  # the Hub's own errors (permissions, names) reach the user as they are
            return message(f"The Hub refused the push: {error}", error=True)
        return message(f"Pushed to {url}.")

    # Wiring
    gr.on([prompt_set.change, mode.change], describe, [prompt_set, mode], summary)
    export.click(do_export, [prompt_set, mode], [files, pairs_status])
    push.click(do_push, [prompt_set, mode, repo, private], pairs_status)

    def on_select(selected, pair_mode):
        # Rankings made on the Rank tab (or by others) since change the count even when the set stays the same.
        sets = set_choices(ctx.store, selected)
        return sets, describe(sets.get("value"), pair_mode), describe_feedback()

    return {
        "prompt_set": prompt_set,
        "select": on_select,
        "select_inputs": [prompt_set, mode],
        "select_outputs": [prompt_set, summary, feedback_summary],
    }


def _feedback_section(ctx: Ctx):
    """Thumbs and edits from the chat and the Rank tab: counts and export; returns the summary and its filler."""
    gr.Markdown(
        "### Feedback: thumbs and edits\nThumbs and edits given in the Compare chat, and single "
        "answers rated on the Rank tab: KTO learns from them (Train tab), and edits are preference "
        "pairs."
    )
    feedback_summary = gr.Markdown(elem_id="data-feedback")
    feedback_export = gr.Button("Export feedback (TRL's formats)", elem_id="data-feedback-export")
    feedback_files = gr.File(
        label="kto.jsonl (prompt / completion / label), edits.jsonl (prompt / chosen / rejected)",
        file_count="multiple",
        interactive=False,
    )

    def describe_feedback():
        found = feedback.counts(ctx.store)
        if not any(found[k] for k in feedback.KINDS):
            return message(
                "No feedback yet: on the Compare tab, use the thumbs under an answer or edit it; on the "
                "Rank tab, rate a single answer with + or -."
            )
        return message(
            f"{found['up']} thumbs up, {found['down']} thumbs down, {found['edit']} edited answer(s), by "
            f"{found['annotators']} person(s), on {found['models']} model(s)."
        )

    def do_feedback_export():
        try:
            out = feedback.export(ctx.store)
        except feedback.FeedbackError as error:
            return gr.skip(), message(str(error), error=True)
        return [str(p) for p in out["files"].values()], message(
            f"Exported {out['kto']} KTO rows and {out['pairs']} pairs to {out['folder']}."
        )

    feedback_export.click(do_feedback_export, None, [feedback_files, feedback_summary])
    return feedback_summary, describe_feedback


def _import_section(ctx: Ctx, prompt_set) -> None:
    """Import preference data from a file or a Hub data set as a new prompt set."""
    gr.Markdown(
        "### Import preference data\nTRL standard or conversational (explicit or implicit prompt), "
        "Anthropic HH transcripts, or prompt / chosen / rejected columns."
    )
    upload = gr.File(label=".jsonl, .csv or .parquet", file_types=[".jsonl", ".csv", ".parquet"], elem_id="data-upload")
    with gr.Row():
        hub_id = gr.Textbox(label="or a Hub data set id", placeholder="Anthropic/hh-rlhf", scale=3)
        split = gr.Textbox("train", label="Split", scale=1)
    name = gr.Textbox(label="Name for the imported set", placeholder="from the file or id if empty")
    with gr.Row():
        import_file = gr.Button("Import file")
        import_hub = gr.Button("Import from Hub")
    import_status = gr.Markdown(elem_id="data-import-status")

    def imported(result):
        return set_choices(ctx.store, result["prompt_set"]), message(
            f"Imported {result['pairs']} pairs over {result['prompts']} prompts as set '{result['prompt_set']}'."
        )

    def do_import_file(path, set_name, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if not path:
            return gr.skip(), message("Choose a file first.", error=True)
        try:
            return imported(preferences.import_file(ctx.store, path, set_name, by=login(request, profile)))
        except (PreferenceError, ValueError) as error:
            return gr.skip(), message(str(error), error=True)

    def do_import_hub(dataset_id, data_split, set_name, request: gr.Request, profile: gr.OAuthProfile | None = None):
        try:
            return imported(
                preferences.import_hub(ctx.store, dataset_id, data_split, set_name, by=login(request, profile))
            )
        except (PreferenceError, ValueError) as error:
            return gr.skip(), message(str(error), error=True)

    import_file.click(do_import_file, [upload, name], [prompt_set, import_status])
    import_hub.click(do_import_hub, [hub_id, split, name], [prompt_set, import_status])


def _groundtruth_section(ctx: Ctx, prompt_set, mode, summary) -> None:
    """Export a prompt set as an Amazon SageMaker Ground Truth job; check and import its results."""
    gr.Markdown("### Amazon SageMaker Ground Truth")
    gt_status = gr.Markdown(elem_id="gt-status", render=False)  # shown under the AWS part, which answers in it too
    with gr.Row():
        bucket = gr.Textbox("my-bucket", label="S3 bucket for the job")
        workers = gr.Number(3, precision=0, minimum=1, maximum=9, label="Workers per prompt")
    with gr.Row():
        gt_name = gr.Textbox(
            label="Job name",
            placeholder="made from the set's name if empty",
            info="letters, digits and hyphens (AWS's rule)",
            elem_id="gt-name",
        )
        workforce = gr.Dropdown(
            [("private team", "private"), ("Mechanical Turk (public)", "public")],
            value="private",
            label="Workforce",
            elem_id="gt-workforce",
        )
    gt_task = gr.Dropdown(
        [("Rank the candidates", "")],
        value="",
        label="Task",
        info="or write demonstrations: edit the best candidate into an answer that follows a rule none of them does",
        elem_id="gt-task",
    )
    gt_export = gr.Button("Export a Ground Truth job", elem_id="gt-export")
    gt_files = gr.File(label="Job (zip)", interactive=False, elem_id="gt-files")
    gt_upload = gr.File(
        label="Ground Truth results (zip of the output folder)", file_types=[".zip"], elem_id="gt-upload"
    )
    with gr.Row():
        gt_check = gr.Button("Check: show each worker's ranking", elem_id="gt-check")
        gt_import = gr.Button("Import Ground Truth results", elem_id="gt-import")
    gt_preview = gr.Textbox(
        label="What the import would save (compare with the worker UI)",
        lines=8,
        max_lines=30,
        interactive=False,
        visible=False,
        elem_id="gt-preview",
    )
    gt_job = _groundtruth_aws(ctx, prompt_set, mode, summary, gt_status)
    gt_status.render()

    def tasks(set_name):
        checks = rubric.for_set(ctx.store, set_name) if set_name else None
        rules = demonstrations.rules(checks) if checks else []
        return gr.update(
            choices=[("Rank the candidates", "")] + [(f"Write demonstrations: {r}", r) for r in rules], value=""
        )

    def do_gt_export(
        set_name,
        bucket_name,
        per_prompt,
        name,
        force,
        rule,
        request: gr.Request,
        profile: gr.OAuthProfile | None = None,
    ):
        if not set_name:
            return gr.skip(), message("Choose a prompt set first.", error=True)
        try:
            out = groundtruth.export_job(
                ctx.store,
                set_name,
                bucket=(bucket_name or "my-bucket").strip(),
                workers_per_object=int(per_prompt or 3),
                name=name,
                workforce=force,
                rule=rule or None,
                by=login(request, profile),
            )
        except (GroundTruthError, ValueError) as error:
            return gr.skip(), message(str(error), error=True)
        task = f"demonstrations of {rule!r}" if rule else "ranking"
        return str(out["zip"]), message(
            f"Job {out['job_name']} ({task}) for {out['prompts']} prompts in {out['folder']} (and "
            "the zip): its README.md says how to start it."
        )

    def do_gt_check(path):
        if not path:
            return gr.update(visible=False), message(
                "Choose the zip of the Ground Truth output folder first.", error=True
            )
        try:
            results = groundtruth.read_results(ctx.store, path)
        except GroundTruthError as error:
            return gr.update(visible=False), message(str(error), error=True)
        found = results.summary()
        return gr.update(value=groundtruth.preview(ctx.store, results), visible=True), message(
            f"{found['answers']} rankings and {found['demonstrations']} demonstrations by {found['workers']} workers "
            f"on {found['prompts']} prompts, "
            f"{found['unlabelled']} prompts not labelled. Nothing is saved until you press Import."
        )

    def do_gt_import(path, set_name, pair_mode, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if not path:
            return message("Choose the zip of the Ground Truth output folder first.", error=True), gr.skip()
        try:
            result = groundtruth.import_results(ctx.store, path, by=login(request, profile))
        except (GroundTruthError, access.TeamError) as error:
            return message(str(error), error=True), gr.skip()
        return _gt_imported(result), _pairs_summary(ctx, set_name, pair_mode)

    prompt_set.change(tasks, prompt_set, gt_task)
    gt_export.click(
        do_gt_export, [prompt_set, bucket, workers, gt_name, workforce, gt_task], [gt_files, gt_status]
    ).then(
        lambda: gr.update(choices=(found := groundtruth.exported_jobs()), value=found[0] if found else None),
        None,
        gt_job,
    )
    gt_check.click(do_gt_check, gt_upload, [gt_preview, gt_status])
    gt_import.click(do_gt_import, [gt_upload, prompt_set, mode], [gt_status, summary])


def _groundtruth_aws(ctx: Ctx, prompt_set, mode, summary, gt_status):
    """Start an exported job on Ground Truth, fetch its results (boto3's credentials); returns the job list."""
    with gr.Accordion("Run it on Ground Truth with your AWS credentials", open=False):
        gr.Markdown(
            "Deploy the two Lambda functions first (the export's README, step 2). The studio calls AWS with "
            "boto3's credentials (AWS_* environment variables, ~/.aws, or an instance role) and stores none "
            "of them. Starting a job (it may cost money) is a lead's action."
        )
        gt_job = gr.Dropdown([], label="Exported job", elem_id="gt-job")
        with gr.Row():
            gt_role = gr.Textbox(label="Job's IAM role ARN", elem_id="gt-role")
            gt_team = gr.Textbox(
                label="Work team ARN", placeholder="the one in settings.json if empty", elem_id="gt-team"
            )
        with gr.Row():
            gt_pre = gr.Textbox(label="Pre-annotation Lambda ARN", elem_id="gt-pre")
            gt_post = gr.Textbox(label="Consolidation Lambda ARN", elem_id="gt-post")
            gt_region = gr.Textbox(label="Region", placeholder="your AWS configuration's if empty", elem_id="gt-region")
        with gr.Row():
            gt_start = gr.Button("Start the labeling job", elem_id="gt-start")
            gt_fetch = gr.Button("Fetch its results and import them", elem_id="gt-fetch")

    def do_gt_start(
        name, role, pre, post, workteam, region, request: gr.Request, profile: gr.OAuthProfile | None = None
    ):
        try:
            arn = groundtruth.launch_job(
                groundtruth.exported_folder(name),
                role_arn=role,
                pre_lambda_arn=pre,
                post_lambda_arn=post,
                workteam_arn=workteam,
                region=region or None,
                by=login(request, profile),
            )
        except (GroundTruthError, access.TeamError) as error:
            return message(str(error), error=True)
        return message(
            f"Started {arn}. Fetch its results when the workers are done (a stopped job gives what was labelled)."
        )

    def do_gt_fetch(name, region, set_name, pair_mode, request: gr.Request, profile: gr.OAuthProfile | None = None):
        try:
            state = groundtruth.fetch_and_import(
                ctx.store, groundtruth.exported_folder(name), region=region or None, by=login(request, profile)
            )
        except (GroundTruthError, access.TeamError) as error:
            return message(str(error), error=True), gr.skip()
        if "imported" not in state:
            counters = ", ".join(f"{k} {v}" for k, v in state["counters"].items())
            return message(f"The job is {state['status']} ({counters}). {state['failure']}".strip()), gr.skip()
        return _gt_imported(state["imported"]), _pairs_summary(ctx, set_name, pair_mode)

    gt_job.focus(lambda current: gr.update(choices=groundtruth.exported_jobs(), value=current), gt_job, gt_job)
    gt_start.click(do_gt_start, [gt_job, gt_role, gt_pre, gt_post, gt_team, gt_region], gt_status)
    gt_fetch.click(do_gt_fetch, [gt_job, gt_region, prompt_set, mode], [gt_status, summary])
    return gt_job


def _gt_imported(result: dict) -> str:
    unlabelled = (
        f" {len(result['unlabelled'])} prompts were not labelled (listed by Check)." if result["unlabelled"] else ""
    )
    return message(
        f"Imported {result['rankings']} rankings and {result['demonstrations']} demonstrations by "
        f"{result['workers']} workers on "
        f"{result['prompts']} prompts ({result['unchanged']} already there).{unlabelled}"
    )


def _pairs_summary(ctx: Ctx, set_name, pair_mode) -> str:
    if not set_name:
        return ""
    rows, pair_set = preferences.preference_rows(ctx.store, set_name, pair_mode)
    return message(
        f"{len(rows)} pairs from {pair_set.rankings} rankings · {pair_set.conflicts} conflicting "
        f"response pairs, {pair_set.unresolved} without a majority (dropped)"
    )
