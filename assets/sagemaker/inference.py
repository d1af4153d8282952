"""Align Studio's handler for the Hugging Face inference container on SageMaker (code/inference.py in model.tar.gz).

The container's toolkit calls model_fn(model_dir) once, then predict_fn(data, model) with each request's decoded
JSON body. model_dir holds either a merged model (config.json) or a LoRA adapter (adapter_config.json) whose base is
the Hub id in the BASE_MODEL environment variable (set by studio/training/sagemaker.py when it creates the model).

Request:  {"inputs": "text" or [{"role": "user", "content": "..."}, ...], "parameters": {"max_new_tokens": 128, ...}}
Response: {"generated_text": "..."}
"""

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def model_fn(model_dir, context=None):
    model_dir = Path(model_dir)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(os.environ["BASE_MODEL"], dtype=dtype)
        model = PeftModel.from_pretrained(base, str(model_dir))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    # The adapter folder carries the tokenizer the job trained with (its chat template included).
    return model, AutoTokenizer.from_pretrained(str(model_dir))


def predict_fn(data, model_and_tokenizer, context=None):
    model, tokenizer = model_and_tokenizer
    inputs = data["inputs"]
    messages = [{"role": "user", "content": inputs}] if isinstance(inputs, str) else inputs
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    parameters = {"max_new_tokens": 128, "do_sample": False, **(data.get("parameters") or {})}
    with torch.no_grad():
        output = model.generate(**encoded, **parameters, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return {"generated_text": tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)}
