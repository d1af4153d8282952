"""The decoding loop: k samples per prompt from one read of each prompt (left-padded batches, a KV cache), with
LoRA adapters applied per row; streaming for chat. Saving candidates is studio.data.candidates."""

import queue
import random
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Callable

from studio.inference import models


def prompt_messages(prompt: dict) -> list[dict]:
    """A prompt row as chat messages: the system prompt, the earlier turns, then the user's message."""
    messages = [{"role": "system", "content": prompt["system"]}] if prompt.get("system") else []
    return messages + list(prompt.get("context") or []) + [{"role": "user", "content": prompt["text"]}]


@dataclass
class GenerationParams:
    k: int = 4
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256  # long enough for most answers to finish (128 cut most mid-sentence)
    seed: int = -1  # -1: a fresh random seed each run (saved with the responses); any other value reproduces
    batch_size: int = 16  # prompts per forward pass; each brings k sequences

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


TOP_K = 50  # sampling draws among the 50 likeliest tokens, as transformers' generate() does by default


def next_tokens(logits, temperature: float, top_p: float, top_k: int | None = TOP_K):
    """One sampled token per row: temperature, then nucleus (top_p) sampling among the top_k likeliest tokens.
    Sorting and drawing over TOP_K tokens instead of the whole vocabulary (49k for SmolLM2) is what makes a
    candidate's step cheap; the tokens left out have no share of the nucleus in practice. top_k None: the whole
    vocabulary, as transformers' generate() draws with top_k=0 (online RL: the answers must come from the policy)."""
    import torch

    if top_k:  # the likeliest first, then scaled: the same tokens, without a float copy of every row's vocabulary
        values, index = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
        values = values.float() / temperature
    elif top_p >= 1:
        return torch.multinomial((logits.float() / temperature).softmax(-1), 1).squeeze(-1)
    else:
        values, index = (logits.float() / temperature).sort(-1, descending=True)
    probs = values.softmax(-1)
    if top_p < 1:
        # Keep the smallest set of likeliest tokens whose probabilities reach top_p (the first one always).
        probs = probs.masked_fill(probs.cumsum(-1) - probs > top_p, 0)
    return index.gather(-1, torch.multinomial(probs, 1)).squeeze(-1)


def _kv_cache():
    """A key/value cache whose layers keep spare room and write each new token in place. transformers' DynamicLayer
    concatenates, copying every layer's whole cache at every step: a third of a CPU decode step at 48 rows."""
    from transformers import Cache, DynamicCache, DynamicLayer

    class RoomyLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.length, self._keys, self._values = 0, None, None
            new = key_states.shape[-2]
            if self._keys is None or self.length + new > self._keys.shape[-2]:
                room = max(64, 2 * (self.length + new))
                keys = key_states.new_empty(*key_states.shape[:-2], room, key_states.shape[-1])
                values = value_states.new_empty(*value_states.shape[:-2], room, value_states.shape[-1])
                if self.length:
                    keys[..., : self.length, :] = self._keys[..., : self.length, :]
                    values[..., : self.length, :] = self._values[..., : self.length, :]
                self._keys, self._values = keys, values
            self._keys[..., self.length : self.length + new, :] = key_states
            self._values[..., self.length : self.length + new, :] = value_states
            self.length += new
            self.keys, self.values = self._keys[..., : self.length, :], self._values[..., : self.length, :]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def batch_repeat_interleave(self, repeats: int) -> None:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self.keys, self.values = self._keys[..., : self.length, :], self._values[..., : self.length, :]

        def batch_select_indices(self, indices) -> None:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self.keys, self.values = self._keys[..., : self.length, :], self._values[..., : self.length, :]

    class RoomyCache(DynamicCache):
        def __init__(self):
            Cache.__init__(self, layer_class_to_replicate=RoomyLayer)

    return RoomyCache()


def decode(
    loaded: models.Loaded,
    prompts: list[dict],
    params: "GenerationParams",
    adapters: list[str] | None = None,
    cancel: threading.Event | None = None,
):
    """Sample params.k answers per prompt in one batch, yielding after every step the new tokens of every row so far
    (rows = prompts x k, the k samples of a prompt next to each other); stops early when `cancel` is set.

    Each prompt is read once and its cache shared by its k samples; rows that reach an end token leave the batch,
    so the last, longest answers do not drag the finished ones along. With adapters loaded (models.with_adapters),
    `adapters` names one per prompt (models.BASE for the plain model): PEFT routes each row through its own."""
    tokenizer, model = loaded.tokenizer, loaded.model
    names = None
    if loaded.adapters:
        names = adapters or [models.BASE] * len(prompts)
    elif adapters and any(name != models.BASE for name in adapters):
        raise ValueError("adapter names given but no adapter is loaded")
    if names and len(set(names)) == 1:
        # One model for the whole batch: switch the adapter on (or off) once, instead of PEFT's per-row routing,
        # which splits every layer's input by adapter at every step.
        with _only(model, names[0]):
            yield from decode(replace(loaded, adapters={}), prompts, params, None, cancel)
        return
    eos = model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    # The chat template already holds the special tokens; adding them again would double the BOS.
    batch = tokenizer(chat_texts(tokenizer, prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    yield from decode_tokens(
        model,
        batch["input_ids"],
        batch["attention_mask"],
        params.k,
        params.max_new_tokens,
        lambda logits: next_tokens(logits, params.temperature, params.top_p),
        stops,
        names,
        cancel,
    )


def decode_tokens(
    model,
    input_ids,
    attention_mask,
    k: int,
    max_new_tokens: int,
    next_tokens,
    stops: set,
    names: list[str] | None = None,
    cancel: threading.Event | None = None,
    keep_stop: bool = False,
):
    """decode's loop on tokens: left-padded prompts [prompts, length] with their mask, k samples each drawn by
    `next_tokens(logits) -> tokens`, until a token of `stops` (kept at the end of its row when `keep_stop`, as TRL
    keeps the end token of a completion) or max_new_tokens. Yields the rows after every step."""
    import torch

    mask = attention_mask.to(model.device)
    input_ids = input_ids.to(model.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = _kv_cache()
    with torch.inference_mode():
        output = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **({"adapter_names": names} if names else {}),
        )
        cache.batch_repeat_interleave(k)
        logits = output.logits[:, -1, :].repeat_interleave(k, 0)
        mask, positions = mask.repeat_interleave(k, 0), positions[:, -1:].repeat_interleave(k, 0)
        row_names = [name for name in names for _ in range(k)] if names else None
        rows = [[] for _ in range(len(input_ids) * k)]
        active = list(range(len(rows)))  # the row each line of the batch belongs to
        for step in range(max_new_tokens):
            if cancel is not None and cancel.is_set():
                return
            tokens = next_tokens(logits)
            keep = []
            for line, token in enumerate(tokens.tolist()):
                if token not in stops:
                    rows[active[line]].append(token)
                    keep.append(line)
                elif keep_stop:
                    rows[active[line]].append(token)
            yield rows
            if not keep or step == max_new_tokens - 1:
                return
            if len(keep) < len(active):
                lines = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(lines)
                mask, positions, tokens = mask[lines], positions[lines], tokens[lines]
                active = [active[i] for i in keep]
                row_names = [row_names[i] for i in keep] if row_names else None
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            positions = positions + 1
            output = model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                **({"adapter_names": row_names} if names else {}),
            )
            logits = output.logits[:, -1, :]


@contextmanager
def adapter_folded_in(model):
    """While sampling on a CPU (online RL's answers, an aligned model's answers in Generate): each LoRA layer's base
    weight swapped for a new tensor W + scaling * B @ A (in the base's dtype) and the adapter switched off, so a
    decode step is the plain model's products instead of each layer's product plus PEFT's five small operations
    (casting the input, A, B, scaling, adding), which cost more than the base products at a batch of 4 answers. The
    base's own tensors are put back untouched afterwards (nothing is merged into them, so no rounding builds up over
    the steps); the folded copies (the size of the adapted layers) live only while sampling. Elsewhere (a GPU, a
    model without a LoRA adapter, a LoRA variant such as DoRA) nothing changes."""
    import torch
    from peft.tuners.lora import Linear as LoraLinear

    layers = [m for m in model.modules() if isinstance(m, LoraLinear)] if hasattr(model, "disable_adapter") else []
    if (
        not layers
        or any(layer.base_layer.weight.device.type != "cpu" for layer in layers)
        or any(
            len(layer.active_adapters) != 1 or layer.active_adapters[0] in layer.lora_variant or layer.fan_in_fan_out
            for layer in layers
        )
    ):
        yield
        return
    kept = []
    try:
        with torch.no_grad():
            for layer in layers:
                name = layer.active_adapters[0]
                if name not in layer.lora_A:  # an adapter that leaves this layer alone
                    continue
                weight = layer.base_layer.weight
                delta = (layer.lora_B[name].weight @ layer.lora_A[name].weight) * layer.scaling[name]
                kept.append((weight, weight.data))
                weight.data = weight.data + delta.to(weight.dtype)
        with model.disable_adapter():
            yield
    finally:
        for weight, data in kept:
            weight.data = data


@contextmanager
def _only(model, name: str):
    """The PEFT model with only adapter `name` active (models.BASE: none) for the duration. So that each step is a
    plain forward pass instead of the base layer plus LoRA's extra products per layer, the adapter is folded in: on a
    CPU into copies of the weights (adapter_folded_in: the base's tensors are put back exactly, which merging and
    unmerging a bf16 weight would not do), on a GPU merged into the weights and taken out again after (no second copy
    of the weights in GPU memory); a 4-bit base cannot be merged exactly and keeps the adapter path."""
    if name == models.BASE:
        with model.disable_adapter():
            yield
        return
    previous = model.active_adapter
    model.set_adapter(name)
    on_cpu = next(model.parameters()).device.type == "cpu"
    merge = not on_cpu and not getattr(model, "is_loaded_in_4bit", False)
    if merge:
        model.merge_adapter()
    try:
        if on_cpu:
            with adapter_folded_in(model):
                yield
        else:
            yield
    finally:
        if merge:
            model.unmerge_adapter()
        model.set_adapter(previous)


def sample(
    loaded: models.Loaded,
    prompts: list[dict],
    params: GenerationParams,
    cancel=None,
    adapters: list[str] | None = None,
    on_step: Callable[[float], None] | None = None,
) -> list[list[str]] | None:
    """k sampled answers for each prompt, in one batch; None if `cancel` was set before it finished.
    `adapters`: one name per prompt from models.with_adapters (None: the plain base for every prompt).
    `on_step(fraction)`: called as the batch goes (the longest answer's share of max_new_tokens, at most every 16
    tokens); the batch may end before 1.0, when every answer has finished."""
    rows = None
    with models.in_use("generating answers"):
        for step, rows in enumerate(decode(loaded, prompts, params, adapters, cancel), start=1):
            if on_step is not None and step % 16 == 0 and step < params.max_new_tokens:
                on_step(step / params.max_new_tokens)
    if cancel is not None and cancel.is_set():
        return None
    rows = rows or [[] for _ in range(len(prompts) * params.k)]
    answers = [text.strip() for text in loaded.tokenizer.batch_decode(rows, skip_special_tokens=True)]
    return [answers[i * params.k : (i + 1) * params.k] for i in range(len(prompts))]


def stream(
    loaded: models.Loaded,
    prompts: list[dict],
    params: GenerationParams,
    adapters: list[str] | None = None,
    cancel: threading.Event | None = None,
):
    """One answer per prompt, all in one batch, yielding the texts so far after every new token. The batch runs in
    a thread of its own (which holds the model), so a page can stream it."""
    params = replace(params, k=1)
    steps, failure = queue.Queue(), []

    def run():
        try:
            with models.in_use("answering a chat turn"):
                for rows in decode(loaded, prompts, params, adapters, cancel):
                    steps.put([list(row) for row in rows])
        except BaseException as error:  # shown to the caller, not lost in a thread
            failure.append(error)
        finally:
            steps.put(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    tokenizer = loaded.tokenizer
    while (rows := steps.get()) is not None:
        yield [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]
    thread.join()
    if failure:
        raise failure[0]
