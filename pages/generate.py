"""Generate tab: pick a model and a prompt set, produce k candidates per prompt, see them in a table."""

import threading

import gradio as gr

from pages import Ctx, cancel_button, cancellable, counting, login, message, set_choices, waiting
from studio.core import access
from studio.data.candidates import candidates_table, generate_candidates
from studio.data.prompts import (
    PromptError,
    get_prompts,
    import_hub_prompts,
    import_prompt_file,
    list_prompt_sets,
    split_set,
)
from studio.inference import models, servers
from studio.inference.decode import GenerationParams

MODEL_CHOICES = [models.EMBEDDED, "HuggingFaceTB/SmolLM2-360M-Instruct", "meta-llama/Meta-Llama-3-8B-Instruct"]
TABLE_HEADERS = ["#", "Prompt", "Candidate", "Model", "Answer"]


def _add_set_section(ctx: Ctx, prompt_set) -> None:
    """Add a prompt set from a file or a Hub data set."""
    with gr.Accordion("Add a prompt set", open=False):
        upload = gr.File(
            label="JSONL or CSV with a prompt, question or instruction column (system optional)",
            file_types=[".jsonl", ".csv"],
            elem_id="gen-upload",
        )
        hub_id = gr.Textbox(label="or a Hub data set id", placeholder="tatsu-lab/alpaca")
        with gr.Row():
            hub_split = gr.Textbox("train", label="Split")
            hub_column = gr.Textbox(label="Column", placeholder="found automatically")
        set_name = gr.Textbox(label="Name for the new set", placeholder="letters, digits, . _ -")
        with gr.Row():
            add_file = gr.Button("Add file")
            add_hub = gr.Button("Load from Hub")
        set_status = gr.Markdown(elem_id="gen-set-status")

    def add_set(add):
        try:
            name, parsed = add()
        except (PromptError, ValueError) as error:
            return gr.skip(), message(str(error), error=True)
        return set_choices(ctx.store, name), message(f"Added prompt set '{name}': {parsed.summary()}.")

    def add_from_file(file_path, name):
        if not file_path:
            return gr.skip(), message("Choose a .jsonl or .csv file first.", error=True)
        return add_set(lambda: import_prompt_file(ctx.store, file_path, name))

    def add_from_hub(dataset_id, split, column, name):
        return add_set(lambda: import_hub_prompts(ctx.store, dataset_id, split, column, name))

    add_file.click(add_from_file, [upload, set_name], [prompt_set, set_status])
    add_hub.click(add_from_hub, [hub_id, hub_split, hub_column, set_name], [prompt_set, set_status])


def _split_section(ctx: Ctx, prompt_set) -> None:
    """Split the chosen set into train and held-out parts."""
    with gr.Accordion("Split the set into train and held-out parts", open=False):
        gr.Markdown(
            "Generate and rank on `<set>-train`; report and evaluate on `<set>-heldout`, whose "
            "prompts the model never trains on. The guidelines and the rubric are copied."
        )
        with gr.Row():
            held_share = gr.Slider(0.05, 0.95, value=0.3, step=0.05, label="Share held out", elem_id="gen-split-share")
            split_seed = gr.Number(0, precision=0, label="Seed of the draw", elem_id="gen-split-seed")
        split = gr.Button("Split", elem_id="gen-split")
        split_status = gr.Markdown(elem_id="gen-split-status")

    def do_split(selected, share, seed_):
        if not selected:
            return gr.skip(), message("Choose the prompt set to split.", error=True)
        try:
            train, held = split_set(ctx.store, selected, float(share), int(seed_ or 0))
        except (PromptError, ValueError) as error:
            return gr.skip(), message(str(error), error=True)
        sizes = {s["name"]: s["prompts"] for s in list_prompt_sets(ctx.store)}
        return set_choices(ctx.store, train), message(
            f"{train}: {sizes[train]} prompts, {held}: {sizes[held]} prompts (seed {int(seed_ or 0)}). "
            f"Generating on {train} now."
        )

    split.click(do_split, [prompt_set, held_share, split_seed], [prompt_set, split_status])


def model_choices(store) -> list[str]:
    """The models to pick from: the in-process ones, then every served model of the studio's inference servers."""
    return MODEL_CHOICES + servers.served_references(store)


def _servers_section(ctx: Ctx, model) -> None:
    """Inference servers (vLLM, llama.cpp, Ollama, TGI, SGLang, OpenAI): add one, see what each serves."""
    with gr.Accordion("Inference servers: vLLM, llama.cpp, Ollama, TGI, SGLang, OpenAI", open=False):
        gr.Markdown(
            "A served model answers wherever the studio asks for a model (candidates, the LLM judge, evaluations) "
            "as `server:<name>/<model>`. Several base URLs share the requests; one that fails is left and its "
            "requests go to the others. The key stays in the environment: give the variable's name."
        )
        with gr.Row():
            name = gr.Textbox(label="Name", placeholder="vllm-8b", elem_id="gen-server-name")
            key_env = gr.Textbox(
                label="Environment variable with the API key (empty: none)",
                placeholder="OPENAI_API_KEY",
                elem_id="gen-server-key-env",
            )
        urls = gr.Textbox(
            label="Base URLs, one per line",
            placeholder="http://localhost:8000/v1",
            lines=2,
            elem_id="gen-server-urls",
        )
        with gr.Row():
            add = gr.Button("Add and check", elem_id="gen-server-add")
            remove = gr.Button("Remove", elem_id="gen-server-remove")
        listing = gr.Dataframe(
            headers=["Name", "Base URLs", "Key in", "Models"],
            column_widths=["18%", "42%", "20%", "20%"],
            value=lambda: _server_rows(ctx.store),
            interactive=False,
            wrap=True,
            elem_id="gen-servers",
        )
        said = gr.Markdown(elem_id="gen-server-status")

    def do_add(name_, urls_, key_env_, request: gr.Request, profile: gr.OAuthProfile | None = None):
        try:
            connection = servers.add(ctx.store, name_, urls_, key_env_, by=login(request, profile))
        except (servers.ServerError, access.TeamError) as error:
            return gr.skip(), gr.skip(), message(str(error), error=True)
        served = ", ".join(connection.models) or "no models"
        return (
            _server_rows(ctx.store),
            gr.update(choices=model_choices(ctx.store)),
            message(f"{connection.name} answers and serves {served}. Pick it as the model above."),
        )

    def do_remove(name_, request: gr.Request, profile: gr.OAuthProfile | None = None):
        try:
            servers.remove(ctx.store, (name_ or "").strip(), by=login(request, profile))
        except (servers.ServerError, access.TeamError) as error:
            return gr.skip(), gr.skip(), message(str(error), error=True)
        return _server_rows(ctx.store), gr.update(choices=model_choices(ctx.store)), message(f"Removed {name_}.")

    add.click(do_add, [name, urls, key_env], [listing, model, said])
    remove.click(do_remove, [name], [listing, model, said])


def _server_rows(store) -> list[list[str]]:
    return [
        [c.name, "\n".join(c.urls), c.key_env or "(no key)", ", ".join(c.models)] for c in servers.connections(store)
    ]


def _sampling_settings() -> tuple:
    """k, temperature, top_p, max new tokens, seed and prompts per batch."""
    defaults = GenerationParams()
    k = gr.Slider(1, 8, value=defaults.k, step=1, label="Candidates per prompt (k)", elem_id="gen-k")
    temperature = gr.Slider(0.05, 2.0, value=defaults.temperature, step=0.05, label="Temperature")
    top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="top_p")
    max_new_tokens = gr.Slider(
        8, 1024, value=defaults.max_new_tokens, step=8, label="Max new tokens", elem_id="gen-max-tokens"
    )
    seed = gr.Number(defaults.seed, precision=0, minimum=-1, label="Seed (-1: new each run)")
    batch_size = gr.Slider(1, 32, value=defaults.batch_size, step=1, label="Prompts per batch")
    return k, temperature, top_p, max_new_tokens, seed, batch_size


def build_generate_tab(ctx: Ctx) -> dict:
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            model = gr.Dropdown(
                model_choices(ctx.store),
                value=models.EMBEDDED,
                allow_custom_value=True,
                label="Model",
                info="embedded works offline; or type a Hub id or a local folder; server:<name>/<model> is served",
                elem_id="gen-model",
            )
            quantize_4bit = gr.Checkbox(False, label="Load in 4-bit (NF4, CUDA GPU only)")
            prompt_set = gr.Dropdown([], label="Prompt set", elem_id="gen-prompt-set")
            limit = gr.Number(
                0, precision=0, minimum=0, label="Prompts to use: the first N (0 = all)", elem_id="gen-limit"
            )
            _servers_section(ctx, model)
            _add_set_section(ctx, prompt_set)
            _split_section(ctx, prompt_set)
            k, temperature, top_p, max_new_tokens, seed, batch_size = _sampling_settings()
            with gr.Row():
                start = gr.Button("Generate", variant="primary", elem_id="gen-start")
                cancel = cancel_button(elem_id="gen-cancel")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="gen-status")
            table = gr.Dataframe(
                headers=TABLE_HEADERS,
                datatype=["number", "str", "number", "str", "str"],
                interactive=False,
                wrap=True,
                column_widths=["5%", "26%", "13%", "12%", "44%"],
                max_height=900,
                elem_id="gen-table",
                label="Candidates",
            )

    def refresh(selected, first_n):
        return set_choices(ctx.store, selected), show_table(selected, first_n)

    def show_table(selected, first_n):
        return candidates_table(ctx.store, selected, int(first_n or 0)) if selected else []

    def run(
        model_ref,
        four_bit,
        selected,
        first_n,
        k_,
        temp,
        top_p_,
        max_new,
        seed_,
        batch,
        request: gr.Request,
        progress=gr.Progress(),
    ):
        if not selected:
            return message("Choose a prompt set first.", error=True), gr.skip()
        try:
            params = GenerationParams(
                k=int(k_),
                temperature=float(temp),
                top_p=float(top_p_),
                max_new_tokens=int(max_new),
                seed=int(seed_ if seed_ is not None else -1),
                batch_size=int(batch),
            )
            prompts = get_prompts(ctx.store, selected, int(first_n or 0))
            event = ctx.cancel_events[request.session_hash] = threading.Event()
            progress(0, desc=f"Loading {model_ref} (the first use of 'embedded' converts it, about half a minute)")
            result = generate_candidates(
                ctx.store,
                model_ref,
                prompts,
                params,
                quantize_4bit=four_bit,
                cancel=event,
                on_progress=counting(progress, "prompts"),
            )
        except (PromptError, models.ModelError, ValueError) as error:  # servers.ServerError is a ValueError
            return message(str(error), error=True), gr.skip()
        finally:
            ctx.cancel_events.pop(request.session_hash, None)
        text = (
            f"Saved {result.responses_added} candidates for {result.prompts_done} of {result.prompts_total} "
            f"prompts (seed {result.seed})."
        )
        if result.cancelled:
            text = "Cancelled. " + text + " The finished prompts are kept."
        return message(text), show_table(selected, first_n)

    # Wiring
    gr.on([prompt_set.change, limit.change], show_table, [prompt_set, limit], table)
    # One generation at a time holds the model; other visitors wait in the queue.
    cancellable(
        start.click(waiting, model, status, queue=False),
        cancel,
        run,
        [model, quantize_4bit, prompt_set, limit, k, temperature, top_p, max_new_tokens, seed, batch_size],
        [status, table],
        gpu=(lambda chosen: [chosen], [model]),
        concurrency_limit=1,
        concurrency_id="model",
    )
    cancel.click(
        ctx.canceller("Cancelling: the batch in progress is dropped, finished prompts are kept…"), None, status
    )
    return {
        "model": model,
        "prompt_set": prompt_set,
        "limit": limit,
        "k": k,
        "start": start,
        "cancel": cancel,
        "status": status,
        "table": table,
        "refresh": lambda: refresh(None, 0),
        "refresh_outputs": [prompt_set, table],
    }
