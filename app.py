"""Align Studio: `python app.py` opens the app (embedded model, no network needed)."""

import argparse
import os

# Gradio's usage analytics call out at launch; off unless the user opts in (GRADIO_ANALYTICS_ENABLED=True).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from studio.core.paths import use_space_storage_for_hub_cache  # noqa: E402

use_space_storage_for_hub_cache()  # before huggingface_hub reads HF_HOME

from pages import build_demo  # noqa: E402  (after the analytics setting, which gradio reads on import)
from pages.rank import rank_router  # noqa: E402
from studio.core import access  # noqa: E402
from studio.core.paths import db_path  # noqa: E402
from studio.core.store import Store  # noqa: E402
from studio.data.prompts import install_builtin_sets  # noqa: E402
from studio.evaluation import report  # noqa: E402
from studio.shipping import openai_api  # noqa: E402
from studio.training import sagemaker  # noqa: E402
from studio.training.launch import Manager  # noqa: E402

# The app's parts: the database, the job manager with its runners (local processes; SageMaker for the jobs sent
# there; an alignment report when a job that asked for one finishes), the pages over them, and (below) the routes.
store = Store(db_path())
install_builtin_sets(store)
report.interrupted(store)
manager = Manager(store, on_finished=lambda job_id: report.when_finished(store, job_id), remote=sagemaker)
demo = build_demo(store, manager)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Align Studio")
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on; 0.0.0.0 serves other machines (Docker, "
        "a g5 box). Default: GRADIO_SERVER_NAME, else 127.0.0.1",
    )
    parser.add_argument("--port", type=int, default=None, help="default: GRADIO_SERVER_PORT, else 7860")
    parser.add_argument("--auth", nargs="*", metavar="USER:PASSWORD", help="require a login (user:password pairs)")
    parser.add_argument(
        "--leads",
        nargs="*",
        metavar="USER",
        help="with --auth (or on a Space, hf usernames): only these "
        "users edit guidelines and rubrics, set targets, mark gold, train and push; the others rank "
        "and vote. Default: STUDIO_LEADS, else no roles",
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    args = parser.parse_args()
    if args.leads:
        if not args.auth and not os.environ.get("SPACE_ID"):
            parser.error("--leads needs a login to tell people apart: add --auth user:password ... (or run on a Space)")
        os.environ[access.LEADS_ENV] = ",".join(args.leads)
    auth = [tuple(pair.split(":", 1)) for pair in args.auth] if args.auth else None
    if auth and any(len(pair) != 2 or not all(pair) for pair in auth):
        parser.error("--auth takes user:password pairs, e.g. --auth anna:secret bob:secret2")
    # The Rank tab's submissions (pages/rank.py) and the OpenAI-compatible endpoint (/v1) on the same server, given
    # to the server before it starts (added after launch, a request could arrive first and get a 404). Behind a
    # login, or listening beyond the loopback address, /v1 asks for a lead's API key.
    host = args.host or os.environ.get("GRADIO_SERVER_NAME")
    require_key = openai_api.needs_key(host, login=bool(auth or os.environ.get("SPACE_ID")))
    routes = [
        route
        for router in [rank_router(store), openai_api.router(store, require_key=require_key)]
        for route in router.routes
    ]
    manager.start_watcher()  # queued jobs start, and finished ones are recorded, with no browser open
    # None lets Gradio read GRADIO_SERVER_NAME and GRADIO_SERVER_PORT (a Hugging Face Space sets them).
    demo.queue().launch(
        server_name=args.host,
        server_port=args.port,
        auth=auth,
        inbrowser=not args.no_browser,
        prevent_thread_lock=True,
        app_kwargs={"routes": routes},
    )
    if require_key:
        print(
            "The OpenAI-compatible endpoint (/v1) asks for an API key: create one with "
            "python -m studio api create-key <name>."
        )
    demo.block_thread()
