"""The app's APIs against the running app: the named Gradio endpoints (gradio_client) and the OpenAI-compatible
endpoint (/v1, with OpenAI's own Python client)."""

import hashlib

import openai
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from studio import openai_api
from studio.openai_api import ApiKeyError, conversation, create_key, params_from
from tests.browser.conftest import run_app
from tests.helpers import random_lora


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One running app for the module, and an adapter folder as any PEFT user has one (random non-zero LoRA)."""
    tmp_path = tmp_path_factory.mktemp("api")
    adapter = random_lora(tmp_path / "my-adapter")
    server = run_app(tmp_path)
    yield {**next(server), "adapter": adapter}
    next(server, None)


def test_gradio_client_lists_models_and_chats_with_an_adapter(app):
    client = Client(app["url"], verbose=False)
    assert ["base: embedded", "base:embedded"] in client.predict(api_name="/models")
    answer = client.predict("How do I reset my PIN?", "base:embedded", "You are Nova.", [], 12, 0.7, 0.9, 3,
                            api_name="/chat")
    assert isinstance(answer, str) and answer.strip()
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": answer}]
    answer = client.predict("And my password?", str(app["adapter"]), "", history, 12, 0.7, 0.9, 3, api_name="/chat")
    assert isinstance(answer, str) and answer.strip()
    with pytest.raises(AppError, match="There is no job"):
        client.predict("Hi", "job:42", "", [], 12, 0.7, 0.9, 3, api_name="/chat")


def test_the_openai_client_lists_models_and_chats_with_the_base_and_an_adapter(app):
    client = openai.OpenAI(base_url=app["url"] + "v1", api_key="unused-without-a-login")
    assert "base:embedded" in [m.id for m in client.models.list()]
    ask = {"model": "base:embedded", "max_tokens": 8, "temperature": 0,
           "messages": [{"role": "system", "content": "You are Nova."}, {"role": "user", "content": "Hi!"}]}
    reply = client.chat.completions.create(**ask)
    text = reply.choices[0].message.content
    assert text.strip() and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5 and 0 < reply.usage.completion_tokens <= 8
    assert client.chat.completions.create(**ask).choices[0].message.content == text  # temperature 0: greedy

    ask = {"model": str(app["adapter"]), "max_tokens": 8, "seed": 3,
           "messages": [{"role": "user", "content": "How do I pay a bill?"}]}
    chunks = list(client.chat.completions.create(**ask, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert len(chunks) >= 3 and streamed.strip() and chunks[-1].choices[0].finish_reason in ("stop", "length")
    # The same seed: the stream adds up to the answer.
    assert client.chat.completions.create(**ask).choices[0].message.content == streamed

    with pytest.raises(openai.NotFoundError, match="There is no job"):
        client.chat.completions.create(model="job:42", messages=[{"role": "user", "content": "Hi"}])
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


def test_messages_and_sampling_fields_map_to_the_studio_and_keys_are_kept_hashed(store):
    assert conversation([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello!"},
                         {"role": "user", "content": [{"type": "text", "text": "My PIN?"}]}]) == {
        "text": "My PIN?", "system": "Be brief.",
        "context": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    with pytest.raises(ValueError, match="last message must be the user's"):
        conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])
    with pytest.raises(ValueError, match="role 'tool'"):
        conversation([{"role": "tool", "content": "{}"}, {"role": "user", "content": "Hi"}])
    params = params_from({"temperature": 0, "max_tokens": 9, "seed": 5})
    assert (params.k, params.max_new_tokens, params.seed, params.temperature) == (1, 9, 5, openai_api.GREEDY_TEMPERATURE)
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
