"""Publishing a training job: the folder that goes to the Hub (adapter, tokenizer, model card), the push, and a
merged full model for serving elsewhere, optionally also as GGUF for llama.cpp and Ollama
(`python -m studio publish merge JOB_FOLDER OUT [--gguf q8_0]`)."""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from studio.core import access, hub, jobs, methods
from studio.core.paths import ROOT
from studio.core.store import Store
from studio.evaluation import evaluate, gate, report
from studio.inference import models
from studio.shipping import gguf_export
from studio.training import recipes

RECIPE_FIELDS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "load_in_4bit",
    "seed",
)
SHOWN_METRICS = (
    "loss",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "mean_token_accuracy",
    "accuracy",
    "margin",
)


class PublishError(ValueError):
    """A publish action that cannot be done; the message says what to fix."""


def finished_job(store: Store, job_id: int) -> tuple[dict, Path]:
    job = jobs.get(store, job_id)
    adapter = jobs.adapter_folder(job)
    if adapter is None:
        raise PublishError(f"Job {job_id} is {job['status']} and has no adapter; publish a finished job.")
    return job, adapter


def _base_note(job: dict) -> str:
    if job["base_model"] == models.EMBEDDED:
        return (
            f"The base is {models.EMBEDDED_HUB_ID}. The studio trained on its bundled 4-bit (Q4_1) copy, "
            "turned back into float32, so on the original weights the adapter behaves very nearly, not exactly, "
            "as it did in the studio."
        )
    if models.hub_base(job["base_model"]) is None:
        return (
            f"The base was a local folder ({Path(job['base_model']).name}) that is not on the Hub: load your copy "
            'of it and add the adapter with `PeftModel.from_pretrained(base, "<this repo>")`.'
        )
    return f"The base is {job['base_model']}."


def model_card(store: Store, job_id: int, pushed_anyway: bool = False) -> str:
    """A model card from what the studio knows: base, data, recipe, the last training values, the evidence and the
    publish gate's verdict (`pushed_anyway`: published by explicit confirmation although it did not pass)."""
    job, _ = finished_job(store, job_id)
    folder = Path(job["folder"])
    info = json.loads(job["data_info"] or "{}")
    _, recipe = recipes.load(folder / "recipe.yaml")
    last = {}
    for row in jobs.metrics(job):
        last.update({k: v for k, v in row.items() if k in SHOWN_METRICS or k == "step"})
    data_lines = [f"- Data: {job['data']}"]
    if info.get("pairs"):
        data_lines.append(
            f"- {info['pairs']} preference pairs ({info['pair_mode'].replace('_', ' ')}) from "
            f"{info['rankings']} rankings of {info['prompts']} prompts by {len(info['annotators'])} "
            f"annotator(s); {info['conflicts']} conflicting pairs, {info['unresolved']} dropped."
        )
    shown = "\n".join(f"| {k} | {v:.4g} |" for k, v in last.items() if k != "step")
    fields = RECIPE_FIELDS + methods.get(job["method"]).options
    settings = {k: getattr(recipe, k) for k in fields if hasattr(recipe, k)}  # GRPO has no max_length
    recipe_text = yaml.safe_dump(settings, sort_keys=False)
    evaluation = (
        "\n".join(evaluate.summary_lines(store, job_id))
        or "No blind A/B evaluation or automatic scores have been recorded for this adapter yet."
    )
    found = report.latest(store, job_id)
    if found and found["summary"]:
        alignment = (
            "The base model and this adapter answered held-out prompts (prompts the adapter was not trained "
            "on) several times each; automatic scorers compared each pair of answers.\n\n"
            + "\n".join(report.lines(found["summary"]))
        )
    else:
        alignment = "No alignment report has been made for this adapter yet."
    hub_base = models.hub_base(job["base_model"])
    return f"""---
{f"base_model: {json.dumps(hub_base)}{chr(10)}" if hub_base else ""}library_name: peft
tags:
- {job["method"]}
- lora
- align-studio
---

# LoRA adapter: {job["method"].upper()} on {job["base_model"]}

Trained with Align Studio (TRL + PEFT) from human rankings. {_base_note(job)}

## Data
{chr(10).join(data_lines)}

## Training
Method: {jobs.method_label(job)}, {last.get("step", 0)} steps. Last logged values:

| metric | value |
| --- | --- |
{shown or "| (none logged) | |"}

Settings (the full recipe.yaml is in the job folder):

```yaml
{recipe_text}```

## Alignment report
{alignment}

## Evaluation
{evaluation}

## Publish gate
{chr(10).join(gate.card_lines(gate.verdict(store, job_id), pushed_anyway))}

## Use

```python
from peft import AutoPeftModelForCausalLM
model = AutoPeftModelForCausalLM.from_pretrained("<this repo>")
```
"""


def publish_folder(store: Store, job_id: int, out, pushed_anyway: bool = False) -> Path:
    """The folder that would be pushed: the adapter with its tokenizer and the model card. Its adapter_config.json
    names the base by its Hub id, not by the local folder the job trained on."""
    job, adapter = finished_job(store, job_id)
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(adapter, out, ignore=shutil.ignore_patterns("training_args.bin"))
    if models.hub_base(job["base_model"]):
        config_file = out / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = models.hub_base(job["base_model"])
        config_file.write_text(json.dumps(config, indent=2) + "\n")
    (out / "README.md").write_text(model_card(store, job_id, pushed_anyway))
    return out


def push_adapter(
    store: Store,
    job_id: int,
    repo_id: str,
    private: bool = True,
    token: str | None = None,
    confirmed: bool = False,
    by: str | None = None,
) -> str:
    """Create the repo (private by default) and upload the adapter folder; returns its URL. An adapter that did not
    pass the publish gate is pushed only when `confirmed`, and its card says so. A lead's action."""
    access.check_lead(by, "push to the Hub")
    from huggingface_hub import HfApi

    try:
        repo_id = hub.check_repo_id(repo_id, "my-org/bank-assistant-dpo")
    except ValueError as error:
        raise PublishError(str(error)) from None
    finished_job(store, job_id)
    token = hub.get_token(token)
    if not token:
        raise PublishError("No Hugging Face token: set HF_TOKEN, run `hf auth login`, or log in on the Space.")
    if not hub.reachable():
        raise PublishError("The Hugging Face Hub is out of reach (no network?); nothing was pushed.")
    result = gate.verdict(store, job_id)
    if result["status"] != "passed" and not confirmed:
        reasons = "; ".join(f"{name}: {why}" for name, (ok, why) in result["checks"].items() if not ok)
        raise PublishError(
            f'The publish gate is {result["status"]} ({reasons}). Tick "Push anyway" to push it; '
            "its card will say it was pushed without passing."
        )
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        api.upload_folder(
            repo_id=repo_id,
            folder_path=publish_folder(store, job_id, Path(tmp) / "adapter", result["status"] != "passed"),
            commit_message=f"Align Studio job {job_id}",
        )
    return f"https://huggingface.co/{repo_id}"


def merge(job_folder, out, gguf: str | None = None, hub_id: str = "", system: str = "") -> Path:
    """Merge a job's LoRA adapter into its base and save a full model folder (float32 on CPU, bf16 on a GPU). With
    `gguf` (q8_0 or f16), also write the merged model as one GGUF file for llama.cpp with an Ollama Modelfile, in
    the job folder's `gguf/` (`hub_id`, the base's Hub id, names llama.cpp's pre-tokeniser; `system`, the prompt
    set's system prompt, goes into the Modelfile)."""
    job_folder = Path(job_folder)
    adapter = job_folder / "adapter" if (job_folder / "adapter").is_dir() else job_folder
    if not (adapter / "adapter_config.json").is_file():
        raise PublishError(f"{adapter} has no adapter_config.json: not a finished job or adapter folder.")
    # The base as the job loaded it (for `embedded`, the converted folder), as PEFT recorded it; checked before the
    # model libraries load, so that a broken adapter folder fails at once.
    base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise PublishError(f"{adapter / 'adapter_config.json'} names no base model (base_model_name_or_path).")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, dtype = models.device_and_dtype()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), str(adapter))
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.merge_and_unload().save_pretrained(partial)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    if gguf:
        write_gguf(job_folder, out, gguf, hub_id, system)
    return out


def write_gguf(job_folder, merged, kind: str, hub_id: str = "", system: str = "") -> Path:
    """The merged model as `gguf/<job folder>-<kind>.gguf` with its Ollama Modelfile; returns the GGUF file."""
    folder = Path(job_folder) / "gguf"
    folder.mkdir(exist_ok=True)
    name = f"{Path(job_folder).name}-{kind}.gguf"
    out = gguf_export.write_gguf(
        merged,
        folder / name,
        kind,
        name=Path(job_folder).name,
        hub_id=hub_id,
        progress=lambda done, total: (
            print(f"GGUF: tensor {done} / {total}", flush=True) if done % 50 == 0 or done == total else None
        ),
    )
    (folder / "Modelfile").write_text(gguf_export.modelfile(merged, name, system))
    return out


def system_prompt(store: Store, job: dict) -> str:
    """The system prompt of the prompt set the job trained on (the most common one among its prompts), or ""."""
    set_name = json.loads(job["data_info"] or "{}").get("prompt_set")
    rows = (
        store.query(
            "SELECT p.system, COUNT(*) AS n FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id "
            "WHERE s.name = ? AND COALESCE(p.system, '') != '' GROUP BY p.system ORDER BY n DESC LIMIT 1",
            (set_name,),
        )
        if set_name
        else []
    )
    return rows[0]["system"] if rows else ""


_children: dict[int, subprocess.Popen] = {}  # merges this process started, by job: it knows best whether they run


def _merging(job: dict) -> bool:
    """Whether the job's recorded merge process still runs: asked of our own child when we started it (its command
    line is not yet the merge's for a moment after the start), else found by pid and command line."""
    child = _children.get(job["id"])
    if child is not None:
        return child.poll() is None
    return jobs.alive(job["merge_pid"], "studio.shipping.publish", job["folder"])


def start_merge(store: Store, job_id: int, gguf: str | None = None, by: str | None = None) -> Path:
    """Merge in a background process (it loads a second copy of the model); returns the output folder. The merge is
    recorded on the job (merge_status, merge_pid), so its state survives an app restart and a second app on the same
    database does not start it twice (the process starts inside the transaction that records it). A lead's action."""
    access.check_lead(by, "merge a model")
    if gguf and gguf not in gguf_export.KINDS:
        raise PublishError(f"GGUF kind {gguf!r}: choose one of {', '.join(gguf_export.KINDS)}.")
    finished_job(store, job_id)
    job = _settle_merge(store, job_id)
    out = Path(job["folder"]) / "merged"
    with store.tx() as db:
        row = db.execute("SELECT merge_status, merge_pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row["merge_status"] == "merging" and _merging({**job, "merge_pid": row["merge_pid"]}):
            raise PublishError(f"Job {job_id} is being merged already.")
        with open(Path(job["folder"]) / "merge.log", "wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "studio.shipping.publish",
                    "merge",
                    job["folder"],
                    str(out),
                    *(
                        [
                            "--gguf",
                            gguf,
                            "--hub-id",
                            models.hub_base(job["base_model"]) or "",
                            "--system",
                            system_prompt(store, job),
                        ]
                        if gguf
                        else []
                    ),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        db.execute("UPDATE jobs SET merge_status = 'merging', merge_pid = ? WHERE id = ?", (process.pid, job_id))
    _children[job_id] = process
    return out


def _settle_merge(store: Store, job_id: int) -> dict:
    """The job, with a merge whose process has ended recorded as merged (the model folder is there) or failed."""
    job = jobs.get(store, job_id)
    if job["merge_status"] == "merging" and not _merging(job):
        done = (Path(job["folder"]) / "merged" / "config.json").is_file()
        with store.tx() as db:
            db.execute(
                "UPDATE jobs SET merge_status = ?, merge_pid = NULL WHERE id = ? AND merge_status = 'merging'",
                ("merged" if done else "failed", job_id),
            )
        job = jobs.get(store, job_id)
    return job


def _last_log_line(job: dict) -> str:
    log = Path(job["folder"]) / "merge.log"
    lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    return lines[-1] if lines else ""


def merge_status(store: Store, job_id: int) -> str:
    job = _settle_merge(store, job_id)
    out = Path(job["folder"]) / "merged"
    if job["merge_status"] == "merging":
        last = _last_log_line(job)
        if last.startswith("GGUF: "):  # the merge is saved; the GGUF file is being written
            return f"Merging into {out}… writing GGUF ({last.removeprefix('GGUF: ')})."
        return f"Merging into {out}…"
    if job["merge_status"] == "failed":
        return f"The merge failed; see {Path(job['folder']) / 'merge.log'}."
    if (out / "config.json").is_file():
        said = f"Merged model: {out} (loads with AutoModelForCausalLM.from_pretrained)."
        last = _last_log_line(job)
        if last.startswith("error: "):  # the merge was saved, then the GGUF export stopped
            said += f" GGUF not written: {last.removeprefix('error: ')}"
        for file in sorted((Path(job["folder"]) / "gguf").glob("*.gguf")):
            said += (
                f" GGUF for llama.cpp: {file} ({file.stat().st_size / 2**20:,.0f} MiB); Ollama: `ollama create "
                f"<name> -f {file.parent / 'Modelfile'}`."
            )
        return said
    return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio publish")
    sub = parser.add_subparsers(dest="command", required=True)
    merge_args = sub.add_parser("merge", help="merge a job's adapter into its base and save a full model folder")
    merge_args.add_argument("job_folder")
    merge_args.add_argument("out")
    merge_args.add_argument(
        "--gguf",
        choices=gguf_export.KINDS,
        help="also write a GGUF file for llama.cpp and an Ollama Modelfile (in the job's gguf/)",
    )
    merge_args.add_argument("--hub-id", default="", help="the base's Hub id (names llama.cpp's pre-tokeniser)")
    merge_args.add_argument("--system", default="", help="the system prompt for the Ollama Modelfile")
    args = parser.parse_args(argv)
    try:
        print(f"Merged model saved in {merge(args.job_folder, args.out, args.gguf, args.hub_id, args.system)}")
    except (PublishError, gguf_export.ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
