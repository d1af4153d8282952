"""Align Studio: `python app.py` opens the app (embedded model, no network needed)."""

import argparse

from pages import build_demo

demo = build_demo()

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Align Studio")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines (Docker, a g5 box)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", nargs="*", metavar="USER:PASSWORD", help="require a login (user:password pairs)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    args = parser.parse_args()
    auth = [tuple(pair.split(":", 1)) for pair in args.auth] if args.auth else None
    if auth and any(len(pair) != 2 or not all(pair) for pair in auth):
        parser.error("--auth takes user:password pairs, e.g. --auth anna:secret bob:secret2")
    demo.queue().launch(server_name=args.host, server_port=args.port, auth=auth, inbrowser=not args.no_browser)
