"""Publish tab: push a finished job's adapter with its model card, or merge it into a full model (and GGUF)."""

import gradio as gr

from pages import Ctx, keep_choice, login, message
from studio.core import access, jobs
from studio.evaluation import gate
from studio.shipping import openai_api, publish
from studio.shipping.publish import PublishError
from studio.training import sagemaker


def build_publish_tab(ctx: Ctx) -> dict:
    with gr.Row():
        with gr.Column(scale=1):
            job_pick = gr.Dropdown([], label="Finished job", elem_id="pub-job")
            shown = _push_section(ctx, job_pick)
            gr.Markdown("The token comes from HF_TOKEN, your `hf auth login` or the Space login; it is never saved.")
            _api_keys_section(ctx)
            _endpoint_section(ctx, job_pick)
        with gr.Column(scale=2):
            card = gr.Textbox(
                label="Model card (README.md of the pushed folder)",
                lines=24,
                max_lines=40,
                interactive=False,
                elem_id="pub-card",
            )

    def choices():
        return [
            (f"{j['id']}: {j['method']} on {j['data']}", j["id"])
            for j in jobs.list_jobs(ctx.store)
            if jobs.adapter_folder(j)
        ]

    def show(job_id):
        if job_id is None:
            return "", "", "", ""
        try:
            result = gate.verdict(ctx.store, int(job_id))
            said = "\n".join(
                f"- {message(line.removeprefix('- '))}" if line.startswith("- ") else line
                for line in gate.card_lines(result)
            )
            return (
                publish.model_card(ctx.store, int(job_id)),
                "",
                message(publish.merge_status(ctx.store, int(job_id))),
                f"**Publish gate:** {said}",
            )
        except (PublishError, jobs.JobError) as error:
            return "", message(str(error), error=True), "", ""

    job_pick.change(show, job_pick, [card, shown["status"], shown["merge_status"], shown["gate"]])

    def select(current):
        """The finished jobs, keeping the chosen one; the newest when none is chosen yet."""
        return keep_choice(choices(), current)

    return {"select": select, "select_inputs": [job_pick], "select_outputs": [job_pick]}


def _push_section(ctx: Ctx, job_pick) -> dict:
    """Push to the Hub (behind the gate) and merge; returns the lines that choosing a job fills."""
    with gr.Row():
        repo = gr.Textbox(label="Hub model repo", placeholder="my-org/bank-assistant-dpo", scale=3, elem_id="pub-repo")
        private = gr.Checkbox(True, label="Private", scale=1)
    gate_text = gr.Markdown(elem_id="pub-gate")
    anyway = gr.Checkbox(
        False, label="Push anyway, although the gate did not pass (the card will say so)", elem_id="pub-anyway"
    )
    push = gr.Button("Push adapter + model card", variant="primary", elem_id="pub-push")
    status = gr.Markdown(elem_id="pub-status")  # the push's answer: stays until the next push
    with gr.Row():
        merge = gr.Button("Merge into a full model (background)", elem_id="pub-merge", scale=2)
        gguf = gr.Dropdown(
            [
                ("no GGUF", ""),
                ("+ GGUF q8_0 (llama.cpp, Ollama)", "q8_0"),
                ("+ GGUF f16 (llama.cpp, Ollama)", "f16"),
            ],
            value="",
            scale=1,
            label="Also write",
            elem_id="pub-gguf",
            info="One file for llama.cpp / Ollama, with a Modelfile (Llama-type models)",
        )
    merge_status = gr.Markdown(elem_id="pub-merge-status")  # followed while a merge runs
    timer = gr.Timer(3.0)

    def do_push(
        job_id,
        repo_id,
        is_private,
        confirmed,
        request: gr.Request,
        profile: gr.OAuthProfile | None = None,
        oauth_token: gr.OAuthToken | None = None,
    ):
        if job_id is None:
            return message("Choose a finished job.", error=True)
        try:
            url = publish.push_adapter(
                ctx.store,
                int(job_id),
                repo_id,
                is_private,
                token=oauth_token.token if oauth_token else None,
                confirmed=bool(confirmed),
                by=login(request, profile),
            )
        except (PublishError, access.TeamError) as error:
            return message(str(error), error=True)
        except Exception as error:  # the Hub's own refusals (permissions, names) reach the user as they are
            return message(f"The Hub refused the push: {error}", error=True)
        return message(f"Pushed to {url}.")

    def do_merge(job_id, kind, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if job_id is None:
            return message("Choose a finished job.", error=True)
        try:
            out = publish.start_merge(ctx.store, int(job_id), kind or None, by=login(request, profile))
        except (PublishError, access.TeamError) as error:
            return message(str(error), error=True)
        return message(f"Merging into {out}" + (f", then writing GGUF ({kind})…" if kind else "…"))

    def poll(job_id):
        return message(publish.merge_status(ctx.store, int(job_id))) if job_id is not None else gr.skip()

    push.click(do_push, [job_pick, repo, private, anyway], status)
    merge.click(do_merge, [job_pick, gguf], merge_status)
    timer.tick(poll, job_pick, merge_status, show_progress="hidden")
    return {"status": status, "merge_status": merge_status, "gate": gate_text}


def _api_keys_section(ctx: Ctx) -> None:
    """API keys for the OpenAI-compatible endpoint: create and revoke (a lead's action, checked in the engine)."""
    with gr.Accordion("Serve it: the OpenAI-compatible endpoint (/v1)", open=False):
        gr.Markdown(
            "Applications call this app like OpenAI's API: base URL `<this app's address>/v1`, "
            "model `base:<model>` or `job:<id>` (README, Serve). Behind a login each call needs an "
            "API key; create one per application here (a lead's action). The key is shown once: "
            "only its hash is kept."
        )
        with gr.Row():
            key_name = gr.Textbox(label="Key name (the application)", scale=3, elem_id="pub-key-name")
            key_create = gr.Button("Create key", scale=1, elem_id="pub-key-create")
            key_revoke = gr.Button("Revoke key", scale=1, elem_id="pub-key-revoke")
        key_shown = gr.Textbox(
            label="New key (copy it now)",
            interactive=False,
            visible=False,
            buttons=["copy"],
            elem_id="pub-key-shown",
        )
        key_status = gr.Markdown(elem_id="pub-key-status")

    def keys_line() -> str:
        found = openai_api.list_keys(ctx.store)
        return message(
            "Keys: "
            + ", ".join(
                f"{k['name']} ({'by ' + k['created_by'] + ', ' if k['created_by'] else ''}last used "
                f"{k['last_used_at'] or 'never'})"
                for k in found
            )
            if found
            else "No API keys yet."
        )

    def do_key(action, name, request: gr.Request, profile: gr.OAuthProfile | None = None):
        try:
            who = login(request, profile)
            if action == "create":
                key = openai_api.create_key(ctx.store, name, who)
                return gr.update(value=key, visible=True), keys_line()
            openai_api.revoke_key(ctx.store, (name or "").strip(), who)
            return gr.update(value="", visible=False), keys_line()
        except (openai_api.ApiKeyError, access.TeamError) as error:
            return gr.update(value="", visible=False), message(str(error), error=True)

    key_create.click(do_key, [gr.State("create"), key_name], [key_shown, key_status])
    key_revoke.click(do_key, [gr.State("revoke"), key_name], [key_shown, key_status])


def _endpoint_section(ctx: Ctx, job_pick) -> None:
    """A SageMaker endpoint for the chosen job: deploy, status, call, delete."""
    with gr.Accordion("Serve it on a SageMaker endpoint (your AWS credentials)", open=False, elem_id="pub-sm-box"):
        gr.Markdown(
            "A real-time endpoint in Hugging Face's PyTorch inference container: the adapter (its "
            "base downloaded from the Hub) or the merged model, with the studio's handler. "
            "SageMaker bills the instance until the endpoint is deleted."
        )
        with gr.Row():
            sm_what = gr.Radio(
                [("adapter", "adapter"), ("merged model", "merged")],
                value="adapter",
                label="Serve",
                elem_id="pub-sm-what",
            )
            sm_instance = gr.Textbox("ml.g5.xlarge", label="Instance type", elem_id="pub-sm-instance")
            sm_name = gr.Textbox(label="Endpoint name (empty: made up)", elem_id="pub-sm-name")
        sm_prefix = gr.Textbox(label="S3 prefix", placeholder="s3://my-bucket/align-studio", elem_id="pub-sm-prefix")
        with gr.Row():
            sm_role = gr.Textbox(label="SageMaker execution role ARN", scale=3, elem_id="pub-sm-role")
            sm_region = gr.Textbox(label="Region (else AWS_REGION)", scale=1, elem_id="pub-sm-region")
        with gr.Row():
            sm_deploy = gr.Button("Deploy", variant="primary", elem_id="pub-sm-deploy")
            sm_check = gr.Button("Status", elem_id="pub-sm-status-go")
            sm_delete = gr.Button("Delete endpoint", variant="stop", elem_id="pub-sm-delete")
        with gr.Row():
            sm_text = gr.Textbox(label="Test message", value="Hello! What can you do?", scale=3, elem_id="pub-sm-text")
            sm_call = gr.Button("Call the endpoint", scale=1, elem_id="pub-sm-call")
        sm_status = gr.Textbox(label="Endpoint", interactive=False, lines=3, elem_id="pub-sm-status")

    def on_endpoint(
        action: str,
        job_id,
        what,
        instance,
        name,
        prefix,
        role,
        region,
        text,
        request: gr.Request,
        profile: gr.OAuthProfile | None = None,
    ):
        """Deploy, status, call or delete; the answer (or AWS's refusal, in its words) as plain text."""
        if job_id is None:
            return "Choose a finished job."
        job_id = int(job_id)
        try:
            if action == "deploy":
                name = sagemaker.deploy(
                    ctx.store,
                    job_id,
                    what=what,
                    name=name,
                    prefix=prefix,
                    role_arn=role,
                    instance_type=instance,
                    region=(region or "").strip() or None,
                    by=login(request, profile),
                )
                return (
                    f"Creating the endpoint {name}; SageMaker takes some minutes to bring it InService "
                    "(press Status).\n" + sagemaker.endpoint_status(ctx.store, job_id)
                )
            if action == "status":
                return sagemaker.endpoint_status(ctx.store, job_id)
            if action == "call":
                return sagemaker.call(ctx.store, job_id, text)
            return sagemaker.delete(ctx.store, job_id, by=login(request, profile))
        except (sagemaker.SageMakerError, PublishError, access.TeamError) as error:
            return f"Error: {error}"

    def recorded_endpoint(job_id):
        info = sagemaker.endpoint_info(jobs.get(ctx.store, int(job_id))) if job_id is not None else {}
        return (
            f"Endpoint {info['endpoint']} ({info['region']}, {info['what']} on {info['instance_type']}) was "
            "deployed from here: press Status for its state."
            if info
            else ""
        )

    sm_inputs = [job_pick, sm_what, sm_instance, sm_name, sm_prefix, sm_role, sm_region, sm_text]
    for button, action in ((sm_deploy, "deploy"), (sm_check, "status"), (sm_call, "call"), (sm_delete, "delete")):
        button.click(on_endpoint, [gr.State(action), *sm_inputs], sm_status)
    job_pick.change(recorded_endpoint, job_pick, sm_status)
