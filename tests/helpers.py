"""Small builders shared by the tests: prompt sets with hand-written candidates (no model needed), training jobs,
and the Wilson interval written out."""

import math
import time

from studio.core import jobs
from studio.data.preferences import training_snapshot
from studio.data.prompts import ParsedPrompts, add_prompt_set, get_prompts
from studio.training import launch, recipes


def make_set(store, name="s", prompts=2, candidates=3, system="Be kind."):
    """A prompt set whose prompts each have `candidates` responses 'p<i>-c<j>'; returns [(prompt_id, [ids])]."""
    add_prompt_set(store, name, ParsedPrompts(rows=[(f"question {i}", system) for i in range(prompts)]), "test")
    made = []
    with store.tx() as db:
        for prompt in get_prompts(store, name):
            ids = [
                db.execute(
                    "INSERT INTO responses (prompt_id, model, text, params) VALUES (?, 'm', ?, '{}')",
                    (prompt["id"], f"{prompt['text']} answer {j}"),
                ).lastrowid
                for j in range(candidates)
            ]
            made.append((prompt["id"], ids))
    return made


QUESTIONS = [
    "How do I reset my card PIN?",
    "Where can I see my statement?",
    "Can I open a joint account?",
    "How do I report a lost card?",
    "What is my IBAN?",
    "How do I change my address?",
    "Can I freeze my card?",
    "How long do transfers take?",
]
POLITE = "Happy to help! You can do that in the app under Settings. Let me know if you need anything else."
RUDE = "Figure it out yourself, idiot. Stop wasting my time."


def clear_cut_rows(n=8):
    """TRL conversational preference rows where the chosen answer is plainly better."""
    return [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": POLITE}],
            "rejected": [{"role": "assistant", "content": RUDE}],
        }
        for q in QUESTIONS[:n]
    ]


def clear_cut_set(store, name="polite", n=8, annotator="anna"):
    """The same pairs as a studio prompt set with candidates and one annotator's rankings."""
    from studio.data.ranking import submit

    add_prompt_set(store, name, ParsedPrompts(rows=[(q, "") for q in QUESTIONS[:n]]), "test")
    for prompt in get_prompts(store, name):
        with store.tx() as db:
            ids = [
                db.execute(
                    "INSERT INTO responses (prompt_id, model, text, params) VALUES (?, 'm', ?, '{}')",
                    (prompt["id"], text),
                ).lastrowid
                for text in (RUDE, POLITE)
            ]
        submit(store, annotator, prompt["id"], [[ids[1]], [ids[0]]])


POLITE_WORDS = ("happy", "glad", "thank", "please", "welcome", "help", "sure", "certainly")


def polite_reward(prompts, completions, **kwargs):
    """A reward that plainly separates answers: +1 per polite word, minus a little per word beyond 12
    (short, friendly answers win). Used by the RL tests as `tests.helpers:polite_reward`."""
    scores = []
    for completion in completions:
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        words = text.lower().split()
        scores.append(sum(any(w.startswith(p) for p in POLITE_WORDS) for w in words) - 0.1 * max(0, len(words) - 12))
    return scores


def mentions_app(prompt, answer):
    """A rubric function check used by the tests: does the answer point to the app?"""
    return "app" in answer.lower()


SETTINGS = {
    "per_device_train_batch_size": 2,
    "learning_rate": 5e-4,
    "max_length": 128,
    "save_steps": 1000,
    "gradient_checkpointing": False,
    **recipes.studio_defaults("dpo"),
}


def wait_for(predicate, manager, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        manager.refresh()
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("timed out")


def new_job(store, steps, **extra):
    rows, info = training_snapshot(store, "polite")
    return launch.create(
        store,
        "dpo",
        {**SETTINGS, "max_steps": steps, **extra},
        data_label="polite (best vs worst)",
        data_rows=rows,
        data_info=info,
    )


def steps_logged(job):
    return [m["step"] for m in jobs.metrics(job) if "loss" in m]


def wilson(k, n, z=1.959963984540054):
    """The Wilson score interval written out, to check scipy's against."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def random_lora(folder):
    """A LoRA adapter for the embedded model with random, non-zero weights (PEFT's init_lora_weights=False): an
    "aligned model" that differs from the base, without training one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.inference.models import embedded_folder

    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(embedded_folder()),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    lora.save_pretrained(folder)
    return folder


def gated_check(prompt, answer):
    """A rubric check (`tests.helpers:gated_check`) that stands for a slow score: in the process it runs in, it
    writes STUDIO_TEST_GATE/started and waits (at most 90 s) for STUDIO_TEST_GATE/release before scoring 1."""
    import os
    from pathlib import Path

    gate = os.environ.get("STUDIO_TEST_GATE")
    if gate:
        (Path(gate) / "started").touch()
        deadline = time.monotonic() + 90
        while not (Path(gate) / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return 1.0
