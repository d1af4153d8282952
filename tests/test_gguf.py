"""GGUF export, checked against llama.cpp itself (tests/test_publish.py reads a trained job's GGUF back with
transformers' GGUF loader and compares its logits with the merged model's).

The embedded model ships as a GGUF file that llama.cpp's convert_hf_to_gguf.py wrote (Q4_1); the studio turns it
into a float32 folder. Exporting that folder again must give llama.cpp's tensors (names, shapes, values within f16
rounding: the query/key permutation undone and redone), its vocabulary, merges, special tokens and chat template.
And the export must be what llama.cpp's converter writes today, byte for byte: the converter ships in the source
distribution of llama-cpp-python (PyPI), which the second test downloads and runs.
"""

import json
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest

from studio.inference import models
from studio.shipping import gguf_export
from studio.shipping.gguf_export import ExportError
from tests import llama_server


def test_the_export_matches_the_gguf_llama_cpp_wrote_for_the_embedded_model(tmp_path):
    folder = models.embedded_folder()
    out = gguf_export.write_gguf(folder, tmp_path / "bank-f16.gguf", "f16", name="bank", hub_id=models.EMBEDDED_HUB_ID)
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
        assert tensor.tensor_type == (
            gguf.GGMLQuantizationType.F32 if expected.ndim == 1 else gguf.GGMLQuantizationType.F16
        ), reference.name

    # Every setting llama.cpp reads, as llama.cpp's converter wrote it (general.* names and licences aside).
    for key, field in theirs.fields.items():
        if key.startswith("general.") or key in ("GGUF.kv_count", "tokenizer.ggml.add_space_prefix"):
            continue
        assert ours.fields[key].contents() == field.contents(), key
    assert ours.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_F16
    assert ours.fields["general.name"].contents() == "bank"

    modelfile = gguf_export.modelfile(folder, out.name, system="You are Lumen Bank's assistant.")
    assert "FROM ./bank-f16.gguf" in modelfile
    assert '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """You are Lumen Bank\'s assistant."""' in modelfile


def test_the_export_is_byte_for_byte_what_llama_cpp_s_own_converter_writes(tmp_path):
    # llama.cpp's convert_hf_to_gguf.py, its `conversion` package and its own gguf-py, from the source vendored in
    # llama-cpp-python's sdist on PyPI (checked against PyPI's sha256); None when the registry is out of reach.
    llama_cpp = llama_server.source()
    if llama_cpp is None:
        if os.environ.get("STUDIO_REQUIRE_REGISTRY"):
            pytest.fail("PyPI is out of reach: llama.cpp's converter cannot be fetched")
        pytest.skip("PyPI is out of reach")
    folder = models.embedded_folder()
    theirs_path = tmp_path / "theirs.gguf"
    done = subprocess.run(
        [
            sys.executable,
            str(llama_cpp / "convert_hf_to_gguf.py"),
            str(folder),
            "--outfile",
            str(theirs_path),
            "--outtype",
            "q8_0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(llama_cpp / "gguf-py")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ours = gguf.GGUFReader(
        str(gguf_export.write_gguf(folder, tmp_path / "ours.gguf", "q8_0", hub_id=models.EMBEDDED_HUB_ID))
    )
    theirs = gguf.GGUFReader(str(theirs_path))
    mine = {t.name: t for t in ours.tensors}
    assert set(mine) == {t.name for t in theirs.tensors}
    for tensor in theirs.tensors:  # same type, same bytes: Q8_0 blocks of the (permuted) weights, f32 norms
        assert mine[tensor.name].tensor_type == tensor.tensor_type, tensor.name
        assert mine[tensor.name].data.tobytes() == tensor.data.tobytes(), tensor.name
    for key, field in theirs.fields.items():  # every setting, the pre-tokeniser's name included; general.* aside
        if not key.startswith(("general.", "GGUF.")):
            assert ours.fields[key].contents() == field.contents(), key


def test_what_the_export_cannot_write_is_said(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(
        ExportError, match="Llama-architecture models; this one is 'gpt2': run llama.cpp's convert_hf_to_gguf.py"
    ):
        gguf_export.write_gguf(tmp_path, tmp_path / "x.gguf")
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    )
    with pytest.raises(ExportError, match=r"rope scaling \(llama3\) needs llama.cpp's own converter"):
        gguf_export.write_gguf(tmp_path, tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="choose one of q8_0, f16"):
        gguf_export.write_gguf(tmp_path, tmp_path / "x.gguf", "q4_k")
