"""The named API endpoints, called with gradio_client against the running app."""

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.browser.conftest import run_app


def test_gradio_client_lists_models_and_chats_with_an_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.models import embedded_folder

    # An adapter folder as any PEFT user has one (random non-zero LoRA weights).
    adapter = tmp_path / "my-adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(embedded_folder()),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(adapter)

    server = run_app(tmp_path)
    app = next(server)
    try:
        client = Client(app["url"], verbose=False)
        assert ["base: embedded", "base:embedded"] in client.predict(api_name="/models")
        answer = client.predict("How do I reset my PIN?", "base:embedded", "You are Nova.", [], 12, 0.7, 0.9, 3,
                                api_name="/chat")
        assert isinstance(answer, str) and answer.strip()
        history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": answer}]
        answer = client.predict("And my password?", str(adapter), "", history, 12, 0.7, 0.9, 3, api_name="/chat")
        assert isinstance(answer, str) and answer.strip()
        with pytest.raises(AppError, match="There is no job"):
            client.predict("Hi", "job:42", "", [], 12, 0.7, 0.9, 3, api_name="/chat")
    finally:
        next(server, None)
