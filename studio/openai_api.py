"""An OpenAI-compatible endpoint served by the app itself, so that an application written for OpenAI's API (or any
client of it) calls the aligned model unchanged:

    GET  /v1/models             the models that can answer: `base:<model>` and `job:<id>` (finished chat adapters)
    POST /v1/chat/completions   one answer to a conversation, streamed (server-sent events) or not

The model name is the key the Compare tab uses; a job's adapter runs on its base with one copy of the base weights
(studio.chat). Behind a login (`--auth`, a Space) every call needs an API key a lead created (`python -m
studio.openai_api create-key <name>`): only its SHA-256 is stored, the key itself is shown once.

    python -m studio.openai_api create-key ci-bot      # prints the key
    python -m studio.openai_api list-keys
    python -m studio.openai_api revoke-key ci-bot
"""

import argparse
import hashlib
import json
import secrets
import sys
import threading
import time
import uuid

from studio import chat, jobs, models
from studio.generate import GenerationParams, chat_texts, stream
from studio.paths import db_path
from studio.store import Store

KEY_PREFIX = "sk-studio-"
GREEDY_TEMPERATURE = 1e-4  # OpenAI's temperature 0 (always the likeliest token): sampling this cold is the same


class ApiKeyError(ValueError):
    """A key that cannot be created or revoked; the message says why."""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(store: Store, name: str, created_by: str | None = None) -> str:
    """A new API key named `name`; returns the key (shown once: only its hash is stored)."""
    name = (name or "").strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise ApiKeyError("Name the key (1 to 64 printable characters), e.g. the application that will use it.")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.tx() as db:
        if db.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone():
            raise ApiKeyError(f"There is already a key named {name!r}: revoke it first or choose another name.")
        db.execute("INSERT INTO api_keys (name, digest, created_by) VALUES (?, ?, ?)", (name, _digest(key), created_by))
    return key


def list_keys(store: Store) -> list[dict]:
    return [dict(r) for r in store.query("SELECT name, created_by, created_at, last_used_at FROM api_keys ORDER BY id")]


def revoke_key(store: Store, name: str) -> None:
    with store.tx() as db:
        if not db.execute("DELETE FROM api_keys WHERE name = ?", (name,)).rowcount:
            raise ApiKeyError(f"No key named {name!r}.")


def check_key(store: Store, key: str | None) -> bool:
    """True when `key` is one a lead created (and notes when it was last used)."""
    if not key or not key.startswith(KEY_PREFIX):
        return False
    with store.tx() as db:
        return bool(db.execute("UPDATE api_keys SET last_used_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                               "WHERE digest = ?", (_digest(key),)).rowcount)


def conversation(messages: list[dict]) -> dict:
    """OpenAI chat messages -> the studio's prompt (system prompt, earlier turns, the user's last message)."""
    system, turns = [], []
    for message in messages:
        role, content = message.get("role"), chat.text_of(message.get("content") or "")
        if role in ("system", "developer"):
            system.append(content)
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": content})
        else:
            raise ValueError(f"Messages with role {role!r} are not supported here; use system, user and assistant.")
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("The last message must be the user's: it is what the model answers.")
    return chat.prompt_from(turns[-1]["content"], "\n\n".join(system), turns[:-1])


def params_from(body: dict) -> GenerationParams:
    """OpenAI's sampling fields -> GenerationParams (one answer; ValueError names a field out of range)."""
    if body.get("n", 1) != 1:
        raise ValueError("n must be 1: ask again for another answer.")
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else float(temperature)
    if not 0 <= temperature <= 2:
        raise ValueError("temperature must be from 0 to 2.")
    seed = body.get("seed")
    return GenerationParams(
        k=1, temperature=max(temperature, GREEDY_TEMPERATURE),
        top_p=1.0 if body.get("top_p") is None else float(body["top_p"]),
        max_new_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
        seed=-1 if seed is None else int(seed) % 2**32)


def model_list(store: Store) -> list[dict]:
    now = int(time.time())
    return [{"id": key, "object": "model", "created": now, "owned_by": "align-studio", "description": label}
            for label, key in chat.options(store)]


def answer(store: Store, body: dict):
    """Check the request, load the model; returns (model name, its params, prompt tokens, the tokenizer, a generator
    of cumulative texts)."""
    name = body.get("model") or ""
    choice = chat.pick(store, name)  # ModelError: unknown model
    prompt = conversation(body.get("messages") or [])
    params = params_from(body)
    loaded, names = chat.load_together([choice])
    params = params.seeded()  # after loading: a first load draws random numbers (LoRA's initial weights)
    prompt_tokens = len(loaded.tokenizer(chat_texts(loaded.tokenizer, [prompt]), add_special_tokens=False)
                        ["input_ids"][0])

    def texts():
        cancel = threading.Event()  # a client that hangs up stops the generation
        try:
            for rows in stream(loaded, [prompt], params, names, cancel):
                yield rows[0]
        finally:
            cancel.set()

    return name, params, prompt_tokens, loaded.tokenizer, texts()


def router(store: Store, require_key: bool):
    """The FastAPI routes; the app adds them to Gradio's server (app.py)."""
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    api = APIRouter(prefix="/v1")

    def error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)

    def refused(request: Request) -> JSONResponse | None:
        if not require_key:
            return None
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if check_key(store, given):
            return None
        return error(401, "This studio needs an API key: ask a lead for one (python -m studio.openai_api create-key "
                          "<name>) and send it as the Bearer token.", "invalid_request_error", "invalid_api_key")

    @api.get("/models")
    def list_models(request: Request):
        return refused(request) or {"object": "list", "data": model_list(store)}

    @api.post("/chat/completions")
    def completions(request: Request, body: dict):
        denied = refused(request)
        if denied:
            return denied
        try:
            name, params, prompt_tokens, tokenizer, texts = answer(store, body)
        except (models.ModelError, jobs.JobError) as problem:
            return error(404, f"{problem} Models here: GET /v1/models.", "invalid_request_error", "model_not_found")
        except (ValueError, TypeError) as problem:
            return error(400, str(problem), "invalid_request_error")
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": ident, "created": created, "model": name, "system_fingerprint": None}

        def ended(text: str) -> tuple[int, str]:
            """The answer's token count and OpenAI's finish reason: length when it used every token allowed."""
            tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            return tokens, "length" if tokens >= params.max_new_tokens else "stop"

        if not body.get("stream"):
            text = ""
            for text in texts:
                pass
            completion_tokens, finish = ended(text)
            return {**head, "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                                 "finish_reason": finish}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens}}

        def events():
            def chunk(delta: dict, finish: str | None = None) -> str:
                return "data: " + json.dumps({**head, "object": "chat.completion.chunk", "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}) + "\n\n"

            yield chunk({"role": "assistant", "content": ""})
            sent = ""
            for text in texts:
                if text.startswith(sent) and len(text) > len(sent):  # a word may still change while it is decoded
                    yield chunk({"content": text[len(sent):]})
                    sent = text
            yield chunk({}, ended(sent)[1])
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return api


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.openai_api", description="API keys for /v1 (a lead's job).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create-key", help="create a key and print it (once)").add_argument("name")
    commands.add_parser("list-keys", help="the keys' names, who made them, when last used")
    commands.add_parser("revoke-key", help="delete a key").add_argument("name")
    args = parser.parse_args(argv)
    store = Store(db_path())
    try:
        if args.command == "create-key":
            print(create_key(store, args.name, created_by="terminal"))
        elif args.command == "revoke-key":
            revoke_key(store, args.name)
            print(f"Revoked {args.name}.")
        else:
            for row in list_keys(store):
                print(f"{row['name']}\tcreated {row['created_at']} by {row['created_by']}\t"
                      f"last used {row['last_used_at'] or 'never'}")
    except ApiKeyError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
