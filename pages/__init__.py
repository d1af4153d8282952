"""The Gradio pages: one file per tab, each `build_<tab>_tab(ctx)` laying out its components and wiring them last."""

import html
import threading
from dataclasses import dataclass, field

import gradio as gr

from studio.paths import db_path
from studio.prompts import install_builtin_sets
from studio.store import Store


@dataclass
class Ctx:
    """What every tab shares: the database, and per-browser-session objects that cannot live in gr.State."""

    store: Store
    cancel_events: dict[str, threading.Event] = field(default_factory=dict)

    def forget_session(self, request: gr.Request):
        event = self.cancel_events.pop(request.session_hash, None)
        if event is not None:
            event.set()  # a closed tab stops the work it started


def message(text: str, error: bool = False) -> str:
    """Markdown for a status line; the text is escaped because it may quote file names or model output."""
    text = html.escape(text, quote=False)
    return f"**Error:** {text}" if error else text


def build_demo(store: Store | None = None) -> gr.Blocks:
    from pages.generate import build_generate_tab

    ctx = Ctx(store or Store(db_path()))
    install_builtin_sets(ctx.store)
    with gr.Blocks(title="Align Studio") as demo:
        gr.Markdown("# Align Studio\nGenerate candidates, rank them, train, compare, publish.")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                generate = build_generate_tab(ctx)
        demo.load(generate["refresh"], None, generate["refresh_outputs"])
        demo.unload(ctx.forget_session)
    return demo
