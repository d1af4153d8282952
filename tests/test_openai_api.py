"""The OpenAI-compatible endpoint (/v1), called with OpenAI's own Python client against the running app."""

import hashlib

import openai
import pytest

from studio import openai_api
from studio.openai_api import ApiKeyError, conversation, create_key, params_from
from studio.store import Store
from tests.browser.conftest import run_app
from tests.helpers import random_lora


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


def test_the_openai_client_lists_models_and_chats_with_the_base_and_an_adapter(tmp_path):
    adapter = random_lora(tmp_path / "my-adapter")
    server = run_app(tmp_path)
    app = next(server)
    try:
        client = openai.OpenAI(base_url=app["url"] + "v1", api_key="unused-without-a-login")
        assert "base:embedded" in [m.id for m in client.models.list()]
        reply = client.chat.completions.create(
            model="base:embedded", max_tokens=8, temperature=0,
            messages=[{"role": "system", "content": "You are Nova."}, {"role": "user", "content": "Hi!"}])
        text = reply.choices[0].message.content
        assert text.strip() and reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage.prompt_tokens > 5 and 0 < reply.usage.completion_tokens <= 8
        again = client.chat.completions.create(model="base:embedded", max_tokens=8, temperature=0,
                                               messages=[{"role": "system", "content": "You are Nova."},
                                                         {"role": "user", "content": "Hi!"}])
        assert again.choices[0].message.content == text  # temperature 0: the likeliest tokens, every time

        chunks = list(client.chat.completions.create(model=str(adapter), max_tokens=8, stream=True, seed=3,
                                                     messages=[{"role": "user", "content": "How do I pay a bill?"}]))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert len(chunks) >= 3 and streamed.strip() and chunks[-1].choices[0].finish_reason in ("stop", "length")
        whole = client.chat.completions.create(model=str(adapter), max_tokens=8, seed=3,
                                               messages=[{"role": "user", "content": "How do I pay a bill?"}])
        assert whole.choices[0].message.content == streamed  # same seed: the stream adds up to the answer

        with pytest.raises(openai.NotFoundError, match="There is no job"):
            client.chat.completions.create(model="job:42", messages=[{"role": "user", "content": "Hi"}])
        with pytest.raises(openai.BadRequestError, match="last message must be the user's"):
            client.chat.completions.create(model="base:embedded", messages=[{"role": "assistant", "content": "Hi"}])
    finally:
        next(server, None)


def test_behind_a_login_the_endpoint_asks_for_a_leads_key(tmp_path):
    server = run_app(tmp_path, "--auth", "anna:secret1")
    app = next(server)
    try:
        with pytest.raises(openai.AuthenticationError, match="needs an API key"):
            openai.OpenAI(base_url=app["url"] + "v1", api_key="sk-guess").models.list()
        key = create_key(Store(app["home"] / "studio.db"), "support-bot", "anna")
        assert "base:embedded" in [m.id for m in openai.OpenAI(base_url=app["url"] + "v1", api_key=key).models.list()]
    finally:
        next(server, None)
