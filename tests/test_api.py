"""The app's APIs against the running app: the named Gradio endpoints (gradio_client) and the OpenAI-compatible
endpoint (/v1, with OpenAI's own Python client)."""

import hashlib

import openai
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from studio.core.store import Store
from studio.shipping import openai_api
from studio.shipping.openai_api import ApiKeyError, conversation, create_key, params_from
from tests.browser.conftest import run_app
from tests.helpers import random_lora


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One running app for the module, and an adapter folder as any PEFT user has one (random non-zero LoRA)."""
    tmp_path = tmp_path_factory.mktemp("api")
    adapter = random_lora(tmp_path / "my-adapter")
    server = run_app(tmp_path)
    app = next(server)
    # A finished DPO job whose adapter is that one, as the jobs table records it: the endpoint serves it as job:1.
    random_lora(tmp_path / "job" / "adapter")
    with Store(app["home"] / "studio.db").tx() as db:
        db.execute(
            "INSERT INTO jobs (method, status, folder, base_model, data) VALUES ('dpo', 'finished', ?, "
            "'embedded', 'test')",
            (str(tmp_path / "job"),),
        )
    yield {**app, "adapter": adapter}
    next(server, None)


def test_gradio_client_lists_models_and_chats_with_an_adapter(app):
    client = Client(app["url"], verbose=False)
    assert ["base: embedded", "base:embedded"] in client.predict(api_name="/models")
    answer = client.predict(
        "How do I reset my PIN?", "base:embedded", "You are Nova.", [], 12, 0.7, 0.9, 3, api_name="/chat"
    )
    assert isinstance(answer, str) and answer.strip()
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": answer}]
    answer = client.predict("And my password?", str(app["adapter"]), "", history, 12, 0.7, 0.9, 3, api_name="/chat")
    assert isinstance(answer, str) and answer.strip()
    with pytest.raises(AppError, match="There is no job"):
        client.predict("Hi", "job:42", "", [], 12, 0.7, 0.9, 3, api_name="/chat")


def test_the_openai_client_lists_models_and_chats_with_the_base_and_an_adapter(app):
    client = openai.OpenAI(base_url=app["url"] + "v1", api_key="unused-without-a-login")
    assert "base:embedded" in [m.id for m in client.models.list()]
    ask = {
        "model": "base:embedded",
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "system", "content": "You are Nova."}, {"role": "user", "content": "Hi!"}],
    }
    reply = client.chat.completions.create(**ask)
    text = reply.choices[0].message.content
    assert text.strip() and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5 and 0 < reply.usage.completion_tokens <= 8
    assert client.chat.completions.create(**ask).choices[0].message.content == text  # temperature 0: greedy

    assert "job:1" in [m.id for m in client.models.list()]
    ask = {
        "model": "job:1",
        "max_tokens": 8,
        "seed": 3,
        "messages": [{"role": "user", "content": "How do I pay a bill?"}],
    }
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 4 and streamed.strip() and chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and 0 < chunks[-1].usage.completion_tokens <= 8  # include_usage's last chunk
    # The same seed: the stream adds up to the answer.
    assert client.chat.completions.create(**ask).choices[0].message.content == streamed

    # Only what GET /v1/models lists is served: an adapter folder, or any name, is not loaded on a client's word.
    for name in ("job:42", str(app["adapter"]), "nope", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        with pytest.raises(openai.NotFoundError, match="does not exist here"):
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match="last message must be the user's"):
        client.chat.completions.create(model="base:embedded", messages=[{"role": "assistant", "content": "Hi"}])


def test_behind_a_login_the_openai_endpoint_asks_for_a_leads_key(store):
    """The routes as app.py adds them with a login (`require_key`), called by OpenAI's client in-process."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    server = FastAPI()
    server.include_router(openai_api.router(store, require_key=True))
    local = TestClient(server)
    with pytest.raises(openai.AuthenticationError, match="needs an API key"):
        openai.OpenAI(base_url="http://testserver/v1", api_key="sk-guess", http_client=local).models.list()
    key = create_key(store, "support-bot", "anna")
    listed = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=local).models.list()
    assert "base:embedded" in [m.id for m in listed]
    assert store.query("SELECT last_used_at FROM api_keys")[0]["last_used_at"]
    openai_api.revoke_key(store, "support-bot")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=local).models.list()


def test_requests_the_endpoint_cannot_honour_are_refused_in_openais_error_shape(store):
    """OpenAI's own client, in-process: each refusal is the APIError its documentation names, with the field."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    server = FastAPI()
    server.include_router(openai_api.router(store, require_key=False))
    local = TestClient(server)
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=local)
    hi = [{"role": "user", "content": "Hi"}]
    tool = {"type": "function", "function": {"name": "balance", "parameters": {"type": "object", "properties": {}}}}
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    image = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    for extra, param, said in (
        ({"tools": [tool]}, "tools", "does not support tool calls"),
        ({"response_format": {"type": "json_object"}}, "response_format", "does not support JSON output"),
        ({"response_format": schema}, "response_format", "does not support JSON output"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs", "does not support log-probabilities"),
        ({"stop": ["\n"]}, "stop", "does not support stop sequences"),
        ({"messages": [{"role": "user", "content": image}]}, "messages[0].content[1]", "only text parts"),
        ({"extra_body": {"best_of": 3}}, "best_of", "Unrecognized request argument supplied: best_of"),
        ({"temperature": "hot"}, "temperature", "temperature: expected a number"),
    ):
        with pytest.raises(openai.BadRequestError, match=said) as refused:
            client.chat.completions.create(**{"model": "base:embedded", "messages": hi, **extra})
        assert refused.value.param == param and refused.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError, match="'nope' does not exist here") as missing:
        client.chat.completions.create(model="nope", messages=hi)
    assert missing.value.code == "model_not_found"
    # A malformed body: OpenAI's error shape, not FastAPI's 422 list.
    for raw in (b"{not json", b"[1, 2]", b'{"model": "base:embedded", "messages": ["Hi"]}'):
        answer = local.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and set(answer.json()["error"]) == {"message", "type", "param", "code"}
    # Their "off" values are what every client may send, and pass the check.
    assert openai_api.check_request(
        {
            "model": "m",
            "messages": hi,
            "tools": [],
            "logprobs": False,
            "stop": None,
            "response_format": {"type": "text"},
            "presence_penalty": 0.0,
            "user": "u",
        }
    )


def test_the_endpoint_asks_for_a_key_beyond_the_loopback_address():
    for host, login, needed in (
        ("127.0.0.1", False, False),
        (None, False, False),
        ("localhost", False, False),
        ("::1", False, False),
        ("0.0.0.0", False, True),
        ("::", False, True),
        ("192.168.1.20", False, True),
        ("my-box.example", False, True),
        ("127.0.0.1", True, True),
    ):
        assert openai_api.needs_key(host, login) is needed, host


def test_messages_and_sampling_fields_map_to_the_studio_and_keys_are_kept_hashed(store):
    assert conversation(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "My PIN?"}]},
        ]
    ) == {
        "text": "My PIN?",
        "system": "Be brief.",
        "context": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    }
    with pytest.raises(ValueError, match="last message must be the user's"):
        conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])
    with pytest.raises(ValueError, match="role 'tool'"):
        conversation([{"role": "tool", "content": "{}"}, {"role": "user", "content": "Hi"}])
    params = params_from({"temperature": 0, "max_tokens": 9, "seed": 5})
    assert (params.k, params.max_new_tokens, params.seed, params.temperature) == (
        1,
        9,
        5,
        openai_api.GREEDY_TEMPERATURE,
    )
    assert params_from({"max_completion_tokens": 7, "max_tokens": 9}).max_new_tokens == 7
    for body, message in (({"temperature": 3}, "temperature must be from 0 to 2"), ({"n": 2}, "n must be 1")):
        with pytest.raises(ValueError, match=message):
            params_from(body)

    key = create_key(store, "support-bot", "anna")
    assert key.startswith("sk-studio-") and openai_api.check_key(store, key)
    assert not openai_api.check_key(store, key + "x") and not openai_api.check_key(store, None)
    row = store.query("SELECT * FROM api_keys")[0]
    assert row["digest"] == hashlib.sha256(key.encode()).hexdigest() and key not in str(dict(row))
    with pytest.raises(ApiKeyError, match="already a key named 'support-bot'"):
        create_key(store, "support-bot")
    openai_api.revoke_key(store, "support-bot")
    assert not openai_api.check_key(store, key)
