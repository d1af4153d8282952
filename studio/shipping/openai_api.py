"""An OpenAI-compatible endpoint served by the app itself, so that an application written for OpenAI's API (or any
client of it) calls the aligned model unchanged:

    GET  /v1/models             the models that can answer: `base:<model>` and `job:<id>` (finished chat adapters)
    POST /v1/chat/completions   one answer to a conversation, streamed (server-sent events) or not

The model name is the key the Compare tab uses; a job's adapter runs on its base with one copy of the base weights
(inference/chat.py). Only the models GET /v1/models lists are served: any other name is a 404, never a download.
Behind a login (`--auth`, a Space), and whenever the app listens beyond this machine's loopback address
(`--host 0.0.0.0`, as in the Docker image), every call needs an API key a lead created
(`python -m studio api create-key <name>`): only its SHA-256 is stored, the key itself is shown once.

A request the endpoint cannot honour is refused with OpenAI's error shape rather than answered as if it were plain
chat: tools and function calls, JSON output formats, log-probabilities, stop sequences, penalties, non-text content,
and any field OpenAI's API does not have.

    python -m studio api create-key ci-bot      # prints the key
    python -m studio api list-keys
    python -m studio api revoke-key ci-bot
"""

import argparse
import hashlib
import ipaddress
import json
import secrets
import sys
import threading
import time
import uuid

from studio.core import access, jobs
from studio.core.paths import db_path
from studio.core.store import Store
from studio.inference import chat, models, servers
from studio.inference.decode import GenerationParams, chat_texts, stream

KEY_PREFIX = "sk-studio-"
GREEDY_TEMPERATURE = 1e-4  # OpenAI's temperature 0 (always the likeliest token): sampling this cold is the same


class ApiKeyError(ValueError):
    """A key that cannot be created or revoked; the message says why."""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(store: Store, name: str, by=None) -> str:
    """A new API key named `name`, created by `by` (a lead, or access.TERMINAL); returns the key (shown once: only
    its hash is stored)."""
    access.check_lead(by, "create API keys")
    created_by = "terminal" if by is access.TERMINAL else by
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


def revoke_key(store: Store, name: str, by=None) -> None:
    access.check_lead(by, "revoke API keys")
    with store.tx() as db:
        if not db.execute("DELETE FROM api_keys WHERE name = ?", (name,)).rowcount:
            raise ApiKeyError(f"No key named {name!r}.")


def check_key(store: Store, key: str | None) -> bool:
    """True when `key` is one a lead created (and notes when it was last used)."""
    if not key or not key.startswith(KEY_PREFIX):
        return False
    with store.tx() as db:
        return bool(
            db.execute(
                "UPDATE api_keys SET last_used_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE digest = ?",
                (_digest(key),),
            ).rowcount
        )


def needs_key(host: str | None, login: bool) -> bool:
    """Whether /v1 asks for an API key: behind a login (--auth, a Space), and whenever the server listens beyond
    the loopback address (0.0.0.0 serves every machine that can reach this one)."""
    if login:
        return True
    host = (host or "127.0.0.1").strip().strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve beyond this machine
        return True


class RequestError(ValueError):
    """A request the endpoint cannot honour; `param` names the field, as OpenAI's errors do."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# The fields of OpenAI's chat completion request this endpoint honours, or may ignore without changing the answer
# (`user`, `metadata`, `store`, `service_tier`, `prompt_cache_key`, `safety_identifier`: the caller's bookkeeping).
HONOURED = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "stream",
    "stream_options",
    "n",
    "user",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
}
# Fields OpenAI's API has that change the answer in ways this endpoint does not implement: refused when set to
# anything but their "off" value, so that a client never takes a plain answer for what it asked.
NOT_HONOURED = {
    "tools": "tool calls",
    "tool_choice": "tool calls",
    "parallel_tool_calls": "tool calls",
    "functions": "function calls",
    "function_call": "function calls",
    "logprobs": "log-probabilities",
    "top_logprobs": "log-probabilities",
    "logit_bias": "logit_bias",
    "stop": "stop sequences",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "audio": "audio output",
    "modalities": "output other than text",
    "prediction": "predicted outputs",
    "response_format": "JSON output",
    "web_search_options": "web search",
    "reasoning_effort": "reasoning settings",
    "verbosity": "verbosity",
}
_OFF = (None, False, 0, 0.0, "", [], {}, "none", "auto", ["text"], {"type": "text"})


def check_request(body) -> dict:
    """The request body checked against what this endpoint honours; RequestError names the field."""
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    for name, value in body.items():
        if name in HONOURED:
            continue
        if name not in NOT_HONOURED:
            raise RequestError(f"Unrecognized request argument supplied: {name}", name)
        if not any(value == off and type(value) is type(off) for off in _OFF):
            if name == "parallel_tool_calls" and not body.get("tools"):
                continue
            what = NOT_HONOURED[name]
            raise RequestError(f"{name}: this endpoint does not support {what}; leave {name} out.", name)
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise RequestError("model: name one of the models GET /v1/models lists.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: expected a non-empty list of messages.", "messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"Invalid type for '{where}': expected an object.", where)
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text" or not isinstance(part.get("text"), str):
                    raise RequestError(
                        f"{where}.content[{j}]: only text parts can be read here (got "
                        f"{kind or type(part).__name__}); this model reads no images, audio or files.",
                        f"{where}.content[{j}]",
                    )
        elif content is not None and not isinstance(content, str):
            raise RequestError(f"{where}.content: expected text or a list of text parts.", f"{where}.content")
        if message.get("tool_calls") or message.get("function_call"):
            raise RequestError(f"{where}: tool and function calls are not supported here.", where)
    for name in ("stream", "store"):
        if name in body and body[name] is not None and not isinstance(body[name], bool):
            raise RequestError(f"{name}: expected true or false.", name)
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise RequestError("stream_options: only include_usage is supported.", "stream_options")
    for name in ("temperature", "top_p"):
        if body.get(name) is not None and (isinstance(body[name], bool) or not isinstance(body[name], (int, float))):
            raise RequestError(f"{name}: expected a number.", name)
    for name in ("max_tokens", "max_completion_tokens", "seed", "n"):
        if body.get(name) is not None and (isinstance(body[name], bool) or not isinstance(body[name], int)):
            raise RequestError(f"{name}: expected a whole number.", name)
    return body


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
    top_p = 1.0 if body.get("top_p") is None else float(body["top_p"])
    if not 0 < top_p <= 1:
        raise ValueError("top_p must be above 0 and at most 1.")
    max_new_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
    if max_new_tokens < 1:
        raise ValueError("max_tokens must be 1 or more.")
    return GenerationParams(
        k=1,
        temperature=max(temperature, GREEDY_TEMPERATURE),
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=-1 if seed is None else int(seed) % 2**32,
    )


def model_list(store: Store) -> list[dict]:
    now = int(time.time())
    return [
        {"id": key, "object": "model", "created": now, "owned_by": "align-studio", "description": label}
        for label, key in chat.options(store)
        if not servers.is_served(chat.keyed_model(key))  # the inference servers' models are theirs to serve
    ]


def answer(store: Store, body: dict):
    """Check the request, load the model; returns (model name, its params, prompt tokens, the tokenizer, a generator
    of cumulative texts)."""
    body = check_request(body)
    name = body["model"].strip()
    if name not in {m["id"] for m in model_list(store)}:  # never a typed folder or Hub id: no download on request
        raise models.ModelError(f"The model {name!r} does not exist here.")
    choice = chat.pick(store, name)
    prompt = conversation(body.get("messages") or [])
    params = params_from(body)
    loaded, names = chat.load_together([choice])
    params = params.seeded()  # after loading: a first load draws random numbers (LoRA's initial weights)
    prompt_tokens = len(
        loaded.tokenizer(chat_texts(loaded.tokenizer, [prompt]), add_special_tokens=False)["input_ids"][0]
    )

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
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, StreamingResponse

    api = APIRouter(prefix="/v1")

    def error(status: int, message: str, kind: str, code: str | None = None, param: str | None = None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)

    def refused(request: Request) -> JSONResponse | None:
        if not require_key:
            return None
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if check_key(store, given):
            return None
        return error(
            401,
            "This studio needs an API key: ask a lead for one (python -m studio api create-key "
            "<name>) and send it as the Bearer token.",
            "invalid_request_error",
            "invalid_api_key",
        )

    @api.get("/models")
    def list_models(request: Request):
        return refused(request) or {"object": "list", "data": model_list(store)}

    @api.post("/chat/completions")
    async def completions(request: Request):
        # The body is read here rather than by FastAPI, so that a malformed one gets OpenAI's error shape (not
        # FastAPI's 422); the work runs in a worker thread, off the event loop.
        try:
            body = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError):
            return error(
                400,
                "We could not parse the JSON body of your request: send a JSON object (see "
                "OpenAI's chat completions API).",
                "invalid_request_error",
            )
        return await run_in_threadpool(complete, request, body)

    def complete(request: Request, body):
        denied = refused(request)
        if denied:
            return denied
        try:
            name, params, prompt_tokens, tokenizer, texts = answer(store, body)
        except RequestError as problem:
            return error(400, str(problem), "invalid_request_error", param=problem.param)
        except (models.ModelError, jobs.JobError) as problem:
            return error(
                404,
                f"{problem} Models here: GET /v1/models.",
                "invalid_request_error",
                "model_not_found",
                param="model",
            )
        except (ValueError, TypeError) as problem:
            return error(400, str(problem), "invalid_request_error")
        usage_chunk = bool((body.get("stream_options") or {}).get("include_usage"))
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
            return {
                **head,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }

        def events():
            usage = {"usage": None} if usage_chunk else {}  # stream_options.include_usage: OpenAI's last chunk

            def chunk(delta: dict, finish: str | None = None) -> str:
                return (
                    "data: "
                    + json.dumps(
                        {
                            **head,
                            "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                            **usage,
                        }
                    )
                    + "\n\n"
                )

            yield chunk({"role": "assistant", "content": ""})
            sent = ""
            for text in texts:
                if text.startswith(sent) and len(text) > len(sent):  # a word may still change while it is decoded
                    yield chunk({"content": text[len(sent) :]})
                    sent = text
            completion_tokens, finish = ended(sent)
            yield chunk({}, finish)
            if usage_chunk:
                yield (
                    "data: "
                    + json.dumps(
                        {
                            **head,
                            "object": "chat.completion.chunk",
                            "choices": [],
                            "usage": {
                                "prompt_tokens": prompt_tokens,
                                "completion_tokens": completion_tokens,
                                "total_tokens": prompt_tokens + completion_tokens,
                            },
                        }
                    )
                    + "\n\n"
                )
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return api


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio api", description="API keys for /v1 (a lead's job).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create-key", help="create a key and print it (once)").add_argument("name")
    commands.add_parser("list-keys", help="the keys' names, who made them, when last used")
    commands.add_parser("revoke-key", help="delete a key").add_argument("name")
    args = parser.parse_args(argv)
    store = Store(db_path())
    try:
        if args.command == "create-key":
            print(create_key(store, args.name, access.TERMINAL))
        elif args.command == "revoke-key":
            revoke_key(store, args.name, access.TERMINAL)
            print(f"Revoked {args.name}.")
        else:
            for row in list_keys(store):
                print(
                    f"{row['name']}\tcreated {row['created_at']} by {row['created_by']}\t"
                    f"last used {row['last_used_at'] or 'never'}"
                )
    except ApiKeyError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
