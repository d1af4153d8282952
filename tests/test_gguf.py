"""GGUF export, checked against llama.cpp's own output and read back by transformers' GGUF loader.

The embedded model ships as a GGUF file that llama.cpp's convert_hf_to_gguf.py wrote (Q4_1); the studio turns it
into a float32 folder. Exporting that folder again must give llama.cpp's tensors (names, shapes, values within f16
rounding: the query/key permutation undone and redone), its vocabulary, merges, special tokens and chat template.
"""

import json

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from studio import gguf_export, models
from studio.gguf_export import ExportError


def test_the_export_matches_llama_cpp_and_loads_in_transformers(tmp_path):
    folder = models.embedded_folder()
    out = gguf_export.write_gguf(folder, tmp_path / "bank-f16.gguf", "f16", name="bank",
                                 hub_id=models.EMBEDDED_HUB_ID)
    ours, theirs = gguf.GGUFReader(str(out)), gguf.GGUFReader(str(models._embedded_gguf()))

    mine = {t.name: t for t in ours.tensors}
    assert set(mine) == {t.name for t in theirs.tensors}  # 272: no output.weight (tied head), as llama.cpp wrote it
    for reference in theirs.tensors:
        tensor = mine[reference.name]
        expected = gguf.quants.dequantize(reference.data, reference.tensor_type)
        got = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        assert got.shape == expected.shape, reference.name
        # f16 of the Q4_1 values: within f16's rounding (a wrong q/k permutation would be off by the weights' size)
        assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max(), reference.name
        assert tensor.tensor_type == (gguf.GGMLQuantizationType.F32 if expected.ndim == 1
                                      else gguf.GGMLQuantizationType.F16), reference.name

    # Every setting llama.cpp reads, as llama.cpp's converter wrote it (general.* names and licences aside).
    for key, field in theirs.fields.items():
        if key.startswith("general.") or key in ("GGUF.kv_count", "tokenizer.ggml.add_space_prefix"):
            continue
        assert ours.fields[key].contents() == field.contents(), key
    assert ours.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_F16
    assert ours.fields["general.name"].contents() == "bank"

    # transformers' own GGUF loader reads it back with the same next-token distribution (the tokens are llama.cpp's,
    # compared above).
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "How do I freeze my card?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected, got = base(ids).logits[0, -1].log_softmax(-1), loaded(ids).logits[0, -1].log_softmax(-1)
    assert got.argmax() == expected.argmax()
    assert torch.nn.functional.kl_div(got, expected, log_target=True, reduction="sum") < 1e-3

    modelfile = gguf_export.modelfile(folder, out.name, system="You are Lumen Bank's assistant.")
    assert "FROM ./bank-f16.gguf" in modelfile
    assert '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "SYSTEM \"\"\"You are Lumen Bank's assistant.\"\"\"" in modelfile


def test_what_the_export_cannot_write_is_said(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ExportError, match="Llama-architecture models; this one is 'gpt2': run llama.cpp's "
                                          "convert_hf_to_gguf.py"):
        gguf_export.write_gguf(tmp_path, tmp_path / "x.gguf")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama",
                                                      "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}))
    with pytest.raises(ExportError, match=r"rope scaling \(llama3\) needs llama.cpp's own converter"):
        gguf_export.write_gguf(tmp_path, tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="choose one of q8_0, f16"):
        gguf_export.write_gguf(tmp_path, tmp_path / "x.gguf", "q4_k")
