"""A merged model folder as one GGUF file for llama.cpp and Ollama, with an Ollama Modelfile beside it.

Written with llama.cpp's own `gguf` package (GGUFWriter, its tensor-name map, SpecialVocab for merges, special tokens
and the chat template, its Q8_0 quantiser), following what llama.cpp's convert_hf_to_gguf.py does for a Llama model:
the query and key projections are permuted back to the rotary layout llama.cpp expects, norms stay float32, a tied
LM head is left out (llama.cpp then uses the token embeddings). Llama-architecture models only (the embedded SmolLM2,
Llama, and models saved as LlamaForCausalLM); for any other, llama.cpp's convert_hf_to_gguf.py on the merged folder
is the way, and the error says so.
"""

import json
from pathlib import Path

import numpy as np

KINDS = ("q8_0", "f16")  # what a user picks: q8_0 (about half the size of f16, near-lossless) or f16
# llama.cpp chooses its pre-tokeniser (how text is split before BPE) by this name. convert_hf_to_gguf.py finds it by
# hashing the tokeniser's output on a test text; we know it for the families we ship recipes for, and write
# "default" otherwise (llama.cpp then warns that generation quality may suffer).
PRE_TOKENIZERS = (("smollm", "smollm"), ("llama-3", "llama-bpe"), ("qwen2", "qwen2"))

CHATML = (
    'TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ range .Messages }}'
    '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n'
    '{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>\n{{ end }}{{ end }}"""\n'
    'PARAMETER stop "<|im_end|>"\n'
)
LLAMA3 = (
    'TEMPLATE """<|begin_of_text|>{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}'
    '<|eot_id|>{{ end }}{{ range .Messages }}{{ if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>'
    "\n\n{{ .Content }}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{{ else if eq .Role "
    '"assistant" }}{{ .Content }}<|eot_id|>{{ end }}{{ end }}"""\nPARAMETER stop "<|eot_id|>"\n'
)


class ExportError(ValueError):
    """What stops an export, said so that the user knows what to do."""


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotary layout (halves) to llama.cpp's (interleaved pairs), per head: convert_hf_to_gguf's
    LlamaModel.permute. transformers' GGUF loader undoes exactly this when it reads the file back."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensors(folder: Path):
    """(how many tensors, an iterator of (name, float32 numpy array)) over the saved model's safetensors files, one
    tensor at a time (no full model in memory)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{folder} has no .safetensors files: merge the job first.")
    names = {}
    for file in files:  # the headers only
        with safe_open(str(file), framework="pt") as handle:
            names[file] = list(handle.keys())

    def read():
        for file, keys in names.items():
            with safe_open(str(file), framework="pt") as handle:
                for name in keys:
                    yield name, handle.get_tensor(name).float().numpy()

    return sum(len(keys) for keys in names.values()), read()


def _vocabulary(folder: Path, size: int):
    """Token texts and types as convert_hf_to_gguf.py's get_vocab_base writes them for a GPT-2-style BPE tokeniser
    (added special tokens CONTROL, other added tokens USER_DEFINED, ids without a token padding), and whether the
    tokeniser adds BOS and EOS to a text."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not (folder / "tokenizer.json").is_file() or not tokenizer.is_fast:
        raise ExportError("GGUF export needs the model's fast tokenizer (tokenizer.json) in the merged folder.")
    model = json.loads((folder / "tokenizer.json").read_text())["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ExportError(
            "GGUF export here writes byte-level BPE tokenizers (GPT-2 style, as SmolLM2 and Llama 3 "
            "use); this model's is not: use llama.cpp's convert_hf_to_gguf.py on the merged folder."
        )
    by_id = {i: text for text, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    ids = tokenizer("a").input_ids
    return (
        tokens,
        types,
        tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id,
        tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id,
    )


def write_gguf(folder, out, kind: str = "q8_0", name: str = "", hub_id: str = "", progress=None) -> Path:
    """Write the merged model in `folder` as one GGUF file `out` (`kind` q8_0 or f16). `hub_id` (the base's Hub id)
    picks llama.cpp's pre-tokeniser; `progress(done, total)` is called per tensor."""
    import gguf

    folder, out = Path(folder), Path(out)
    if kind not in KINDS:
        raise ExportError(f"GGUF kind {kind!r}: choose one of {', '.join(KINDS)}.")
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise ExportError(
            f"GGUF export here writes Llama-architecture models; this one is {config.get('model_type')!r}"
            f": run llama.cpp's convert_hf_to_gguf.py on {folder}."
        )
    # transformers 5 keeps rope_theta and the scaling in rope_parameters; older configs, at the top and rope_scaling.
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "linear"):
        raise ExportError(
            f"This model's rope scaling ({rope_type}) needs llama.cpp's own converter: run "
            f"convert_hf_to_gguf.py on {folder}."
        )
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    layers, vocab_size = config["num_hidden_layers"], config["vocab_size"]
    qtype, file_type = {
        "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
        "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    }[kind]

    tokens, types, add_bos, add_eos = _vocabulary(folder, vocab_size)
    partial = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), "llama")
    writer.add_name(name or folder.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta", rope.get("rope_theta", 10000.0))))
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    family = hub_id.lower()
    writer.add_tokenizer_pre(next((pre for key, pre in PRE_TOKENIZERS if key in family), "default"))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    # Whether the tokeniser puts BOS / EOS around a text, as it does it (transformers 5 no longer writes
    # add_bos_token into tokenizer_config.json, where SpecialVocab looks); llama.cpp adds BOS when this is missing.
    special.add_special_token.setdefault("bos", bool(add_bos))
    special.add_special_token.setdefault("eos", bool(add_eos))
    special.add_to_gguf(writer, quiet=True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    tied = config.get("tie_word_embeddings", False)
    total, tensors = _tensors(folder)
    for done, (hf_name, data) in enumerate(tensors, 1):
        if progress:
            progress(done, total)
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ExportError(
                f"Tensor {hf_name} has no GGUF name for a Llama model: this model is not a plain "
                f"Llama; run llama.cpp's convert_hf_to_gguf.py on {folder}."
            )
        if data.ndim == 1 or (qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32):
            writer.add_tensor(new_name, data.astype(np.float32))  # norms (and rows Q8_0 cannot block) stay float32
        else:
            writer.add_tensor(new_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)
    return out


def modelfile(folder, gguf_name: str, system: str = "") -> str:
    """An Ollama Modelfile for the GGUF file `gguf_name` beside it: the chat template in Ollama's syntax when the
    model's own template is ChatML or Llama 3's (otherwise Ollama reads the template stored in the GGUF file)."""
    config = (
        json.loads((Path(folder) / "tokenizer_config.json").read_text())
        if (Path(folder) / "tokenizer_config.json").is_file()
        else {}
    )
    template = config.get("chat_template") or ""
    jinja = Path(folder) / "chat_template.jinja"
    if not template and jinja.is_file():
        template = jinja.read_text()
    lines = ["# Ollama: ollama create <name> -f Modelfile, then ollama run <name>", f"FROM ./{gguf_name}", ""]
    if "<|im_start|>" in template:
        lines.append(CHATML)
    elif "<|start_header_id|>" in template:
        lines.append(LLAMA3)
    else:
        lines.append("# Chat template: the one stored in the GGUF file (tokenizer.chat_template).\n")
    if system:
        lines.append('SYSTEM """' + system.replace('"""', '"') + '"""\n')
    return "\n".join(lines)
