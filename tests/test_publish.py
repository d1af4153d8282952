import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import gguf
import pytest

from studio.core import jobs
from studio.core.store import Store
from studio.shipping import publish
from studio.shipping.publish import PublishError
from studio.training.launch import Manager
from tests.helpers import clear_cut_set, new_job, wait_for


def test_publish_folder_model_card_merge_and_push_errors(store, tmp_path, monkeypatch):
    import huggingface_hub
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.inference.models import embedded_folder

    clear_cut_set(store)
    job_id = new_job(store, 3)
    with pytest.raises(PublishError, match=f"Job {job_id} is queued and has no adapter"):
        publish.publish_folder(store, job_id, tmp_path / "early")
    manager = Manager(store)
    wait_for(lambda: jobs.get(store, job_id)["status"] == "finished", manager)

    # The folder that would be pushed loads with PEFT and generates.
    folder = publish.publish_folder(store, job_id, tmp_path / "publish")
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "training_args.bin").exists()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(embedded_folder()), str(folder)).eval()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Can I freeze my card?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = peft_model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    # On someone else's machine: a fresh process where the studio's folders do not exist, whose Hugging Face cache
    # holds the base under its Hub id (offline here, so the cache is laid out as the Hub client writes it), loads
    # the folder with vanilla PEFT by the name in adapter_config.json and computes what the studio computed.
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert str(embedded_folder()) not in (folder / "adapter_config.json").read_text()
    cache = tmp_path / "elsewhere" / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(embedded_folder(), cache / "snapshots" / revision)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text(revision)
    pushed = shutil.copytree(folder, tmp_path / "elsewhere" / "downloaded-adapter")
    with torch.inference_mode():
        torch.save(peft_model(**inputs).logits, tmp_path / "ours.pt")
    script = (
        "import sys, torch\n"
        "from peft import AutoPeftModelForCausalLM\n"
        "from transformers import AutoTokenizer\n"
        "folder = sys.argv[1]\n"
        "model = AutoPeftModelForCausalLM.from_pretrained(folder).eval()\n"
        "tokenizer = AutoTokenizer.from_pretrained(folder)\n"
        "inputs = tokenizer.apply_chat_template([{'role': 'user', 'content': 'Can I freeze my card?'}],"
        " add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "with torch.inference_mode():\n"
        "    torch.save(model(**inputs).logits, sys.argv[2])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("STUDIO_HOME", "HF_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "elsewhere"), HF_HUB_OFFLINE="1")
    subprocess.run(
        [sys.executable, "-c", script, str(pushed), str(tmp_path / "theirs.pt")],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    theirs, ours = torch.load(tmp_path / "theirs.pt"), torch.load(tmp_path / "ours.pt")
    with torch.inference_mode(), peft_model.disable_adapter():
        plain = peft_model(**inputs).logits
    # Float noise from another process's matrix kernels stays far below what the adapter changes.
    noise, effect = (theirs - ours).abs().max().item(), (plain - ours).abs().max().item()
    print(f"other process vs ours: {noise:.2e}; adapter effect: {effect:.2e}")
    assert noise < 1e-2 and effect > 10 * noise

    card = (folder / "README.md").read_text()
    assert 'base_model: "HuggingFaceTB/SmolLM2-135M-Instruct"' in card and "library_name: peft" in card
    assert "8 preference pairs (best worst) from 8 rankings of 8 prompts by 1 annotator(s)" in card
    assert "Method: dpo, 3 steps" in card and "| rewards/margins |" in card and "beta:" in card

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # and no saved login
    with pytest.raises(PublishError, match="No Hugging Face token: set HF_TOKEN"):
        publish.push_adapter(store, job_id, "me/bank-dpo")
    with pytest.raises(PublishError, match="is not a Hub repository id"):
        publish.push_adapter(store, job_id, "no slash")
    assert publish.main(["merge", str(tmp_path), str(tmp_path / "m2")]) == 2

    # A merge started from the app is recorded on the job: another app process (its own Store) sees it running,
    # does not start it twice, and after it ends finds it merged, or failed, without the process that started it.
    job_folder = Path(jobs.get(store, job_id)["folder"])
    with store.tx() as db:  # the set's system prompt goes into the Ollama Modelfile
        db.execute("UPDATE prompts SET system = 'You are \"polite\".'")
    out = publish.start_merge(store, job_id, "q8_0")  # and GGUF (--gguf q8_0 in the merge process)
    other = Store(store.path)
    assert publish.merge_status(other, job_id) == f"Merging into {out}…"
    with pytest.raises(PublishError, match="being merged already"):
        publish.start_merge(other, job_id)
    deadline = time.monotonic() + 240
    while publish.merge_status(other, job_id).startswith("Merging") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs.get(other, job_id)["merge_status"] == "merged" and (out / "config.json").is_file()
    said = publish.merge_status(Store(store.path), job_id)
    assert said.startswith(f"Merged model: {out}") and f"GGUF for llama.cpp: {job_folder}/gguf/" in said
    assert f"ollama create <name> -f {job_folder}/gguf/Modelfile" in said
    with open(job_folder / "merge.log", "a") as log:  # as a merge whose GGUF step stopped ends its log
        log.write("error: GGUF export here writes Llama-architecture models; this one is 'gpt2'\n")
    assert "GGUF not written: GGUF export here writes Llama-architecture models" in publish.merge_status(store, job_id)
    # The merged model is a plain transformers model that computes what base + adapter computed.
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not hasattr(merged, "peft_config")
    with torch.inference_mode():
        assert torch.allclose(merged(**inputs).logits, peft_model(**inputs).logits, rtol=1e-3, atol=1e-3)
    assert merged.generate(**inputs, max_new_tokens=4, do_sample=False).shape[1] > inputs["input_ids"].shape[1]
    # The GGUF file: the merged model (not the base) as Q8_0 for llama.cpp, with the Modelfile that names it
    # (tests/test_gguf.py checks the format itself against llama.cpp's converter). transformers' own GGUF loader
    # reads it back and computes the merged model's next-token distribution within Q8_0's rounding.
    written = job_folder / "gguf" / f"{job_folder.name}-q8_0.gguf"
    assert gguf.GGUFReader(str(written)).fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    loaded = AutoModelForCausalLM.from_pretrained(written.parent, gguf_file=written.name, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = merged(**inputs).logits[0, -1].log_softmax(-1)
        got = loaded(**inputs).logits[0, -1].log_softmax(-1)
    assert got.argmax() == expected.argmax()
    assert torch.nn.functional.kl_div(got, expected, log_target=True, reduction="sum") < 0.02
    modelfile = (job_folder / "gguf" / "Modelfile").read_text()
    assert f"FROM ./{job_folder.name}-q8_0.gguf" in modelfile and 'SYSTEM """You are "polite"."""' in modelfile

    shutil.rmtree(out)
    config = jobs.adapter_folder(jobs.get(store, job_id)) / "adapter_config.json"
    config.write_text(config.read_text().replace("base_model_name_or_path", "no_base"))  # the merge cannot load it
    publish.start_merge(store, job_id)
    deadline = time.monotonic() + 240
    while publish.merge_status(other, job_id).startswith("Merging") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert publish.merge_status(Store(store.path), job_id).startswith("The merge failed; see ")
    assert "names no base model (base_model_name_or_path)" in (job_folder / "merge.log").read_text()
    assert jobs.get(store, job_id)["merge_status"] == "failed"
