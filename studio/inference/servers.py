"""Inference servers the team already runs, through their OpenAI-compatible API: vLLM (`vllm serve`), llama.cpp's
`llama-server`, Ollama, TGI, SGLang, OpenAI itself.

A connection is a name, one or more base URLs (`http://host:8000/v1`) and the NAME of the environment variable that
holds the API key: the key is read from the environment at each request and never written anywhere. A served model
is the model reference `server:<connection>/<model id>` and stands wherever the studio asks for a model: candidates,
the LLM judge, evaluations. Requests run many at a time (the server batches them) and take turns over the base URLs;
a URL that fails is left for the rest of the run and its request retried on the others, and a request no URL could
answer ends the run with a message that names each server and what it said. Whatever the caller stored before that
stays stored.
"""

import email.utils
import itertools
import json
import math
import os
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx

from studio.core import access
from studio.core.store import Store

PREFIX = "server:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Credentials the studio holds for itself, never sent to a server someone adds: the Hub's token, AWS's keys, ours,
# and the OAuth client secret a Space's sign-in holds (OAUTH_CLIENT_SECRET).
_STUDIO_CREDENTIALS = re.compile(r"^(HF_|HUGGING_?FACE|AWS_|STUDIO_|OAUTH_)", re.IGNORECASE)
IN_FLIGHT = 8  # requests in flight per base URL: enough for a server's continuous batching to fill its batch
TIMEOUT = httpx.Timeout(10.0, read=300.0)  # connecting fails fast; a long answer on a busy server may take minutes
BACKOFF_S = (1.0, 4.0)  # pauses before a request every URL failed is tried again (rate limits, restarts)
RETRY_AFTER_MAX_S = 60.0  # the longest a server's Retry-After (a rate limit's) is waited for, per pause


class ServerError(ValueError):
    """A server that cannot be used, or that failed; the message names the server and what it said."""


class _Failed(Exception):
    """One request to one base URL failed; `retry`: another URL may answer it (not a request the server refused);
    `wait_s`: how long the server asked to be left before the next try (its Retry-After), if it said."""

    def __init__(self, message: str, retry: bool = True, wait_s: float = 0.0):
        super().__init__(message)
        self.retry, self.wait_s = retry, wait_s


@dataclass(frozen=True)
class Connection:
    name: str
    urls: tuple[str, ...]
    key_env: str | None = None
    models: tuple[str, ...] = ()  # as GET /v1/models listed them at the last check

    def headers(self) -> dict:
        if not self.key_env:
            return {}
        if _STUDIO_CREDENTIALS.match(self.key_env):  # a connection stored before the name was refused at add()
            raise ServerError(
                f"The server {self.name!r} takes its key from {self.key_env}, one of the studio's own credentials, "
                "which is never sent to a server: edit the connection to name a variable of its own."
            )
        key = (os.environ.get(self.key_env) or "").strip()
        if not key:
            raise ServerError(
                f"The server {self.name!r} takes its API key from the environment variable {self.key_env}, which is "
                "not set where the studio runs: set it and restart the studio, or edit the connection."
            )
        if not (key.isascii() and key.isprintable()):
            # An HTTP header cannot carry it, and the HTTP library's refusal would quote the whole key.
            raise ServerError(
                f"The API key in {self.key_env} (for the server {self.name!r}) has a character an HTTP header cannot "
                "carry (a line break or a non-ASCII letter inside it): set the variable to the key alone."
            )
        return {"Authorization": f"Bearer {key}"}


def is_served(reference: str | None) -> bool:
    return (reference or "").startswith(PREFIX)


def reference(name: str, model: str) -> str:
    return f"{PREFIX}{name}/{model}"


def split(model_reference: str) -> tuple[str, str]:
    """(connection name, model id) of `server:<connection>/<model id>`; the model id may itself hold slashes."""
    name, _, model = model_reference.removeprefix(PREFIX).partition("/")
    if not name or not model:
        raise ServerError(f"{model_reference!r} names no model: write server:<connection>/<model id>.")
    return name, model


def base_url(url: str) -> str:
    """A base URL as requests are sent to it: http(s) only, no trailing slash, `/v1` added to a bare host."""
    url = (url or "").strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(f"{url!r} is not a server's base URL: write it as http://host:port/v1.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ServerError(
            f"Put no password, query or fragment in the URL {url!r}: name the environment variable with the key."
        )
    return url if parts.path else url + "/v1"


def _said(response: httpx.Response) -> str:
    """What a server said in an error answer: OpenAI's {"error": {"message": ...}} where it follows it."""
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message") or error.get("detail") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message[:500]
    except ValueError:
        pass
    return response.text[:500] or response.reason_phrase


@contextmanager
def _reaching(url: str):
    """httpx's failures to reach `url` (or to read its answer) as _Failed."""
    try:
        yield
    except httpx.TimeoutException:
        raise _Failed(f"{url} did not answer in time") from None
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise _Failed(f"{url} could not be reached ({type(error).__name__}: {error})") from None


def _check_status(url: str, response: httpx.Response) -> None:
    """An error answer as _Failed. The server's own refusal (a model it does not serve, a bad parameter) is the same
    on every URL: only a timeout, a rate limit or a 5xx may pass."""
    if response.status_code >= 400:
        response.read()  # a streamed answer's body, for what it said
        retry = response.status_code >= 500 or response.status_code in (408, 429)
        raise _Failed(f"{url} answered {response.status_code}: {_said(response)}", retry, _retry_after(response))


def _retry_after(response: httpx.Response) -> float:
    """The seconds a server's Retry-After header asks for (RFC 9110: seconds, or an HTTP date), at most
    RETRY_AFTER_MAX_S; 0 where it says nothing readable."""
    said = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(said)
    except ValueError:
        try:
            seconds = (email.utils.parsedate_to_datetime(said) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S) if math.isfinite(seconds) else 0.0


def _send(connection: Connection, url: str, method: str, path: str, body: dict | None = None) -> dict:
    with _reaching(url):
        response = httpx.request(method, url + path, json=body, headers=connection.headers(), timeout=TIMEOUT)
    _check_status(url, response)
    try:
        return response.json()
    except ValueError:
        raise _Failed(f"{url} answered with something that is not JSON: {response.text[:200]!r}") from None


def check(connection: Connection) -> tuple[str, ...]:
    """The model ids every base URL serves (GET /v1/models): requests take turns over the URLs, so a model one of
    them lacks is not offered. ServerError naming each URL that failed and why, or the URLs' lists where they share
    no model."""
    listed, errors = {}, []
    for url in connection.urls:
        try:
            listed[url] = {m["id"] for m in _send(connection, url, "GET", "/models")["data"]}
        except _Failed as failed:
            errors.append(str(failed))
        except (KeyError, TypeError):
            errors.append(f"{url}/models did not list models as an OpenAI-compatible server does")
    if errors:
        raise ServerError(f"The server {connection.name!r} cannot be used: " + "; ".join(errors))
    served = set.intersection(*listed.values())
    if not served and any(listed.values()):
        each = "; ".join(f"{url}: {', '.join(sorted(models)) or 'none'}" for url, models in listed.items())
        raise ServerError(
            f"The base URLs of {connection.name!r} serve no model in common ({each}): a connection's URLs take turns "
            "answering the same requests, so give it URLs that serve the same model (or add one connection each)."
        )
    return tuple(sorted(served))


def add(store: Store, name: str, urls, key_env: str | None = None, by=None) -> Connection:
    """Add (or change) a connection after checking it; only a lead may. `urls`: a list, or text with one base URL
    per line or separated by commas."""
    access.check_lead(by, "add an inference server")
    name = (name or "").strip()
    if not _NAME.match(name):
        raise ServerError("Name the server with letters, digits, '.', '_' or '-' (up to 64), e.g. vllm-8b.")
    if isinstance(urls, str):
        urls = urls.replace(",", "\n").split()
    urls = tuple(dict.fromkeys(base_url(u) for u in urls if u.strip()))
    if not urls:
        raise ServerError("Give the server's base URL, e.g. http://localhost:8000/v1.")
    key_env = (key_env or "").strip() or None
    if key_env and _STUDIO_CREDENTIALS.match(key_env):
        raise ServerError(
            f"{key_env} holds one of the studio's own credentials (the Hub, AWS, the studio's settings): give the "
            "server a variable of its own, e.g. VLLM_API_KEY."
        )
    if key_env and not _KEY_ENV.match(key_env):
        raise ServerError(
            f"{key_env!r} is not the name of an environment variable (e.g. OPENAI_API_KEY): give the variable's "
            "name, never the key itself."
        )
    connection = Connection(name, urls, key_env)
    connection = Connection(name, urls, key_env, check(connection))
    with store.tx() as db:
        db.execute(
            "INSERT INTO servers (name, urls, key_env, models, added_by) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET urls = excluded.urls, key_env = excluded.key_env, "
            "models = excluded.models, added_by = excluded.added_by, "
            "checked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            (name, json.dumps(urls), key_env, json.dumps(connection.models), None if by is None else str(by)),
        )
    return connection


def remove(store: Store, name: str, by=None) -> None:
    access.check_lead(by, "remove an inference server")
    with store.tx() as db:
        if not db.execute("DELETE FROM servers WHERE name = ?", (name,)).rowcount:
            raise ServerError(f"There is no inference server named {name!r}.")


def _connection(row) -> Connection:
    return Connection(row["name"], tuple(json.loads(row["urls"])), row["key_env"], tuple(json.loads(row["models"])))


def connections(store: Store) -> list[Connection]:
    return [_connection(r) for r in store.query("SELECT * FROM servers ORDER BY name")]


def get(store: Store, name: str) -> Connection:
    rows = store.query("SELECT * FROM servers WHERE name = ?", (name,))
    if not rows:
        raise ServerError(f"There is no inference server named {name!r}: add it first (Generate tab, Servers).")
    return _connection(rows[0])


def served_references(store: Store) -> list[str]:
    """Every model of every connection as a model reference, as last checked."""
    return [reference(c.name, m) for c in connections(store) for m in c.models]


class Client:
    """Chat completions from one model of a connection, taking turns over its base URLs; a URL that fails is left
    for the rest of this client's life (a run) and the request goes to the next one."""

    def __init__(self, connection: Connection, model: str):
        self.connection, self.model = connection, model
        self._turn = itertools.count()
        self._down: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return reference(self.connection.name, self.model)

    def in_flight(self) -> int:
        return IN_FLIGHT * len(self.connection.urls)

    def chat_many(self, conversations: list[list[dict]], **options) -> list[dict]:
        """chat() for each conversation, in_flight() of them at a time; the answers in the conversations' order."""
        with ThreadPoolExecutor(max_workers=self.in_flight()) as pool:
            return list(pool.map(lambda messages: self.chat(messages, **options), conversations))

    def chat(self, messages: list[dict], cancel=None, **options) -> dict:
        """The server's answer (OpenAI's chat.completion object) with `served_by`: the base URL that answered. When
        every URL fails for a reason that may pass (a 429 rate limit, a 5xx, a timeout, a cut connection), the
        request is tried again after BACKOFF_S pauses before the run ends with what each URL said; once `cancel` is
        set it is not tried again."""
        request = {"model": self.model, "messages": messages, **options}

        def ask(url: str) -> dict:
            body = _send(self.connection, url, "POST", "/chat/completions", request)
            try:
                choices = body["choices"]
                if not choices:
                    raise _Failed(f"{url} answered with no text in its choices")
                for choice in choices:
                    # OpenAI's content is "string or null": null with a refusal (its text stands as the answer),
                    # or from a reasoning model that spent max_tokens before answering (an empty answer).
                    message = choice["message"]
                    if message.get("content") is None:
                        message["content"] = message.get("refusal") or ""
                    if not isinstance(message["content"], str):
                        raise _Failed(f"{url} answered with no text in its choices")
            except (KeyError, TypeError, IndexError, AttributeError):
                raise _Failed(f"{url} answered JSON that is not a chat completion") from None
            body["served_by"] = url
            return body

        return self._in_turn(ask, cancel)

    def chat_stream(self, messages: list[dict], cancel=None, **options):
        """Yield the answer's text so far as the server writes it (OpenAI's `stream: true`: server-sent events of
        chat.completion.chunk objects, ended by `data: [DONE]`). Until its first piece the request goes over the URLs
        and is retried as chat()'s is; a failure after it raises ServerError (the text yielded stays). Once `cancel`
        is set the connection is closed, which stops the server generating."""
        request = {"model": self.model, "messages": messages, **options, "stream": True}

        def open_stream(url: str):
            http = httpx.Client(headers=self.connection.headers(), timeout=TIMEOUT)
            try:
                with _reaching(url):
                    asked = http.build_request("POST", url + "/chat/completions", json=request)
                    response = http.send(asked, stream=True)
                    _check_status(url, response)
                    if not response.headers.get("content-type", "").startswith("text/event-stream"):
                        return http, iter(()), _whole_answer(url, response)  # a server that does not stream
                    pieces = _stream_pieces(url, response.iter_lines())
                    # A server that fails before its first piece is left for the next URL, as chat() leaves it.
                    return http, pieces, next(pieces, "")
            except _Failed:
                http.close()
                raise

        http, pieces, text = self._in_turn(open_stream, cancel)
        try:
            yield text
            for piece in pieces:
                if cancel is not None and cancel.is_set():
                    return
                text += piece
                yield text
        except (httpx.HTTPError, _Failed) as error:
            raise ServerError(
                f"The server {self.connection.name!r} stopped answering with {self.model}: {error}"
            ) from None
        finally:
            http.close()  # closes the streamed response too

    def _in_turn(self, attempt, cancel=None):
        """attempt(url) on this connection's URLs in turn, from the next one up; what it returns. A URL whose attempt
        fails for a reason that may pass is left (chat()'s pauses, then ServerError naming what each URL said). A
        pause ends early when `cancel` is set, and then the request is not tried again."""
        for pause in (*BACKOFF_S, None):
            urls = self.connection.urls
            with self._lock:
                start = next(self._turn) % len(urls)
                up = [u for u in urls[start:] + urls[:start] if u not in self._down]
            errors = []
            for url in up or urls:
                try:
                    return attempt(url)
                except _Failed as failed:
                    errors.append(str(failed))
                    if not failed.retry:
                        pause = None  # a refusal: the same on every URL, and again
                        break
                    if pause is not None:
                        pause = max(pause, failed.wait_s)  # a rate limit's Retry-After
                    with self._lock:
                        self._down[url] = str(failed)
            if pause is None or (cancel is not None and cancel.wait(pause)):
                break
            if cancel is None:
                time.sleep(pause)
        said = "; ".join(errors)
        raise ServerError(f"The server {self.connection.name!r} could not answer with {self.model}: {said}")


def _whole_answer(url: str, response: httpx.Response) -> str:
    """The text of a chat completion sent whole where a stream was asked for."""
    response.read()
    try:
        message = response.json()["choices"][0]["message"]
        return message["content"] or message.get("refusal") or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Failed(f"{url} answered something that is neither a stream nor a chat completion") from None


def _stream_pieces(url: str, lines):
    """The text pieces of a chat completion stream's lines (`data: {chunk}` ... `data: [DONE]`). A stream that ends
    before `[DONE]` or a finish_reason was cut short: _Failed."""
    finished = False
    for line in lines:
        if not line.startswith("data:"):
            continue  # a comment, an event name or a keep-alive
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
            if chunk.get("error") or chunk.get("object") == "error":  # OpenAI's shape, and vLLM's older one
                raise _Failed(f"{url} sent an error in its stream: {chunk.get('error') or chunk.get('message')}")
            choices = chunk.get("choices") or [{}]
            delta = choices[0].get("delta") or {}
            piece = delta.get("content") or delta.get("refusal") or ""  # a refusal streams as its own field
            finished = finished or bool(choices[0].get("finish_reason"))
        except (ValueError, AttributeError, TypeError):
            raise _Failed(f"{url} streamed something that is not a chat completion chunk: {data[:200]!r}") from None
        if piece:
            yield piece
    if not finished:
        raise _Failed(f"{url} ended its stream before the answer was done")


def client(store: Store, model_reference: str) -> Client:
    name, model = split(model_reference)
    return Client(get(store, name), model)


def sampling(params) -> dict:
    """GenerationParams as OpenAI's request fields."""
    return {"temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_new_tokens}


def answers(served: Client, conversations: list[list[dict]], params, cancel=None):
    """Yield (index, k texts, base URL) for each conversation as its answers come back, many requests in flight.
    Each asks for all k (`n`); a server that returns fewer (Ollama ignores `n`) is asked again for the rest, with
    another seed. Stops within half a second when `cancel` is set, without waiting for the requests in flight. A
    request that fails on every URL ends the run: requests not yet sent are dropped, those in flight are waited for
    and yielded, then ServerError is raised."""

    halt = threading.Event()  # Cancel, or a request that failed: no request is tried again after a failure

    def one(index: int) -> tuple[int, list[str], str]:
        texts, url, asked = [], None, 0
        while len(texts) < params.k:
            if cancel is not None and cancel.is_set():
                return index, [], url
            body = served.chat(
                conversations[index],
                halt,
                n=params.k - len(texts),
                seed=(params.seed + asked * 7919) % 2**32,
                **sampling(params),
            )
            texts += [c["message"]["content"] for c in body["choices"]][: params.k - len(texts)]
            url, asked = body["served_by"], asked + 1
        return index, texts, url

    pool = ThreadPoolExecutor(max_workers=served.in_flight())
    pending = {pool.submit(one, i) for i in range(len(conversations))}
    failure = None
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED, timeout=0.5)
            for future in done:
                if future.cancelled():
                    continue
                try:
                    index, texts, url = future.result()
                except ServerError as error:
                    failure = failure or error
                    halt.set()  # those waiting for a retry give up; those in flight still come back
                    for waiting in pending:
                        waiting.cancel()  # not sent yet: dropped
                    continue
                if texts:
                    yield index, texts, url
            if cancel is not None and cancel.is_set():
                halt.set()
                break
        if failure is not None:
            raise failure
    finally:
        # Requests not sent are dropped. After a cancel those in flight are not waited for (their answers are
        # discarded when they come), so Cancel answers at once even with long answers on a busy server; after a
        # failure they are, so that none is still retrying once the run has ended.
        pool.shutdown(wait=not (cancel is not None and cancel.is_set()), cancel_futures=True)


ONE_TOKEN = {"max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20}  # a judge's verdict token


def first_token_weights(body: dict, key) -> dict:
    """The probability of the answer's first token's top alternatives (the server's `top_logprobs`: vLLM, llama.cpp,
    OpenAI), summed by key(token text); a token whose key is None is left out. Empty where the server returned no
    log-probabilities."""
    try:
        top = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        weights = {}
        for entry in top:
            found = key(entry["token"].strip())
            if found is not None:
                weights[found] = weights.get(found, 0.0) + math.exp(entry["logprob"])
        return weights
    except (KeyError, TypeError, IndexError):
        return {}


def letter_preference(body: dict) -> float:
    """P('A') against P('B') in a judge's answer (asked with ONE_TOKEN), from the server's log-probabilities where
    it returns them, else 1, 0 or 0.5 from the letter it answered."""
    weights = first_token_weights(body, lambda token: token if token in ("A", "B") else None)
    if weights:
        return weights.get("A", 0.0) / sum(weights.values())
    said = body["choices"][0]["message"]["content"].strip()[:1].upper()
    return {"A": 1.0, "B": 0.0}.get(said, 0.5)
