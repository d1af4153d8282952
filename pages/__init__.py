"""The Gradio pages: one file per tab, each `build_<tab>_tab(ctx)` laying out its components and wiring them last."""

import html
import re
import threading
import time
from dataclasses import dataclass, field

import gradio as gr

from studio.core.paths import persistence_warning
from studio.core.store import Store
from studio.data.prompts import list_prompt_sets
from studio.inference import models, servers
from studio.training.launch import Manager


def cancel_button(label: str = "Cancel", **kwargs) -> gr.Button:
    """A Cancel button: grey and not clickable until the work it cancels starts (see cancellable)."""
    return gr.Button(label, variant="secondary", interactive=False, **kwargs)


def cancellable(started, cancel: gr.Button, fn, inputs, outputs, gpu=None, **kwargs):
    """After `started` (a click's first, quick step): Cancel turns red and live, `fn` runs, and Cancel goes grey
    again whether `fn` finished, was cancelled or failed (Gradio runs .then after an error too). `gpu`: (the
    models the action uses, as a function of `gpu_inputs`, those inputs) for gpu_turn, before all that."""
    if gpu is not None:
        started = started.then(lambda *values: gpu_turn(*gpu[0](*values)), gpu[1], None, concurrency_limit=None)
    return (
        started.then(lambda: gr.update(interactive=True, variant="stop"), None, cancel, queue=False)
        .then(fn, inputs, outputs, **kwargs)
        .then(lambda: gr.update(interactive=False, variant="secondary"), None, cancel, queue=False)
    )


def gpu_turn(*used: str | None) -> None:
    """A queued step of its own before an action that holds the one "model" slot (Gradio's concurrency_id): an
    action that uses this machine's model waits here while a training job holds the GPU, outside that slot, so that
    an action whose models are all served (`used`: their references; None or a local one: this machine's) is not
    held up in the queue behind it."""
    if not used or not all(servers.is_served(m) for m in used):
        models.wait_while_gpu_held()


@dataclass
class Ctx:
    """What every tab shares: the database, and per-browser-session objects that cannot live in gr.State."""

    store: Store
    jobs: "Manager" = None
    cancel_events: dict[str, threading.Event] = field(default_factory=dict)

    def canceller(self, said: str):
        """A click handler that sets this browser session's cancel event and answers `said`."""

        def cancel(request: gr.Request):
            event = self.cancel_events.get(request.session_hash)
            if event is None:
                return message("Nothing is running.")
            event.set()
            return message(said)

        return cancel

    def forget_session(self, request: gr.Request):
        event = self.cancel_events.pop(request.session_hash, None)
        if event is not None:
            event.set()  # a closed tab stops the work it started


def keep_choice(choices: list[tuple], selected=None):
    """A dropdown update to (label, key) `choices` that keeps `selected` if it is still among them, else picks the
    first (the newest, where choices are newest first), else none."""
    keys = [key for _, key in choices]
    return gr.update(choices=choices, value=selected if selected in keys else (keys[0] if keys else None))


def set_choices(store: Store, selected: str | None = None):
    """A prompt-set dropdown update: every set with its size, keeping `selected` if it still exists."""
    return keep_choice(
        [(f"{s['name']} ({s['prompts']} prompts)", s["name"]) for s in list_prompt_sets(store)], selected
    )


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>:])")


def plain(text: str) -> str:
    """`text` for a Markdown component, shown as written: HTML and Markdown are escaped (it may quote file names,
    stored labels or model output, which must never become links, images or markup)."""
    return _MARKDOWN.sub(r"\\\1", html.escape(str(text), quote=False))


def counting(progress, unit: str):
    """An on_progress(done, total) callback for gr.Progress: "3 of 45 prompts, about 2 min left" (done may be a
    fraction while a batch runs; the estimate comes from the pace so far)."""
    started = time.monotonic()

    def update(done, total):
        note = f"{done:.0f} of {total} {unit}" if float(done).is_integer() else f"{done:.1f} of {total} {unit}"
        elapsed = time.monotonic() - started
        if 0 < done < total and elapsed > 5:
            left = elapsed / done * (total - done)
            note += f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
        progress(min(done / total, 1.0) if total else 0.0, desc=note)

    return update


def waiting(*used: str | None) -> str:
    """The status line of an action that needs the model, shown the moment it is asked for (before it may wait in
    line behind another tab's work): what is happening now, replacing whatever an earlier action said. `used`: the
    models the action uses, where the page knows them; served ones wait for neither the GPU (gpu_turn) nor the app's
    model, only for a turn in the queue."""
    busy, holder = models.user(), models.gpu_holder()
    if used and all(servers.is_served(m) for m in used):
        if busy:
            return message(f"Waiting for a turn: the app's model is {busy} for someone; then to the inference server.")
        return message("Working… (on the inference server" + (f"; {holder}" if holder else "") + ")")
    if holder:
        return message(f"Waiting for the GPU: {holder}. This starts by itself when the job ends.")
    return message(
        f"Waiting for the model: it is {busy} for someone (another tab or visitor); yours is next."
        if busy
        else "Working…"
    )


def login(request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> str | None:
    """The logged-in user (--auth name, or hf:<user> on a Space), None without a login: whom the engine's role
    checks ask about."""
    if profile is not None:
        return f"hf:{profile.username}"
    return getattr(request, "username", None) or None


def login_of(request) -> tuple[str | None, str | None]:
    """(the --auth user, the Hugging Face user on a Space) of a plain FastAPI request to one of the studio's own
    routes on Gradio's server, read the way Gradio reads them for its events: its session cookie, and the OAuth
    session that its login button fills (an expired one counts as none)."""
    server = request.app
    cookie = getattr(server, "cookie_id", None)
    token = request.cookies.get(f"access-token-{cookie}") or request.cookies.get(f"access-token-unsecure-{cookie}")
    username = getattr(server, "tokens", {}).get(token) if token else None
    info = (request.scope.get("session") or {}).get("oauth_info")
    if info and info.get("expires_at") is not None and info["expires_at"] < time.time():
        info = None
    return username, (info or {}).get("userinfo", {}).get("preferred_username")


def message(text: str, error: bool = False) -> str:
    """Markdown for a status line, the text shown as written (see plain)."""
    return f"**Error:** {plain(text)}" if error else plain(text)


def build_demo(store: Store, manager: Manager) -> gr.Blocks:
    """The tabs over `store`, launching and watching jobs through `manager` (app.py makes both and starts it)."""
    from pages.compare import build_compare_tab
    from pages.data import build_data_tab
    from pages.evaluate import build_evaluate_tab
    from pages.generate import build_generate_tab
    from pages.publish import build_publish_tab
    from pages.rank import build_rank_tab
    from pages.train import build_train_tab

    ctx = Ctx(store, manager)
    with gr.Blocks(title="Align Studio") as demo:
        gr.Markdown("# Align Studio\nGenerate candidates, rank them, train, compare, evaluate, publish.")
        warning = persistence_warning()
        if warning:
            gr.Markdown(f"**Not persistent:** {plain(warning)}", elem_id="persistence-warning")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                generate = build_generate_tab(ctx)
            with gr.Tab("Rank", id="rank") as rank_tab:
                rank = build_rank_tab(ctx)
            with gr.Tab("Data", id="data") as data_tab:
                data = build_data_tab(ctx)
            with gr.Tab("Train", id="train") as train_tab:
                train = build_train_tab(ctx)
            with gr.Tab("Compare", id="compare") as compare_tab:
                compare = build_compare_tab(ctx)
            with gr.Tab("Evaluate", id="evaluate") as evaluate_tab:
                evaluation = build_evaluate_tab(ctx)
            with gr.Tab("Publish", id="publish") as publish_tab:
                publish = build_publish_tab(ctx)
        demo.load(generate["refresh"], None, generate["refresh_outputs"])
        demo.load(rank["load"], None, rank["load_outputs"])
        demo.load(lambda: set_choices(ctx.store), None, data["prompt_set"])
        # Sets added on another tab (or by another visitor) show up when a tab is opened; the choice is kept.
        rank_tab.select(lambda selected: set_choices(ctx.store, selected), rank["prompt_set"], rank["prompt_set"])
        data_tab.select(data["select"], data["select_inputs"], data["select_outputs"])
        train_tab.select(train["tab_select"], train["select_inputs"], train["select_outputs"])
        demo.load(train["select"], train["select_inputs"], train["select_outputs"])
        compare_tab.select(compare["select"], compare["model"], compare["select_outputs"])
        evaluate_tab.select(evaluation["select"], evaluation["select_inputs"], evaluation["select_outputs"])
        publish_tab.select(publish["select"], publish["select_inputs"], publish["select_outputs"])
        demo.unload(ctx.forget_session)
    return demo
