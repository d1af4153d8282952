import json
import threading

import pytest

from studio.data.candidates import candidates_table, generate_candidates, main
from studio.data.prompts import get_prompts, install_builtin_sets
from studio.inference import models
from studio.inference.decode import GenerationParams, sample
from tests.conftest import table_counts

FAST = dict(max_new_tokens=12, batch_size=2)


@pytest.fixture
def bank(store):
    install_builtin_sets(store)
    return get_prompts(store, "bank", limit=5)


def responses(store):
    return store.query("SELECT prompt_id, model, adapter, text, params FROM responses ORDER BY id")


def test_k_candidates_per_prompt_saved_with_their_parameters(store, bank):
    params = GenerationParams(k=3, temperature=0.9, top_p=0.95, seed=7, **FAST)
    result = generate_candidates(store, "embedded", bank[:3], params)
    assert (result.prompts_done, result.responses_added, result.cancelled, result.seed) == (3, 9, False, 7)
    rows = responses(store)
    assert len(rows) == 9
    assert {r["prompt_id"] for r in rows} == {p["id"] for p in bank[:3]}
    for row in rows:
        assert row["model"] == "embedded" and row["adapter"] is None and row["text"].strip()
        assert json.loads(row["params"]) == {"k": 3, "temperature": 0.9, "top_p": 0.95, "max_new_tokens": 12, "seed": 7}
    table = candidates_table(store, "bank")
    assert [(r[0], r[2]) for r in table] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3)]


def test_same_seed_repeats_and_generating_again_adds_candidates(store, bank):
    params = GenerationParams(k=2, seed=11, **FAST)
    generate_candidates(store, "embedded", bank[:2], params)
    generate_candidates(store, "embedded", bank[:2], params)
    rows = responses(store)
    assert len(rows) == 8
    first, second = [sorted((r["prompt_id"], r["text"]) for r in rows[i : i + 4]) for i in (0, 4)]
    assert first == second
    # The default seed (-1) draws a new one each run and saves it.
    seeds = {generate_candidates(store, "embedded", bank[:1], GenerationParams(k=1, **FAST)).seed for _ in range(2)}
    assert len(seeds) == 2 and all(s >= 0 for s in seeds)
    assert len(responses(store)) == 10


def test_cancel_keeps_the_finished_prompts(store, bank):
    cancel = threading.Event()

    def on_progress(done, total):
        if done >= 2:  # the first batch of 2 is saved: cancel now
            cancel.set()

    result = generate_candidates(
        store, "embedded", bank, GenerationParams(k=2, **FAST), cancel=cancel, on_progress=on_progress
    )
    assert (result.prompts_done, result.prompts_total, result.responses_added, result.cancelled) == (2, 5, 4, True)
    assert len(responses(store)) == 4


def test_cancel_during_a_batch_drops_that_batch():
    loaded = models.load("embedded")
    cancel = threading.Event()
    cancel.set()
    prompts = [{"text": "Tell me a long story.", "system": ""}]
    assert sample(loaded, prompts, GenerationParams(k=2, max_new_tokens=200), cancel) is None


def test_batches_mix_prompts_of_different_lengths_correctly():
    # Left padding: a short prompt batched with a long one must answer its own question.
    loaded = models.load("embedded")
    prompts = [
        {"text": "What is the capital of France? Answer in one word.", "system": ""},
        {
            "text": "Please explain, in a lot of detail and with many examples, " * 6 + "what is 2 + 2?",
            "system": "You are a helpful assistant.",
        },
    ]
    answers = sample(loaded, prompts, GenerationParams(k=2, temperature=0.1, max_new_tokens=20))
    assert len(answers) == 2 and all(len(a) == 2 for a in answers)
    assert all("Paris" in a for a in answers[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k \\(candidates per prompt\\) must be between 1 and 8"),
        ({"k": 9}, "between 1 and 8"),
        ({"temperature": 0}, "temperature must be above 0"),
        ({"top_p": 1.5}, "top_p must be above 0 and at most 1"),
        ({"max_new_tokens": 0}, "max new tokens"),
        ({"seed": -2}, "seed must be -1"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationParams(**kwargs)


def test_unknown_model_stores_nothing(store, bank):
    before = table_counts(store)
    with pytest.raises(models.ModelError, match="Unknown model"):
        generate_candidates(store, "not a model", bank, GenerationParams(**FAST))
    assert table_counts(store) == before


def test_command_line(studio_home, capsys):
    assert (
        main(["--prompts", "helpful_harmless", "--limit", "2", "--k", "2", "--max-new-tokens", "8", "--seed", "3"]) == 0
    )
    assert "Saved 4 candidates for 2 prompts of 'helpful_harmless' from embedded (seed 3)" in capsys.readouterr().out
    assert main(["--prompts", "nope"]) == 2
    assert "error: No prompt set named 'nope'" in capsys.readouterr().err
    assert main(["--k", "12"]) == 2
    assert "k (candidates per prompt) must be between 1 and 8" in capsys.readouterr().err


def test_the_decode_loop_follows_the_model_token_by_token(bank):
    """The studio's loop (a cache written in place, each prompt read once, rows of different lengths padded on the
    left, finished rows leaving the batch) taken greedily (top_p so small that only the likeliest token is kept):
    every token it picked is the one the model, given the prompt alone and the answer so far in one plain forward
    pass without any cache, ranks first (up to float noise), and an answer ends only at an end token or the limit."""
    from dataclasses import replace

    import torch
    from transformers import AutoModelForCausalLM

    from studio.inference.decode import chat_texts, decode

    # The loop's logic, checked in float32: the app's copy computes in bf16 on a CPU with AMX, where the cached and
    # the plain pass differ by bf16's step at these logits (0.06 at 32), far above this check's 1e-3.
    loaded = models.load("embedded")
    model = AutoModelForCausalLM.from_pretrained(loaded.path, dtype=torch.float32).eval()
    loaded = replace(loaded, model=model, adapters={})
    tokenizer = loaded.tokenizer
    params = GenerationParams(k=2, top_p=0.001, max_new_tokens=40, seed=5).seeded()
    rows = None
    for rows in decode(loaded, bank[:4], params):
        pass
    assert len(rows) == 8 and rows[0] == rows[1]  # greedy: both samples of a prompt agree
    for index, prompt in enumerate(bank[:4]):
        answer = rows[2 * index]
        ids = tokenizer(chat_texts(tokenizer, [prompt]), return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(input_ids=torch.cat([ids, torch.tensor([answer])], dim=1)).logits[0, ids.shape[1] - 1 :]
        chosen = logits[torch.arange(len(answer)), torch.tensor(answer)]
        assert (logits[: len(answer)].max(-1).values - chosen).max() < 1e-3
        if len(answer) < params.max_new_tokens:
            assert logits[len(answer)].argmax().item() in (tokenizer.eos_token_id, model.generation_config.eos_token_id)


def test_progress_moves_within_a_batch(store, bank):
    """All prompts in one batch: the progress still moves while it runs, not only when it ends."""
    seen = []
    generate_candidates(
        store,
        "embedded",
        bank[:2],
        GenerationParams(k=2, max_new_tokens=48, seed=1, batch_size=8),
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[0] == (0, 2) and seen[-1] == (2, 2)
    within = [done for done, _ in seen[1:-1]]
    assert within and all(0 < done < 2 for done in within) and within == sorted(within)
