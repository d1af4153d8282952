"""Judges that rank the candidates before people do: the prompt set's rubric, or an LLM judge (any chat model, in
process or on an inference server, asked which of two answers is better, every pair asked in both orders so that the
judge's taste for the first or second place cancels out).

A judge's ranking is stored under the judge's own name (`judge:rubric:<set>`, `judge:llm:<model>`, annotator kind
`judge`), never as a person's. The Rank tab shows it as a suggestion; a person who accepts it unchanged saves their
own ranking with `suggested_by` naming the judge. Training pairs leave judges out unless asked to count them, and
`agreement` says how often people agree with each judge, so the team knows when to trust it.
"""

import contextlib
import itertools
import threading

from studio.core import access
from studio.core.store import Store
from studio.data import rubric
from studio.data.prompts import get_prompts
from studio.data.ranking import JUDGE_PREFIX, annotator_id, current_rankings, insert_ranking
from studio.inference import models, servers

LLM_PROMPT = """You judge answers of an assistant. The question:
{question}

Answer A:
{answer_a}

Answer B:
{answer_b}

Which answer is better: more helpful, more honest, more harmless? Reply with one letter, A or B."""


class JudgeError(ValueError):
    """A judge that cannot run; the message says what to fix."""


def judge_models(store: Store) -> list[str]:
    """The models the LLM-judge lists offer (Rank's pre-ranking, Train's reward): the embedded one, then every served
    one (read again when a list is opened, for servers added since the page loaded)."""
    return [models.EMBEDDED, *servers.served_references(store)]


def judge_name(kind: str, set_name: str, model: str = models.EMBEDDED) -> str:
    return f"{JUDGE_PREFIX}rubric:{set_name}" if kind == "rubric" else f"{JUDGE_PREFIX}llm:{model}"


def llm_preferences(
    loaded: models.Loaded, question: str, answers: list[str], template: str = LLM_PROMPT
) -> list[float]:
    """Each answer's score: the sum over the others of the judge's probability that it is the better one, averaged
    over both orders (A/B then B/A); read from the next-token logits of 'A' and 'B', no sampling."""
    import torch

    _check_template(template)
    tokenizer = loaded.tokenizer
    letters = [tokenizer.encode(letter, add_special_tokens=False)[0] for letter in ("A", "B")]
    pairs = list(itertools.permutations(range(len(answers)), 2))  # (i as A, j as B), both orders
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": template.format(question=question, answer_a=answers[i], answer_b=answers[j])}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for i, j in pairs
    ]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(loaded.model.device)
    model = loaded.model
    with torch.inference_mode():
        if hasattr(model, "disable_adapter") and getattr(model, "peft_config", None):
            with model.disable_adapter():  # the base model judges, whatever adapters are loaded on it
                logits = model(**batch).logits[:, -1, :]
        else:
            logits = model(**batch).logits[:, -1, :]
    first = torch.softmax(logits[:, letters].float(), dim=-1)[:, 0].tolist()  # P(A is better)
    return _scores(pairs, first, len(answers))


def served_preferences(served, question: str, answers: list[str], template: str = LLM_PROMPT) -> list[float]:
    """llm_preferences through an inference server: every ordered pair asked at once, P(A) from the server's
    log-probabilities of its next token where it returns them, else from the letter it answers."""
    _check_template(template)
    pairs = list(itertools.permutations(range(len(answers)), 2))
    asked = [
        [{"role": "user", "content": template.format(question=question, answer_a=answers[i], answer_b=answers[j])}]
        for i, j in pairs
    ]
    first = [servers.letter_preference(body) for body in served.chat_many(asked, **servers.ONE_TOKEN)]
    return _scores(pairs, first, len(answers))


def _scores(pairs: list[tuple[int, int]], first: list[float], count: int) -> list[float]:
    """Each answer's share of the judge's preference over all ordered pairs (P(A) is `first`)."""
    scores = [0.0] * count
    for (i, j), p in zip(pairs, first):
        scores[i] += p / 2
        scores[j] += (1 - p) / 2
    return scores


def _check_template(template: str) -> None:
    if "{answer_a}" not in template or "{answer_b}" not in template or "{question}" not in template:
        raise JudgeError("The judge prompt needs {question}, {answer_a} and {answer_b} where they go.")


def judge_prompt(store: Store, set_name: str) -> str:
    """The LLM judge's prompt as last run on the set, else the default (LLM_PROMPT)."""
    text = store.get_text("judge_prompts", set_name)
    return LLM_PROMPT if text is None else text


def prerank(
    store: Store,
    set_name: str,
    kind: str = "rubric",
    model: str = models.EMBEDDED,
    template: str = LLM_PROMPT,
    limit: int = 0,
    cancel: threading.Event | None = None,
    on_progress=None,
    by: str | None = None,
) -> tuple[str, int]:
    """Rank every prompt of the set that has 2+ candidates with the judge (`rubric` or `llm`); returns the judge's
    name and how many prompts it ranked. Run again after new candidates: its rankings are replaced. The LLM judge's
    prompt is kept for the set (judge_prompt), with who ran it (`by`, who must be a lead: its rankings are shown to
    every annotator)."""
    access.check_lead(by, "run a judge")
    name = judge_name(kind, set_name, model)
    prompts = get_prompts(store, set_name, limit)
    candidates = {}
    for prompt in prompts:
        rows = store.query("SELECT id, text FROM responses WHERE prompt_id = ? ORDER BY id", (prompt["id"],))
        if len(rows) >= 2:
            candidates[prompt["id"]] = rows
    if kind == "rubric":
        checks = rubric.for_set(store, set_name)
        if checks is None:
            raise JudgeError(
                f"The prompt set {set_name!r} has no rubric: write one (Rank tab, Rubric), or use the LLM judge."
            )
        score = lambda prompt, answers: checks.score_many([prompt["text"]] * len(answers), answers)  # noqa: E731
        loaded = None
    elif kind == "llm":
        _check_template(template)
        store.set_text("judge_prompts", set_name, template, by)
        if servers.is_served(model):
            served, loaded = servers.client(store, model), None
            score = lambda prompt, answers: served_preferences(served, prompt["text"], answers, template)  # noqa: E731
        else:
            loaded = models.load(model)
            score = lambda prompt, answers: llm_preferences(loaded, prompt["text"], answers, template)  # noqa: E731
    else:
        raise JudgeError(f"Unknown judge {kind!r}: rubric or llm.")
    done = 0
    work = [p for p in prompts if p["id"] in candidates]
    with models.in_use(f"judging {set_name}") if loaded else contextlib.nullcontext():
        for prompt in work:
            if cancel is not None and cancel.is_set():
                break
            rows = candidates[prompt["id"]]
            tiers = rubric.rank_scores(score(prompt, [r["text"] for r in rows]))
            with store.tx() as db:
                annotator_id(db, name, "judge")
                insert_ranking(
                    db,
                    name,
                    prompt["id"],
                    [[rows[i]["id"] for i in tier] for tier in tiers],
                    source="judge",
                    kind="judge",
                )
            done += 1
            if on_progress:
                on_progress(done, len(work))
    return name, done


def agreement(store: Store, set_name: str) -> list[dict]:
    """Per judge of the set: how many people's rankings can be compared with its own, the share identical to it,
    the share of pairwise judgements that agree, and how many people accepted its suggestion unchanged."""
    rankings = current_rankings(store, set_name, include_imports=False, include_judges=True)
    judged = {}
    for r in rankings:
        if r["annotator"].startswith(JUDGE_PREFIX):
            judged.setdefault(r["annotator"], {})[r["prompt_id"]] = r["tiers"]
    accepted = {
        row["suggested_by"]: row["n"]
        for row in store.query(
            "SELECT r.suggested_by, COUNT(*) AS n FROM rankings r JOIN prompts p ON p.id = r.prompt_id "
            "JOIN prompt_sets s ON s.id = p.prompt_set_id WHERE s.name = ? AND r.status = 'current' "
            "AND r.suggested_by IS NOT NULL GROUP BY r.suggested_by",
            (set_name,),
        )
    }
    result = []
    for judge, by_prompt in sorted(judged.items()):
        same = compared = agree = pairs = 0
        for r in rankings:
            theirs = by_prompt.get(r["prompt_id"])
            if r["annotator"].startswith(JUDGE_PREFIX) or theirs is None:
                continue
            compared += 1
            same += _normal(r["tiers"]) == _normal(theirs)
            a = {rid: i for i, tier in enumerate(r["tiers"]) for rid in tier}
            b = {rid: i for i, tier in enumerate(theirs) for rid in tier}
            for x, y in itertools.combinations(sorted(a.keys() & b.keys()), 2):
                pairs += 1
                agree += (a[x] > a[y]) - (a[x] < a[y]) == (b[x] > b[y]) - (b[x] < b[y])
        result.append(
            {
                "judge": judge,
                "prompts": len(by_prompt),
                "compared": compared,
                "identical": same / compared if compared else None,
                "pairwise": agree / pairs if pairs else None,
                "accepted": accepted.get(judge.removeprefix(JUDGE_PREFIX), 0) + accepted.get(judge, 0),
            }
        )
    return result


def _normal(tiers: list[list[int]]) -> list[list[int]]:
    return [sorted(tier) for tier in tiers]
