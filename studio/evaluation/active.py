"""Active selection: which prompts to rank first so that each ranking teaches the model most.

A priority is computed once per prompt (lower first) and the queue follows it while the set's order is active:
- `job:N` (a finished DPO, SFT or RL job): the aligned model's implicit reward of each candidate, log pi(y|x) under
  the adapter minus under the base (DPO's reward, up to beta); priority = the margin between its two best
  candidates. A small margin: the model cannot yet tell which answer is better.
- `reward:job N` (a finished reward model): the same margin from its scores.
- `disagreement`: people's and judges' rankings of the prompt; priority = minus the share of pairwise judgements
  that go against the majority. Where they disagree, another view helps most.
"""

import threading

from studio.core import access, jobs
from studio.core.store import Store
from studio.data import scorers, team
from studio.data.prompts import get_prompts
from studio.data.ranking import current_rankings
from studio.inference import chat, models
from studio.inference.decode import prompt_messages

DISAGREEMENT = "disagreement"


class ActiveError(ValueError):
    """An order that cannot be computed; the message says what to fix."""


def implicit_rewards(loaded: models.Loaded, adapter: str, prompt: dict, answers: list[str]) -> list[float]:
    """log pi_adapter(answer | prompt) - log pi_base(answer | prompt) for each answer, in one batch per side."""
    import torch

    tokenizer = loaded.tokenizer
    prefix = tokenizer.apply_chat_template(prompt_messages(prompt), tokenize=False, add_generation_prompt=True)
    start = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    tokenizer.padding_side = "right"
    batch = tokenizer(
        [prefix + a + (tokenizer.eos_token or "") for a in answers],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    ).to(loaded.model.device)
    targets = batch["input_ids"][:, 1:]
    mask = batch["attention_mask"][:, 1:].clone()
    mask[:, : start - 1] = 0  # the prompt's tokens are given, not scored
    sums = {}
    with torch.inference_mode():
        for name in (models.BASE, adapter):
            logits = loaded.model(**batch, adapter_names=[name] * len(answers)).logits[:, :-1].float()
            logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
            sums[name] = (logp * mask).sum(dim=1)
    return (sums[adapter] - sums[models.BASE]).tolist()


def _margin(scores: list[float]) -> float:
    top = sorted(scores, reverse=True)
    return top[0] - top[1]


def _disagreement(store: Store, set_name: str) -> dict[int, float]:
    votes: dict[tuple, list[str]] = {}
    for _, task, label in team.judgements(
        current_rankings(store, set_name, include_imports=False, include_judges=True)
    ):
        votes.setdefault(task, []).append(label)
    against: dict[int, list[float]] = {}
    for (prompt, _, _), labels in votes.items():
        if len(labels) > 1:
            against.setdefault(prompt, []).append(1 - max(labels.count(x) for x in set(labels)) / len(labels))
    return {prompt: -sum(shares) / len(shares) for prompt, shares in against.items()}


def set_active_order(
    store: Store,
    set_name: str,
    source: str | None,
    by: str | None = None,
    cancel: threading.Event | None = None,
    on_progress=None,
) -> int:
    """Compute the priorities of the set's prompts from `source` (`job:N`, `reward:job N` or `disagreement`) and
    make the queue follow them; None goes back to the set's order. Returns how many prompts got a priority."""
    access.check_lead(by, "choose the queue's order")
    prompts = get_prompts(store, set_name)
    if source is None:
        with store.tx() as db:
            db.execute("UPDATE prompt_sets SET queue_order = NULL WHERE name = ?", (set_name,))
        return 0
    texts = {
        p["id"]: [
            r["text"] for r in store.query("SELECT text FROM responses WHERE prompt_id = ? ORDER BY id", (p["id"],))
        ]
        for p in prompts
    }
    work = [p for p in prompts if len(texts[p["id"]]) >= 2]
    if source == DISAGREEMENT:
        found = _disagreement(store, set_name)
        priorities = {p["id"]: found.get(p["id"], 0.0) for p in work}
    elif source.startswith(scorers.REWARD_KEY) or source.startswith(jobs.JOB_KEY):
        if source.startswith(jobs.JOB_KEY):
            try:
                choice = chat.pick(store, source)
            except models.ModelError as error:
                raise ActiveError(str(error)) from None
            loaded, (name,) = chat.load_together([choice])
            score = lambda prompt, answers: implicit_rewards(loaded, name, prompt, answers)  # noqa: E731
        else:
            scorer = scorers.get(store, source, set_name)
            score = lambda prompt, answers: scorer.score([prompt] * len(answers), answers)  # noqa: E731
        priorities = {}
        with models.in_use(f"ordering {set_name} by {source}"):
            for prompt in work:
                if cancel is not None and cancel.is_set():
                    break
                priorities[prompt["id"]] = _margin(score(prompt, texts[prompt["id"]]))
                if on_progress:
                    on_progress(len(priorities), len(work))
    else:
        raise ActiveError(f"Unknown order {source!r}: job:N, reward:job N or {DISAGREEMENT}.")
    with store.tx() as db:
        db.execute(
            "DELETE FROM priorities WHERE prompt_id IN (SELECT p.id FROM prompts p JOIN prompt_sets s "
            "ON s.id = p.prompt_set_id WHERE s.name = ?)",
            (set_name,),
        )
        db.executemany("INSERT INTO priorities (prompt_id, score) VALUES (?, ?)", list(priorities.items()))
        db.execute("UPDATE prompt_sets SET queue_order = ? WHERE name = ?", (source, set_name))
    return len(priorities)


def active_order(store: Store, set_name: str) -> str | None:
    """What the set's queue is ordered by now (None: the set's own order)."""
    rows = store.query("SELECT queue_order FROM prompt_sets WHERE name = ?", (set_name,))
    return rows[0]["queue_order"] if rows else None


def describe(store: Store, set_name: str) -> str:
    """The order in use, in words for the Rank tab."""
    source = active_order(store, set_name)
    if source is None:
        return "Queue order: the set's own order" + (
            " (prompts below the overlap target first)." if team.get_target(store, set_name) else "."
        )
    if source == DISAGREEMENT:
        return "Queue order: where annotators and judges disagree most, first."
    return f"Queue order: where {source} is least sure which candidate is better (smallest margin), first."
