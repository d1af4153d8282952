"""Batched candidate generation: k answers per prompt, saved with the model reference and the parameters.

    python -m studio generate --model embedded --prompts bank --k 4

Prompts are sorted by length and sent several at a time (left padding); each prompt is read once and its k samples
share it, so one forward pass serves batch_size x k sequences (see `decode`). Each finished batch is saved in its own
transaction: a cancel or a crash keeps every prompt that was done.
"""

import argparse
import json
import sys
import threading
from typing import Callable

from studio.core import jobs
from studio.core.paths import db_path
from studio.core.store import Store
from studio.data.prompts import PromptError, get_prompts, install_builtin_sets
from studio.inference import models, servers
from studio.inference.decode import (
    GenerationParams,
    GenerationResult,
    chat_texts,
    prompt_messages,
    sample,
)


def generate_candidates(
    store: Store,
    model_reference: str,
    prompts: list[dict],
    params: GenerationParams,
    *,
    adapter: str | None = None,
    quantize_4bit: bool = False,
    cancel: threading.Event | None = None,
    on_progress: Callable[[float, int], None] | None = None,
) -> GenerationResult:
    """Generate params.k candidates for every prompt (rows from prompts.get_prompts) and save them batch by batch.
    `on_progress(done, total)` counts prompts, with fractions while a batch is under way (see sample).
    With `adapter` (a LoRA folder on `model_reference`) the answers come from the aligned model and are saved with
    the adapter, next to the plain model's. A served model (`server:<connection>/<model>`) answers through its
    inference server instead, each prompt saved as its answers come back."""
    if servers.is_served(model_reference):
        return _served_candidates(store, model_reference, prompts, params, cancel, on_progress)
    loaded = models.load(model_reference, quantize_4bit=quantize_4bit)
    names = models.with_adapters(loaded, [adapter]) if adapter else None
    # A new seed per run (unless one is given), so that generating again adds different candidates.
    params = params.seeded()
    tokenizer = loaded.tokenizer
    # Similar lengths in one batch waste less compute on padding.
    lengths = [len(t) for t in tokenizer(chat_texts(tokenizer, prompts), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)
    stored_params = json.dumps(params.stored())
    done = added = 0
    if on_progress:
        on_progress(0, len(prompts))
    for start in range(0, len(order), params.batch_size):
        if cancel is not None and cancel.is_set():
            break
        chunk = [prompts[i] for i in order[start : start + params.batch_size]]
        within = (
            (lambda share, before=done, size=len(chunk): on_progress(before + share * size, len(prompts)))
            if on_progress
            else None
        )
        answers = sample(loaded, chunk, params, cancel, names and names * len(chunk), on_step=within)
        if answers is None:
            break
        rows = [
            (prompt["id"], model_reference, adapter, text, stored_params)
            for prompt, texts in zip(chunk, answers)
            for text in texts
        ]
        with store.tx() as db:
            db.executemany(
                "INSERT INTO responses (prompt_id, model, adapter, text, params) VALUES (?, ?, ?, ?, ?)", rows
            )
        done += len(chunk)
        added += len(rows)
        if on_progress:
            on_progress(done, len(prompts))
    return GenerationResult(done, len(prompts), added, cancelled=done < len(prompts), seed=params.seed)


def _served_candidates(store, model_reference, prompts, params, cancel, on_progress) -> GenerationResult:
    served = servers.client(store, model_reference)
    params = params.seeded()
    stored = params.stored()
    done = added = 0
    if on_progress:
        on_progress(0, len(prompts))
    for index, texts, url in servers.answers(served, [prompt_messages(p) for p in prompts], params, cancel):
        row = json.dumps({**stored, "served_by": url})  # which of the connection's servers wrote it
        with store.tx() as db:
            db.executemany(
                "INSERT INTO responses (prompt_id, model, adapter, text, params) VALUES (?, ?, NULL, ?, ?)",
                [(prompts[index]["id"], model_reference, text, row) for text in texts],
            )
        done, added = done + 1, added + len(texts)
        if on_progress:
            on_progress(done, len(prompts))
    return GenerationResult(done, len(prompts), added, cancelled=done < len(prompts), seed=params.seed)


def candidates_table(store: Store, set_name: str, limit: int | None = None) -> list[list]:
    """Rows of (prompt #, prompt, candidate #, model, answer) for the prompts of a set that have candidates."""
    rows = store.query(
        "SELECT p.position, p.text AS prompt, r.model, r.text FROM prompts p "
        "JOIN prompt_sets s ON s.id = p.prompt_set_id JOIN responses r ON r.prompt_id = p.id "
        "WHERE s.name = ? AND p.position < ? ORDER BY p.position, r.id",
        (set_name, limit if limit and limit > 0 else sys.maxsize),
    )
    table, previous, number = [], None, 0
    for row in rows:
        number = number + 1 if row["position"] == previous else 1
        previous = row["position"]
        table.append([row["position"] + 1, row["prompt"], number, row["model"], row["text"]])
    return table


def next_round_candidates(
    store: Store, job_id: int, set_name: str, params: GenerationParams, limit: int = 0, cancel=None, on_progress=None
) -> GenerationResult:
    """Fresh candidates for a prompt set from a finished job's aligned adapter, saved next to the earlier models'
    (with the adapter as their model), so that people rank them in the next round."""
    folder = jobs.finished_folder(store, job_id, "chat")
    return generate_candidates(
        store,
        jobs.get(store, job_id)["base_model"],
        get_prompts(store, set_name, limit),
        params,
        adapter=str(folder),
        cancel=cancel,
        on_progress=on_progress,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio generate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=models.EMBEDDED, help="embedded, a Hub id, a local folder, or server:<connection>/<model>"
    )
    parser.add_argument("--prompts", default="bank", help="name of a prompt set in the studio database")
    parser.add_argument("--limit", type=int, default=0, help="only the first N prompts (0: all)")
    parser.add_argument("--4bit", dest="quantize_4bit", action="store_true", help="load in 4-bit NF4 (GPU only)")
    defaults = GenerationParams()
    for name in ("k", "temperature", "top_p", "max_new_tokens", "seed", "batch_size"):
        value = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=type(value), default=value)
    args = parser.parse_args(argv)
    store = Store(db_path())
    install_builtin_sets(store)
    try:
        params = GenerationParams(
            **{n: getattr(args, n) for n in ("k", "temperature", "top_p", "max_new_tokens", "seed", "batch_size")}
        )
        prompts = get_prompts(store, args.prompts, args.limit)
        result = generate_candidates(
            store,
            args.model,
            prompts,
            params,
            quantize_4bit=args.quantize_4bit,
            on_progress=lambda done, total: print(f"{done}/{total} prompts", file=sys.stderr, flush=True),
        )
    except (ValueError, PromptError, models.ModelError, servers.ServerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"Saved {result.responses_added} candidates for {result.prompts_done} prompts of {args.prompts!r} "
        f"from {args.model} (seed {result.seed}) in {store.path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
