"""Inference servers against a real one we did not write: llama.cpp's llama-server (built from llama-cpp-python's
source distribution, tests/llama_server.py) serving the embedded model as GGUF, behind an API key. Candidates, the
LLM judge and an evaluation go through it; a job's LoRA adapter, converted by llama.cpp's own convert_lora_to_gguf.py,
moves the server's next-token distribution as it moves the in-process model's; a server that fails half way loses
nothing stored and its requests go to the other one."""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from studio.core import access
from studio.data import judges
from studio.data.candidates import generate_candidates
from studio.data.prompts import ParsedPrompts, add_prompt_set, get_prompts
from studio.evaluation import evaluate
from studio.inference import chat, models, servers
from studio.inference.decode import GenerationParams
from studio.shipping import openai_api
from tests import llama_server
from tests.conftest import KEY, KEY_ENV, MODEL, table_counts
from tests.helpers import QUESTIONS

FAST = GenerationParams(k=3, max_new_tokens=12, seed=7)


@pytest.fixture
def connected(store, llama_url, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    servers.add(store, "llama", llama_url, KEY_ENV)
    return servers.reference("llama", MODEL)


def _set(store, name="bank", n=4):
    add_prompt_set(store, name, ParsedPrompts(rows=[(q, "") for q in QUESTIONS[:n]]), "test")
    return get_prompts(store, name)


def test_a_connection_is_checked_and_keeps_only_the_key_s_name(store, llama_url, monkeypatch):
    url = llama_url
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(servers.ServerError, match=f"environment variable {KEY_ENV}, which is not set"):
        servers.add(store, "llama", url, KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "wrong")
    with pytest.raises(servers.ServerError, match=r"answered 401"):
        servers.add(store, "llama", url, KEY_ENV)
    with pytest.raises(servers.ServerError, match="not the name of an environment variable"):
        servers.add(store, "llama", url, KEY)  # the key itself where its variable's name goes
    for ours in ("HF_TOKEN", "OAUTH_CLIENT_SECRET"):  # never sent to a server someone adds
        with pytest.raises(servers.ServerError, match=f"{ours} holds one of the studio's own credentials"):
            servers.add(store, "llama", url, ours)
    stored = servers.Connection("old", (url,), "OAUTH_CLIENT_SECRET")  # as a connection stored before the rule
    with pytest.raises(servers.ServerError, match="one of the studio's own credentials, which is never sent"):
        stored.headers()
    # A key an HTTP header cannot carry is refused by the name of its variable; the key is never quoted.
    for broken in (KEY[:4] + "\n" + KEY[4:], KEY + "é"):
        monkeypatch.setenv(KEY_ENV, broken)
        with pytest.raises(servers.ServerError, match=f"The API key in {KEY_ENV} .* has a character") as raised:
            servers.add(store, "llama", url, KEY_ENV)
        assert KEY[:4] not in str(raised.value)
    for bad in (url + "?api_key=x", "http://127.0.0.1:port/v1", "ftp://host/v1"):
        with pytest.raises(servers.ServerError, match="URL"):
            servers.add(store, "llama", bad, KEY_ENV)
    dead = f"http://127.0.0.1:{llama_server.free_port()}/v1"
    with pytest.raises(servers.ServerError, match=f"{dead} could not be reached"):
        servers.add(store, "nobody", dead)
    assert servers.connections(store) == []
    monkeypatch.setenv(KEY_ENV, KEY + "\n")  # as a file-made secret often ends: the line break is not the key's
    connection = servers.add(store, "llama", url.removesuffix("/v1") + "/", KEY_ENV)  # a bare host gets /v1
    assert connection.urls == (url,) and connection.models == (MODEL,)
    assert servers.served_references(store) == [f"server:llama/{MODEL}"]
    stored = json.dumps([dict(r) for r in store.query("SELECT * FROM servers")])
    assert KEY_ENV in stored and KEY not in stored
    monkeypatch.setenv(access.LEADS_ENV, "anna")
    with pytest.raises(access.TeamError):
        servers.add(store, "other", url, KEY_ENV, by="bob")
    with pytest.raises(access.TeamError):
        servers.remove(store, "llama", by="bob")


def test_candidates_come_from_the_server_with_who_wrote_them(store, connected, llama_url):
    url = llama_url
    prompts = _set(store)
    progress = []
    result = generate_candidates(store, connected, prompts, FAST, on_progress=lambda d, t: progress.append(d))
    assert (result.prompts_done, result.responses_added, result.cancelled) == (4, 12, False)
    rows = store.query("SELECT prompt_id, model, text, params FROM responses")
    assert {r["model"] for r in rows} == {connected}
    assert {json.loads(r["params"])["served_by"] for r in rows} == {url}
    for prompt in prompts:
        texts = [r["text"] for r in rows if r["prompt_id"] == prompt["id"]]
        assert len(texts) == 3 and all(t.strip() for t in texts)
        assert len(set(texts)) > 1  # n=3 children sample with their own seeds
    assert progress[-1] == 4


def test_the_llm_judge_and_an_evaluation_go_through_the_server(store, connected):
    prompts = _set(store, n=2)
    generate_candidates(store, connected, prompts, FAST)
    served = servers.client(store, connected)
    asked = judges.LLM_PROMPT.format(question="Hi?", answer_a="Hello!", answer_b="x")
    p = servers.letter_preference(served.chat([{"role": "user", "content": asked}], **servers.ONE_TOKEN))
    assert 0.0 < p < 1.0  # read from the server's log-probabilities, not from the letter it wrote
    name, ranked = judges.prerank(store, "bank", "llm", model=connected)
    assert (name, ranked) == (f"judge:llm:{connected}", 2)
    assert len(store.query("SELECT id FROM rankings WHERE source = 'judge'")) == 2
    choices = [chat.pick(store, "base:embedded"), chat.pick(store, f"base:{connected}")]
    assert ("served: " + connected, "base:" + connected) in chat.options(store)
    assert not [m for m in openai_api.model_list(store) if "server:" in m["id"]]  # the studio's API serves its own
    evaluation = evaluate.create_evaluation(store, "bank", choices, GenerationParams(max_new_tokens=12), samples=2)
    answers = store.query("SELECT position, text FROM eval_answers WHERE evaluation_id = ?", (evaluation,))
    assert sorted(r["position"] for r in answers) == [0] * 4 + [1] * 4


def test_while_a_job_holds_the_gpu_a_served_model_still_generates_and_judges(store, connected):
    """The hand-over (issue 27) makes the app's own model wait while a training job holds the GPU; a served model
    does not use it, so Generate and the judge go on, and the status line says where they run."""
    from pages import waiting

    prompts = _set(store, n=2)
    models.hand_over("job 7 is training on it")
    try:
        said = {model: waiting(model).replace("\\", "") for model in ("embedded", connected)}  # Markdown escapes off
        assert "Waiting for the GPU: job 7 is training on it" in said["embedded"]
        assert "Working… (on the inference server; job 7 is training on it)" in said[connected]
        done = []

        def work():
            done.append(generate_candidates(store, connected, prompts, FAST).responses_added)
            done.append(judges.prerank(store, "bank", "llm", model=connected)[1])

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(300)
        assert done == [6, 2] and models.gpu_holder() == "job 7 is training on it"
    finally:
        models.take_back()


def test_compare_and_the_chat_endpoint_answer_through_the_server(store, connected):
    served, base = chat.pick(store, f"base:{connected}"), chat.pick(store, "base:embedded")
    params = GenerationParams(max_new_tokens=12, seed=3)
    with pytest.raises(models.ModelError, match="choose the model to compare it with"):
        next(chat.side_by_side(served, "Hi", "", ([], []), params, store=store))
    steps = list(chat.side_by_side(served, "Can I freeze my card?", "", ([], []), params, base=base, store=store))
    left, right, seed = steps[-1]
    assert left.strip() and right.strip() and seed == 3
    assert len(steps) > 2  # both sides streamed
    assert chat.reply(store, f"base:{connected}", "Hi", params=GenerationParams(max_new_tokens=8, seed=1)).strip()
    both = list(chat.side_by_side(served, "Hi", "", ([], []), params, base=served, store=store))
    assert both[-1][0].strip() and both[-1][1].strip()  # two served sides


def test_a_served_answer_streams_as_written_and_stops_when_cancelled(store, connected):
    """OpenAI's stream (server-sent chunks) read as llama-server writes it: growing texts that end in what the same
    request answers whole; Cancel closes the connection after the piece in hand."""
    client = servers.client(store, connected)
    messages = [{"role": "user", "content": "Can I freeze my card?"}]
    greedy = {"max_tokens": 24, "temperature": 0, "seed": 1}
    whole = client.chat(messages, **greedy)["choices"][0]["message"]["content"]
    texts = list(client.chat_stream(messages, **greedy))
    assert len(texts) > 3 and all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    assert texts[-1] == whole
    cancel, seen = threading.Event(), []
    for text in client.chat_stream(messages, cancel=cancel, **greedy):
        seen.append(text)
        cancel.set()
    assert len(seen) == 1 and len(seen[0]) < len(whole)


class _Faulty(BaseHTTPRequestHandler):
    """Forwards to the real server; after `good` answers, answers 500 or drops the connection."""

    target, good, mode, seen, failures = "", 0, "500", 0, None  # failures: how many before it recovers (None: never)
    lock = threading.Lock()
    released = answered_late = None  # mode "slow": answers after `good` wait for `released`, then set answered_late

    def _pass(self, method):
        cls = type(self)
        with cls.lock:
            cls.seen += 1
            broken = cls.seen > cls.good and (cls.failures is None or cls.seen <= cls.good + cls.failures)
        if broken and cls.mode == "slow":
            cls.released.wait(120)
            broken = False
        if broken and cls.mode == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if broken:
            body = json.dumps({"error": {"message": "CUDA out of memory (injected)"}}).encode()
            self.send_response(500)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            upstream = httpx.request(
                method,
                cls.target + self.path.removeprefix("/v1"),
                content=self.rfile.read(length) if length else None,
                headers={k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")},
                timeout=300,
            )
            body = upstream.content
            self.send_response(upstream.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.mode == "slow" and self.released.is_set():
            self.answered_late.set()

    def do_GET(self):
        self._pass("GET")

    def do_POST(self):
        self._pass("POST")

    def log_message(self, *args):
        pass


@pytest.fixture
def faulty(llama_url):
    url = llama_url
    handler = type("Handler", (_Faulty,), {"target": url, "seen": 0, "lock": threading.Lock()})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{proxy.server_address[1]}/v1"
    proxy.shutdown()


@pytest.mark.parametrize("mode", ["500", "drop"])
def test_a_server_failing_half_way_keeps_what_was_stored(store, llama_url, faulty, monkeypatch, mode):
    url = llama_url
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setattr(servers, "IN_FLIGHT", 1)  # one request at a time: the failure lands after the first answers
    monkeypatch.setattr(servers, "BACKOFF_S", (0.2, 0.2))  # the pauses' lengths are not what is tested
    handler, proxy = faulty
    handler.good, handler.mode = 3, mode  # the check (GET /models) and two prompts' answers, then failures
    prompts = _set(store, n=6)
    servers.add(store, "flaky", proxy, KEY_ENV)
    with pytest.raises(servers.ServerError, match=r"'flaky' could not answer") as raised:
        generate_candidates(store, "server:flaky/" + MODEL, prompts, FAST)
    said = str(raised.value)
    assert proxy in said and ("500: CUDA out of memory (injected)" in said if mode == "500" else "reached" in said)
    assert table_counts(store)["responses"] == 2 * FAST.k  # the two prompts answered before the failure stay

    # The same failing server beside a good one: its requests go to the good one, nothing is missing.
    handler.seen, handler.good = 0, 2
    servers.add(store, "pair", [proxy, url], KEY_ENV)
    result = generate_candidates(store, "server:pair/" + MODEL, prompts, FAST)
    assert (result.prompts_done, result.responses_added) == (6, 6 * FAST.k)
    fresh = store.query("SELECT params FROM responses WHERE model = ?", ("server:pair/" + MODEL,))
    assert {json.loads(r["params"])["served_by"] for r in fresh} == {proxy, url}

    # Alone, a server that fails once (a rate limit, a restart) and recovers: the request is tried again after a pause.
    handler.seen, handler.good, handler.failures = 0, 1, 1  # the check passes, the first answer fails, then all pass
    servers.add(store, "blip", proxy, KEY_ENV)
    result = generate_candidates(store, "server:blip/" + MODEL, prompts, FAST)
    assert (result.prompts_done, result.responses_added) == (6, 6 * FAST.k)


def test_cancel_does_not_wait_for_answers_in_flight(store, faulty, monkeypatch):
    """A long answer on a busy server: Cancel ends the run with what was stored, before the requests in flight
    come back (their answers are dropped when they do)."""
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setattr(servers, "IN_FLIGHT", 2)
    handler, proxy = faulty
    handler.good, handler.mode = 2, "slow"  # the check and one prompt's answers, then answers held back
    handler.released, handler.answered_late = threading.Event(), threading.Event()
    servers.add(store, "busy", proxy, KEY_ENV)
    cancel = threading.Event()
    result = generate_candidates(
        store,
        "server:busy/" + MODEL,
        _set(store, n=4),
        FAST,
        cancel=cancel,
        on_progress=lambda d, t: d and cancel.set(),
    )
    handler.released.set()  # only now do the held requests go on to the server
    assert result.cancelled and (result.prompts_done, result.responses_added) == (1, FAST.k)
    assert handler.answered_late.wait(120)  # they were in flight when the run ended: their answers came after
    assert table_counts(store)["responses"] == FAST.k


class _Cut(BaseHTTPRequestHandler):
    """A server whose stream breaks off after two pieces (no [DONE], no finish_reason), or, for model "whole", which
    answers a stream request with one JSON chat completion, as a server that does not stream would."""

    def do_POST(self):
        asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if asked["model"] == "whole":
            body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "All at once."}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in ("Freeze ", "the card"):
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_stream_cut_short_is_an_error_and_a_whole_answer_is_taken():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Cut)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = servers.Connection("cut", (f"http://127.0.0.1:{server.server_address[1]}/v1",))
        seen = []
        with pytest.raises(servers.ServerError, match="ended its stream before the answer was done"):
            for text in servers.Client(connection, "m").chat_stream([{"role": "user", "content": "Hi"}]):
                seen.append(text)
        assert seen == ["Freeze ", "Freeze the card"]  # what was shown stays shown
        assert list(servers.Client(connection, "whole").chat_stream([{"role": "user", "content": "Hi"}])) == [
            "All at once."
        ]
    finally:
        server.shutdown()


class _Scripted(BaseHTTPRequestHandler):
    """An OpenAI-shaped server (the API reference's chat.completion and model list) that answers as told: `models`
    it lists, and for each chat request the next of `answers` (status, headers, message), then `last` for the rest,
    after `delay_s`; a message saying "fail" is answered 500 at once, one saying "busy" 429 with a Retry-After of a
    minute (counted in `busy`)."""

    models, answers, last = ("gpt-4o-mini",), [], (200, {}, {"role": "assistant", "content": "Hello."})
    delay_s, busy = 0.0, 0
    lock = threading.Lock()

    def _send(self, status, headers, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        listed = [{"id": m, "object": "model", "created": 1686935002, "owned_by": "openai"} for m in self.models]
        self._send(200, {}, {"object": "list", "data": listed})

    def do_POST(self):
        asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "fail" in asked["messages"][-1]["content"]:
            return self._send(500, {}, {"error": {"message": "injected", "type": "server_error"}})
        if "busy" in asked["messages"][-1]["content"]:
            type(self).busy += 1
            return self._send(429, {"Retry-After": "60"}, {"error": {"message": "Rate limit reached"}})
        time.sleep(self.delay_s)
        with self.lock:
            status, headers, message = self.answers.pop(0) if self.answers else self.last
        if status != 200:
            return self._send(status, headers, {"error": {"message": "Rate limit reached", "type": "requests"}})
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        self._send(200, headers, {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "choices": [choice]})

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    handler = type("Handler", (_Scripted,), {"answers": [], "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_refusals_rate_limits_mixed_urls_and_a_failure_among_answers_in_flight(store, llama_url, scripted, monkeypatch):
    handler, url = scripted
    user = [{"role": "user", "content": "Hi"}]
    # A refusal (content null, its text in `refusal`, as OpenAI's API reference shows it) is the answer's text; a
    # null content without one (a reasoning model out of tokens) an empty answer, not a failure.
    handler.answers = [
        (200, {}, {"role": "assistant", "content": None, "refusal": "I'm sorry, I cannot help with that."}),
        (200, {}, {"role": "assistant", "content": None}),
    ]
    client = servers.Client(servers.Connection("openai", (url,)), "gpt-4o-mini")
    assert client.chat(user)["choices"][0]["message"]["content"] == "I'm sorry, I cannot help with that."
    assert client.chat(user)["choices"][0]["message"]["content"] == ""
    # A rate limit's Retry-After is waited for (here 2 s, beyond the first 1 s pause), then the request goes through.
    monkeypatch.setattr(servers, "BACKOFF_S", (0.01,))
    handler.answers = [(429, {"Retry-After": "2"}, None)]
    started = time.monotonic()
    assert client.chat(user)["choices"][0]["message"]["content"] == "Hello."
    assert time.monotonic() - started >= 1.9
    # Base URLs that serve different models share none: refused at once, each URL's list named.
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(servers.ServerError, match=f"serve no model in common .*{url}: gpt-4o-mini"):
        servers.add(store, "mixed", [llama_url, url], KEY_ENV)
    # One request fails on every URL while others are in flight: those come back and are kept, then the error.
    prompts = _set(store, n=4)
    with store.tx() as db:
        db.execute("UPDATE prompts SET text = 'please fail' WHERE id = ?", (prompts[0]["id"],))
    handler.delay_s = 0.5  # the good answers come back after the failure
    servers.add(store, "one", url)
    with pytest.raises(servers.ServerError, match="500: injected"):
        generate_candidates(store, "server:one/gpt-4o-mini", get_prompts(store, "bank"), FAST)
    assert table_counts(store)["responses"] == 3 * FAST.k
    # A request waiting out a minute's Retry-After gives up once another has failed: the run ends, not a minute on.
    with store.tx() as db:
        db.execute("UPDATE prompts SET text = 'busy now' WHERE id = ?", (prompts[1]["id"],))
    handler.delay_s = 0.0
    with pytest.raises(servers.ServerError, match="500: injected"):
        generate_candidates(store, "server:one/gpt-4o-mini", get_prompts(store, "bank")[:2], FAST)
    assert handler.busy == 1


def _next_token(logits, tokenizer) -> dict[str, float]:
    import torch

    top = torch.topk(torch.softmax(logits.float(), dim=-1), 50)
    return {tokenizer.decode([int(i)]): float(p) for p, i in zip(top.values, top.indices)}


def _distance(server: dict[str, float], model: dict[str, float]) -> float:
    """Total variation over the server's top tokens."""
    return sum(abs(p - model.get(token, 0.0)) for token, p in server.items())


def test_a_lora_adapter_converted_by_llama_cpp_moves_the_server_as_the_model(llama_binary, embedded_gguf, tmp_path):
    import math

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    # An adapter on every linear layer (the key projection's rotary permutation included) with random, non-zero B.
    adapter = tmp_path / "adapter"
    get_peft_model(
        AutoModelForCausalLM.from_pretrained(models.embedded_folder()),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False),
    ).save_pretrained(adapter)
    tree = llama_binary.parents[2]  # llama.cpp's source tree: its converter and its own gguf-py
    lora_gguf = tmp_path / "adapter.gguf"
    done = subprocess.run(
        [sys.executable, str(tree / "convert_lora_to_gguf.py"), str(adapter), "--base", str(models.embedded_folder()),
         "--outfile", str(lora_gguf), "--outtype", "f32"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(tree / "gguf-py")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = models.load(models.EMBEDDED)
    (name,) = models.with_adapters(loaded, [str(adapter)])
    prompts = ["What is my IBAN?", "How do I freeze my card?", "Tell me about savings accounts."]
    with llama_server.serve(llama_binary, embedded_gguf, "--alias", MODEL, "--lora", str(lora_gguf), slots=1) as base:
        served = servers.Client(servers.Connection("lora", (base,)), MODEL)
        for question in prompts:
            messages = [{"role": "user", "content": question}]
            text = loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = loaded.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(loaded.model.device)
            with torch.inference_mode():
                tuned = _next_token(loaded.model(**ids, adapter_names=[name]).logits[0, -1], loaded.tokenizer)
                plain = _next_token(loaded.model(**ids, adapter_names=[models.BASE]).logits[0, -1], loaded.tokenizer)
            body = served.chat(messages, max_tokens=1, temperature=0, logprobs=True, top_logprobs=10)
            top = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            server = {t["token"]: math.exp(t["logprob"]) for t in top}
            assert max(server, key=server.get) == max(tuned, key=tuned.get), (question, server, tuned)
            near, moved = _distance(server, tuned), _distance(server, plain)
            assert near < 0.05 and moved > 4 * near, (question, near, moved)  # the adapter's move, not the base's


def test_a_served_llm_judge_rewards_grpo_against_the_guidelines(store, connected):
    from pathlib import Path

    from studio.core import jobs
    from studio.data.ranking import save_guidelines
    from studio.training import launch
    from studio.training.train import run

    _set(store)
    save_guidelines(store, "bank", "Answer briefly and politely; never ask for a PIN.", "lead")
    settings = {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 12}
    job_id = launch.launch(store, "grpo", {**settings, "save_steps": 100}, prompt_set="bank", judge=connected)
    folder = Path(jobs.get(store, job_id)["folder"])
    recipe_text = (folder / "recipe.yaml").read_text()
    assert KEY_ENV in recipe_text and KEY not in recipe_text  # the key's variable travels, never the key
    assert "never ask for a PIN" in (folder / "guidelines.md").read_text()
    assert run(folder / "recipe.yaml")["status"] == "finished"
    (row,) = [m for m in jobs.metrics(jobs.get(store, job_id)) if "reward" in m]
    assert 0.1 <= row["rewards/llm_judge/mean"] <= 1.0  # a 1-10 score from the server, as 0.1-1
    assert f"llm_judge ({connected}) x1" in jobs.method_label(jobs.get(store, job_id))
