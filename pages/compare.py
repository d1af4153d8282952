"""Compare tab: chat with a base model and its aligned adapter side by side; the `chat` and `models` API endpoints."""

import html
import threading

import gradio as gr

from pages import Ctx, cancel_button, cancellable, message, waiting
from pages.rank import identity
from studio.core import jobs
from studio.data import feedback
from studio.data.ranking import RankingError
from studio.inference import chat, models, servers
from studio.inference.decode import GenerationParams

HELP = (
    "One message goes to both; both answers stream at once from one copy of the base weights (the adapter is on "
    "for the right-hand row of the batch, off for the left), with the same sampling settings and seed. Type a "
    "job, or an adapter folder or Hub id, in the model box. A served model (an inference server's) streams "
    "as its server writes."
)


SIDES = ("base model's", "aligned model's")


def _models_of(key, other_key) -> list[str]:
    """The models a Compare turn uses (no second model: the adapter's base, this machine's)."""
    return [chat.keyed_model(key), chat.keyed_model(other_key)]


ITS_BASE = ("its base model", "")
SERVED_KEY = "base:" + servers.PREFIX


def _who(typed: str, request, profile) -> tuple[str, str]:
    """(name, kind) of whoever gives feedback: the login, else the typed name (the Rank tab's rule)."""
    try:
        return identity(typed, request, profile)
    except RankingError:
        raise feedback.FeedbackError(
            "Type your name first (next to the thumbs): feedback records who gave it."
        ) from None


def _answered_by(ctx: Ctx, key: str, other_key: str, side: int) -> tuple[str, str | None]:
    """(model, adapter or None) behind one side of the chat: the left is the aligned model's base unless another
    model was chosen to compare with."""
    if side == 0 and other_key:
        choice = chat.pick(ctx.store, other_key)
        return choice.model, choice.adapter
    choice = chat.pick(ctx.store, key)
    return choice.model, choice.adapter if side == 1 else None


def _before(history: list[dict], index: int, system: str) -> list[dict]:
    """The conversation an answer replied to: the system prompt, then every turn before it."""
    return ([{"role": "system", "content": system}] if (system or "").strip() else []) + history[:index]


def _shown(history):
    return [{"role": m["role"], "content": html.escape(m["content"], quote=False)} for m in history]


def _reacting(ctx: Ctx, side: int):
    """Thumbs on one side's answer -> feedback.record (the conversation before it, which model answered)."""

    def react(
        key,
        other_key,
        system_text,
        typed,
        both,
        data: gr.LikeData,
        request: gr.Request,
        profile: gr.OAuthProfile | None = None,
    ):
        history = list(both[side])
        try:
            who_, kind = _who(typed, request, profile)
            index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
            model, adapter = _answered_by(ctx, key, other_key, side)
            feedback.record(
                ctx.store,
                who_,
                "up" if data.liked else "down",
                _before(history, index, system_text),
                history[index]["content"],
                model,
                adapter,
                annotator_kind=kind,
            )
        except (feedback.FeedbackError, ValueError, IndexError) as error:  # a served model's ServerError is one
            return message(str(error), error=True)
        return message(f"Saved: thumbs {'up' if data.liked else 'down'} on the {SIDES[side]} answer, by {who_}.")

    return react


def _editing(ctx: Ctx, side: int):
    """An edited answer -> an edit in the feedback (the better answer), and the conversation goes on with it."""

    def edit(
        key,
        other_key,
        system_text,
        typed,
        both,
        data: gr.EditData,
        request: gr.Request,
        profile: gr.OAuthProfile | None = None,
    ):
        histories_ = [list(both[0]), list(both[1])]
        history = histories_[side]
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        if not 0 <= index < len(history) or history[index]["role"] != "assistant":
            return (
                gr.update(value=_shown(history)),
                gr.skip(),
                message("Only an answer can be edited here; write a new message below instead.", error=True),
            )
        better = html.unescape(str(data.value))
        try:
            who_, kind = _who(typed, request, profile)
            model, adapter = _answered_by(ctx, key, other_key, side)
            feedback.record(
                ctx.store,
                who_,
                "edit",
                _before(history, index, system_text),
                history[index]["content"],
                model,
                adapter,
                edited=better,
                annotator_kind=kind,
            )
        except (feedback.FeedbackError, ValueError) as error:
            return gr.update(value=_shown(history)), gr.skip(), message(str(error), error=True)
        history[index] = {"role": "assistant", "content": better}
        return (
            gr.update(value=_shown(history)),
            tuple(histories_),
            message(f"Saved: your better {SIDES[side]} answer, by {who_}; the conversation goes on with it."),
        )

    return edit


def _api_endpoints(ctx: Ctx) -> None:
    """The `chat` and `models` API endpoints (gradio_client, curl)."""

    def chat_api(
        message_text: str,
        model: str,
        system_prompt: str = "",
        history: list[dict] | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: int = -1,
    ) -> str:
        """Chat with one model: `model` is a key from the `models` endpoint (base:embedded, job:3) or an adapter
        folder or Hub id; `history` is the earlier turns as [{"role": "user"|"assistant", "content": "..."}]."""
        try:
            params = GenerationParams(
                k=1, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed
            )
            return chat.reply(ctx.store, model, message_text, system_prompt, history or [], params)
        except (models.ModelError, ValueError) as error:
            raise gr.Error(str(error)) from None

    def models_api() -> list[list[str]]:
        """The models that can chat: [label, key] pairs; pass the key as `model` to the chat endpoint."""
        return [[label, key] for label, key in chat.options(ctx.store)]

    gr.api(chat_api, api_name="chat", concurrency_limit=1, concurrency_id="model")
    gr.api(models_api, api_name="models")


def _sampling() -> tuple:
    """Temperature, top_p, max new tokens and seed: the same for both sides."""
    defaults = GenerationParams()
    with gr.Accordion("Sampling (the same for both sides)", open=False):
        with gr.Row():
            temperature = gr.Slider(0.05, 2.0, value=defaults.temperature, step=0.05, label="Temperature")
            top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="top_p")
            max_new_tokens = gr.Slider(
                8, 1024, value=defaults.max_new_tokens, step=8, label="Max new tokens", elem_id="cmp-max-tokens"
            )
            seed = gr.Number(-1, precision=0, minimum=-1, label="Seed (-1: new each turn)")
    return temperature, top_p, max_new_tokens, seed


def _models_row(ctx: Ctx) -> tuple:
    """The aligned model, the model it is compared with (its base unless another is chosen) and the system prompt."""
    with gr.Row():
        aligned = gr.Dropdown(
            [],
            label="Aligned model (adapter)",
            allow_custom_value=True,
            scale=2,
            info="a finished job or a served model, or type an adapter folder or a Hub adapter id",
            elem_id="cmp-model",
        )
        other = gr.Dropdown(
            [ITS_BASE],
            value=ITS_BASE[1],
            label="Compared with",
            scale=2,
            info="its base model (one copy of the weights), or any model, served ones included",
            elem_id="cmp-other",
        )
        system = gr.Textbox(
            label="System prompt",
            placeholder="optional, e.g. You are Nova, Lumen Bank's assistant.",
            scale=3,
            elem_id="cmp-system",
        )
    return aligned, other, system


def _responding(ctx: Ctx):
    """One message to both sides -> both answers streamed into their chat boxes."""

    def respond(
        key,
        other_key,
        system_text,
        user_text,
        both,
        temp,
        top_p_,
        max_new,
        seed_,
        request: gr.Request,
        progress=gr.Progress(),
    ):
        base_history, aligned_history = list(both[0]), list(both[1])
        try:
            params = GenerationParams(
                k=1,
                temperature=float(temp),
                top_p=float(top_p_),
                max_new_tokens=int(max_new),
                seed=int(seed_ if seed_ is not None else -1),
            )
            event = ctx.cancel_events[request.session_hash] = threading.Event()
            progress(0, desc="Loading the base model and the adapter")
            aligned_choice = chat.pick(ctx.store, key)
            other_choice = chat.pick(ctx.store, other_key) if other_key else None
            turn = chat.side_by_side(
                aligned_choice,
                user_text,
                system_text,
                (base_history, aligned_history),
                params,
                cancel=event,
                base=other_choice,
                store=ctx.store,
            )
            mine = {"role": "user", "content": user_text}
            seed_used = None
            left = other_choice.label if other_choice else f"Base model: {aligned_choice.model}"
            labels = (left, f"Aligned model: {aligned_choice.label}")
            for base_text, aligned_text, seed_used in turn:
                now = (
                    base_history + [mine, {"role": "assistant", "content": base_text}],
                    aligned_history + [mine, {"role": "assistant", "content": aligned_text}],
                )
                yield (
                    gr.update(value=_shown(now[0]), label=labels[0]),
                    gr.update(value=_shown(now[1]), label=labels[1]),
                    now,
                    "",
                    gr.skip(),
                )
            yield gr.skip(), gr.skip(), gr.skip(), "", message(f"Seed {seed_used}." if seed_used is not None else "")
        except (models.ModelError, ValueError) as error:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), message(str(error), error=True)
        finally:
            ctx.cancel_events.pop(request.session_hash, None)

    return respond


def build_compare_tab(ctx: Ctx) -> dict:
    aligned, other, system = _models_row(ctx)
    temperature, top_p, max_new_tokens, seed = _sampling()
    gr.Markdown(HELP)
    with gr.Row():
        # Model text is shown as text: no Markdown, no HTML.
        base_chat = gr.Chatbot(
            label="Base model", height=420, render_markdown=False, editable="all", elem_id="cmp-base"
        )
        aligned_chat = gr.Chatbot(
            label="Aligned model", height=420, render_markdown=False, editable="all", elem_id="cmp-aligned"
        )
    with gr.Row():
        text = gr.Textbox(label="Message", placeholder="Type, then Enter", scale=5, elem_id="cmp-message")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="cmp-send")
    with gr.Row():
        stop = cancel_button("Stop", elem_id="cmp-stop")
        clear = gr.Button("New conversation", elem_id="cmp-clear")
    with gr.Row():
        who = gr.Textbox(
            label="Your name, saved with your feedback",
            scale=1,
            elem_id="cmp-who",
            placeholder="then use the thumbs under an answer, or edit it (the pencil) to write a better one",
        )
        feedback_status = gr.Markdown(elem_id="cmp-feedback-status")
    status = gr.Markdown(elem_id="cmp-status")
    # The conversations as the models see them; the chat boxes show them escaped, since gr.Chatbot renders HTML.
    histories = gr.State(([], []))

    # Wiring
    feedback_inputs = [aligned, other, system, who, histories]
    for side, box in enumerate((base_chat, aligned_chat)):
        box.like(_reacting(ctx, side), feedback_inputs, feedback_status, queue=False)
        box.edit(_editing(ctx, side), feedback_inputs, [box, histories, feedback_status], queue=False)
    inputs = [aligned, other, system, text, histories, temperature, top_p, max_new_tokens, seed]
    outputs = [base_chat, aligned_chat, histories, text, status]
    # The old seed or error goes at once; the status says what happens now, also while waiting for the model.
    cancellable(
        gr.on(
            [send.click, text.submit],
            lambda key, other_key: waiting(*_models_of(key, other_key)),
            inputs[:2],
            status,
            queue=False,
        ),
        stop,
        _responding(ctx),
        inputs,
        outputs,
        gpu=(_models_of, inputs[:2]),
        concurrency_limit=1,
        concurrency_id="model",
    )
    stop.click(ctx.canceller("Stopped."), None, status)
    # The chat boxes' own clear button (their header) starts over too: the conversations the models see go with it.
    gr.on(
        [clear.click, base_chat.clear, aligned_chat.clear],
        lambda: ([], [], ([], []), ""),
        None,
        [base_chat, aligned_chat, histories, status],
    )

    _api_endpoints(ctx)

    def select(current):
        everything = chat.options(ctx.store)
        choices = [(label, key) for label, key in everything if key.startswith((jobs.JOB_KEY, SERVED_KEY))]
        keys = [key for _, key in choices if key.startswith(jobs.JOB_KEY)]
        compared = gr.update(choices=[ITS_BASE, *everything])
        if (current and (current in keys or not current.startswith(jobs.JOB_KEY))) or (not current and not keys):
            # Nothing to change: the value is left alone, so that what someone types while the tab opens stays.
            return gr.update(choices=choices), compared
        return gr.update(choices=choices, value=keys[0] if keys else None), compared

    return {"select": select, "model": aligned, "select_outputs": [aligned, other]}
