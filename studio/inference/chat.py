"""Which models can answer (base models, finished jobs' adapters, adapter folders, Hub adapters) and chatting with
them: the Compare tab's side by side (one copy of the base weights, the adapter on for one row of the batch and off
for the other) and the `chat` API endpoint."""

import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from studio.core import jobs
from studio.core.store import Store
from studio.inference import models, servers
from studio.inference.decode import GenerationParams, prompt_messages, sample, stream


@dataclass(frozen=True)
class Choice:
    """A model that can answer: a base model, or a LoRA adapter on its base."""

    label: str
    model: str  # base model reference: embedded, Hub id, folder
    adapter: str | None = None  # adapter folder (or Hub id as given), None for the plain base
    job_id: int | None = None


def options(store: Store) -> list[tuple[str, str]]:
    """(label, key) for the dropdowns: each base model in use, then every finished job that has a chat adapter."""
    finished = jobs.finished(store, "chat")
    bases = [models.EMBEDDED] + sorted({j["base_model"] for j in finished} - {models.EMBEDDED})
    served = servers.served_references(store)
    return (
        [(f"base: {b}", f"base:{b}") for b in bases]
        + [(f"served: {r}", f"base:{r}") for r in served]
        + [
            (f"job {j['id']}: {j['method']} on {j['base_model']} ({j['data']})", f"{jobs.JOB_KEY}{j['id']}")
            for j in finished
        ]
    )


def default_keys(options_: list[tuple[str, str]], current: list[str] | None = None) -> list[str]:
    """The models an evaluation starts with: the current choice where it still exists (typed adapters kept), else
    the first base and the newest job, else nothing (with no job there is nothing to compare yet)."""
    keys = [k for _, k in options_]
    kept = [k for k in current or [] if k in keys or not k.startswith(("base:", jobs.JOB_KEY))]
    if kept:
        return kept
    trained = [k for k in keys if k.startswith(jobs.JOB_KEY)]
    return [keys[0], trained[0]] if trained else []


def keyed_model(key: str | None) -> str:
    """The model a model-list key names, enough to tell a served one (base:server:<name>/<model>) from this
    machine's (a base model, a job, an adapter folder or Hub id)."""
    return (key or "").removeprefix("base:")


def pick(store: Store, key: str) -> Choice:
    """The Choice for a dropdown key, or for a typed adapter folder / Hub adapter id; ModelError says what is wrong."""
    key = (key or "").strip()
    if key.startswith("base:"):
        model = key.removeprefix("base:")
        if servers.is_served(model):
            servers.client(store, model)  # refuses an unknown connection with its message
            return Choice(f"served ({model})", model)
        models.resolve(model)  # refuses an unknown reference with its message
        return Choice(f"base ({model})", model)
    if key.startswith(jobs.JOB_KEY):
        try:
            job = jobs.referenced(store, key)
        except jobs.JobError:
            raise models.ModelError(f"There is no job {key.removeprefix(jobs.JOB_KEY)!r}.") from None
        try:
            folder = jobs.finished_folder(store, job["id"], "chat")
        except jobs.JobError as error:
            raise models.ModelError(str(error)) from None
        return Choice(f"job {job['id']} ({job['method']})", job["base_model"], str(folder), job["id"])
    if not key:
        raise models.ModelError("Choose a model, or type an adapter folder or a Hub adapter id.")
    folder = models.adapter_folder(key)
    return Choice(key, models.adapter_base(folder), str(folder))


def load_together(choices: list[Choice]) -> tuple[models.Loaded, list[str]]:
    """The shared base loaded once, with every choice's adapter on it; ModelError if they need different bases."""
    base = choices[0].model
    for choice in choices[1:]:
        if not models.same_model(choice.model, base):
            raise models.ModelError(
                f"{choice.label} is built on {choice.model}, {choices[0].label} on {base}: "
                "compare models that share one base."
            )
    loaded = models.load(base)
    return loaded, models.with_adapters(loaded, [c.adapter for c in choices])


def answerers(store: Store, choices: list[Choice]) -> list:
    """Per choice, a function (prompts, params, cancel) -> params.k answers per prompt, or None once cancelled.
    The in-process choices share one copy of their base (load_together, before anything runs: a model that cannot
    load fails here); a served one asks its inference server, many prompts at a time."""
    local = [c for c in choices if not servers.is_served(c.model)]
    loaded, names = load_together(local) if local else (None, [])
    names = dict(zip(local, names))

    def in_process(name):
        return lambda prompts, params, cancel: sample(loaded, prompts, params, cancel, [name] * len(prompts))

    def served(client):
        def answer(prompts, params, cancel):
            texts = [None] * len(prompts)
            for index, answers, _ in servers.answers(client, [prompt_messages(p) for p in prompts], params, cancel):
                texts[index] = answers
            return None if None in texts else texts

        return answer

    return [
        served(servers.client(store, c.model)) if servers.is_served(c.model) else in_process(names[c]) for c in choices
    ]


def prompt_from(message: str, system: str, history: list[dict]) -> dict:
    context = [
        {"role": m["role"], "content": text_of(m["content"])} for m in history if m["role"] in ("user", "assistant")
    ]
    return {"text": message, "system": system or "", "context": context}


def text_of(content) -> str:
    """Gradio may hand a message's content back as a list of parts; the model needs the text."""
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)


def side_by_side(
    aligned: Choice,
    message: str,
    system: str,
    histories: tuple[list, list],
    params: GenerationParams,
    cancel=None,
    base: Choice | None = None,
    store: Store | None = None,
):
    """Stream two models' answers to `message` at once, each continuing its own conversation, with the same sampling
    settings and seed: `base` (default: the base model of `aligned`, which must then be an adapter) and `aligned`.
    In-process sides share one copy of the base weights; a served side (`store` finds its server) streams as its
    server writes. Yields (base text, aligned text, seed)."""
    if base is None:
        if aligned.adapter is None:
            raise models.ModelError(
                "Choose an adapter (a finished job, a folder or a Hub id) to compare with its base, or choose the "
                "model to compare it with."
            )
        base = Choice(f"base ({aligned.model})", aligned.model)
    if not (message or "").strip():
        raise models.ModelError("Type a message first.")
    sides = (base, aligned)
    served = {i: servers.client(store, c.model) for i, c in enumerate(sides) if servers.is_served(c.model)}
    local = [i for i in (0, 1) if i not in served]
    loaded, names = load_together([sides[i] for i in local]) if local else (None, [])
    params = params.seeded()
    prompts = [prompt_from(message, system, histories[0]), prompt_from(message, system, histories[1])]
    texts = ["", ""]
    written = {i: "" for i in served}  # each served side's text so far, as its server streams it
    # Set on Cancel, and whenever this generator ends (finished, failed, or closed by a page that went away): a
    # served side still streaming closes its connection at its next piece, and nothing here waits for it.
    ended = threading.Event()

    def follow(i: int, client) -> None:
        asked = client.chat_stream(
            prompt_messages(prompts[i]), cancel=ended, seed=params.seed, **servers.sampling(params)
        )
        for text in asked:
            written[i] = text

    pool = ThreadPoolExecutor(max_workers=2)
    following = [pool.submit(follow, i, client) for i, client in served.items()]
    try:
        if local:
            for rows in stream(loaded, [prompts[i] for i in local], params, names, cancel):
                texts = [rows[local.index(i)] if i in local else written.get(i, "") for i in (0, 1)]
                yield texts[0], texts[1], params.seed
        while following:  # the served sides still writing once the in-process rows are done (or without any)
            finished = not wait(following, timeout=0.1)[1]
            now = [written[i] if i in written else texts[i] for i in (0, 1)]
            if now != texts or finished:
                texts = now
                yield texts[0], texts[1], params.seed
            if cancel is not None and cancel.is_set():
                break
            if finished:
                for future in following:
                    future.result()  # a server that failed: its ServerError, after what both sides wrote
                break
    finally:
        ended.set()
        pool.shutdown(wait=False, cancel_futures=True)


def _served_reply(client, prompt: dict, params: GenerationParams) -> str:
    body = client.chat(prompt_messages(prompt), seed=params.seed, **servers.sampling(params))
    return body["choices"][0]["message"]["content"]


def reply(
    store: Store,
    key: str,
    message: str,
    system: str = "",
    history: list | None = None,
    params: GenerationParams | None = None,
) -> str:
    """One answer from one model (the API endpoint): base or adapter, with earlier turns as a message list."""
    choice = pick(store, key)
    if not (message or "").strip():
        raise models.ModelError("message is empty.")
    params = (params or GenerationParams()).seeded()
    if servers.is_served(choice.model):
        return _served_reply(servers.client(store, choice.model), prompt_from(message, system, history or []), params)
    loaded, names = load_together([choice])
    text = ""
    for texts in stream(loaded, [prompt_from(message, system, history or [])], params, names):
        text = texts[0]
    return text
