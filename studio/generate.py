"""Batched candidate generation: k answers per prompt, saved with the model reference and the parameters.

    python -m studio.generate --model embedded --prompts bank --k 4

Prompts are sorted by length and sent several at a time (left padding, num_return_sequences=k), so one forward pass
serves batch_size x k sequences. Each finished batch is saved in its own transaction: a cancel or a crash keeps
every prompt that was done.
"""

import argparse
import json
import random
import sys
import threading
from dataclasses import asdict, dataclass, replace
from typing import Callable

from studio import models
from studio.prompts import get_prompts, prompt_messages
from studio.store import Store


@dataclass
class GenerationParams:
    k: int = 4
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128
    seed: int = -1  # -1: a fresh random seed each run (saved with the responses); any other value reproduces
    batch_size: int = 8  # prompts per forward pass; each brings k sequences

    def __post_init__(self):
        checks = [
            (1 <= self.k <= 8, "k (candidates per prompt) must be between 1 and 8"),
            (0 < self.temperature <= 2, "temperature must be above 0 and at most 2"),
            (0 < self.top_p <= 1, "top_p must be above 0 and at most 1"),
            (1 <= self.max_new_tokens <= 4096, "max new tokens must be between 1 and 4096"),
            (1 <= self.batch_size <= 64, "batch size must be between 1 and 64"),
            (-1 <= self.seed < 2**32, "seed must be -1 (random) or a whole number from 0 to 4294967295"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def seeded(self) -> "GenerationParams":
        """These parameters with a concrete seed: seed -1 becomes a fresh random one (kept, so a run can be replayed),
        and transformers' generator is seeded with it."""
        from transformers import set_seed

        params = self if self.seed >= 0 else replace(self, seed=random.randrange(2**32))
        set_seed(params.seed)
        return params

    def stored(self) -> dict:
        """What is saved with each response: everything that shaped its text (batch size does not)."""
        params = asdict(self)
        del params["batch_size"]
        return params


@dataclass
class GenerationResult:
    prompts_done: int
    prompts_total: int
    responses_added: int
    cancelled: bool
    seed: int


def chat_texts(tokenizer, prompts: list[dict]) -> list[str]:
    """Each prompt (with its system prompt and earlier turns, if any) through the chat template, ready to generate."""
    texts = []
    for prompt in prompts:
        messages = prompt_messages(prompt)
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return texts


def _generate_kwargs(loaded: models.Loaded, prompts: list[dict], params: GenerationParams, cancel, adapters):
    """The tokenized batch and generate() arguments shared by sample() and stream()."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnCancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    tokenizer = loaded.tokenizer
    # The chat template already holds the special tokens; adding them again would double the BOS.
    batch = tokenizer(chat_texts(tokenizer, prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    kwargs = dict(
        **batch.to(loaded.model.device),
        do_sample=True,
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=params.max_new_tokens,
        num_return_sequences=params.k,
        pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=StoppingCriteriaList([StopOnCancel()]) if cancel is not None else None,
    )
    if loaded.adapters:
        # Once adapters are loaded the weights are a PeftModel: every row names its adapter (or the plain base),
        # repeated for its k samples, so one batch can mix models.
        names = adapters or [models.BASE] * len(prompts)
        kwargs["adapter_names"] = [name for name in names for _ in range(params.k)]
    elif adapters and any(name != models.BASE for name in adapters):
        raise ValueError("adapter names given but no adapter is loaded")
    return kwargs


def sample(loaded: models.Loaded, prompts: list[dict], params: GenerationParams, cancel=None,
           adapters: list[str] | None = None) -> list[list[str]] | None:
    """k sampled answers for each prompt, in one generate() call; None if `cancel` was set before it finished.
    `adapters`: one name per prompt from models.with_adapters (None: the plain base for every prompt)."""
    import torch

    tokenizer = loaded.tokenizer
    kwargs = _generate_kwargs(loaded, prompts, params, cancel, adapters)
    with torch.inference_mode():
        output = loaded.model.generate(**kwargs)
    if cancel is not None and cancel.is_set():
        return None
    answers = tokenizer.batch_decode(output[:, kwargs["input_ids"].shape[1]:], skip_special_tokens=True)
    # generate() returns the k samples of each prompt next to each other.
    return [[a.strip() for a in answers[i * params.k:(i + 1) * params.k]] for i in range(len(prompts))]


def stream(loaded: models.Loaded, prompts: list[dict], params: GenerationParams, adapters: list[str] | None = None,
           cancel: threading.Event | None = None):
    """One answer per prompt, all in one batch, yielding the texts so far after every new token.

    generate() runs in a thread and hands each step's tokens (one per row) to a streamer; transformers' own
    TextIteratorStreamer takes one row only, so this one keeps a row each and stops a row at its end token."""
    import queue

    import torch
    from transformers.generation.streamers import BaseStreamer

    class RowsStreamer(BaseStreamer):
        def __init__(self):
            self.tokens, self.prompt_seen = queue.Queue(), False

        def put(self, value):
            if self.prompt_seen:
                self.tokens.put(value.tolist())
            self.prompt_seen = True  # the first call is the prompt itself

        def end(self):
            self.tokens.put(None)

    params = replace(params, k=1)
    streamer = RowsStreamer()
    kwargs = _generate_kwargs(loaded, prompts, params, cancel, adapters)
    failure = []

    def run():
        try:
            with torch.inference_mode():
                loaded.model.generate(**kwargs, streamer=streamer)
        except BaseException as error:  # shown to the caller, not lost in a thread
            failure.append(error)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    tokenizer = loaded.tokenizer
    eos = loaded.model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    rows, done = [[] for _ in prompts], [False] * len(prompts)
    while (step := streamer.tokens.get()) is not None:
        for i, token in enumerate(step):
            if done[i]:
                continue
            if token in stops:
                done[i] = True
            else:
                rows[i].append(token)
        yield [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]
    thread.join()
    if failure:
        raise failure[0]


def generate_candidates(
    store: Store,
    model_reference: str,
    prompts: list[dict],
    params: GenerationParams,
    *,
    adapter: str | None = None,
    quantize_4bit: bool = False,
    cancel: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Generate params.k candidates for every prompt (rows from prompts.get_prompts) and save them batch by batch.
    With `adapter` (a LoRA folder on `model_reference`) the answers come from the aligned model and are saved with
    the adapter, next to the plain model's."""
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
        chunk = [prompts[i] for i in order[start:start + params.batch_size]]
        answers = sample(loaded, chunk, params, cancel, names and names * len(chunk))
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


def main(argv=None) -> int:
    from studio.paths import db_path
    from studio.prompts import PromptError, install_builtin_sets

    parser = argparse.ArgumentParser(prog="python -m studio.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=models.EMBEDDED, help="embedded, a Hub id or a local folder")
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
        params = GenerationParams(**{n: getattr(args, n) for n in ("k", "temperature", "top_p", "max_new_tokens",
                                                                      "seed", "batch_size")})
        prompts = get_prompts(store, args.prompts, args.limit)
        result = generate_candidates(
            store, args.model, prompts, params, quantize_4bit=args.quantize_4bit,
            on_progress=lambda done, total: print(f"{done}/{total} prompts", file=sys.stderr, flush=True),
        )
    except (ValueError, PromptError, models.ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Saved {result.responses_added} candidates for {result.prompts_done} prompts of {args.prompts!r} "
          f"from {args.model} (seed {result.seed}) in {store.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
