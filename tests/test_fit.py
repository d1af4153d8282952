"""The fit check: a training job's estimated peak memory against what jobs measure (result.json's peak_memory_bytes),
at settings other than those its two measured constants came from; and its line for the Train tab."""

import json
import subprocess
import sys

import pytest

from studio.core.paths import ROOT
from studio.inference import models
from studio.training import fit, launch, recipes

WORDS = "the card is blocked please call us now and we will help you today".split()


def text(words: int, start: int) -> str:
    return " ".join(WORDS[(i + start) % len(WORDS)] for i in range(words))


def rows(answer_words: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"question {i}: " + text(40, i)}],
            "chosen": [{"role": "assistant", "content": text(answer_words, i)}],
            "rejected": [{"role": "assistant", "content": text(answer_words // 2, i + 3)}],
        }
        for i in range(8)
    ]


def measured_and_estimated(store, answer_words: int, settings: dict) -> tuple[float, float]:
    data = rows(answer_words)
    settings = {**recipes.studio_defaults("dpo"), "max_steps": 1, "save_steps": 1000, "max_length": 1024, **settings}
    job_id = launch.create(store, "dpo", settings, data_label="fit", data_rows=data, data_info={})
    from studio.core import jobs

    folder = jobs.get(store, job_id)["folder"]
    subprocess.run(
        [sys.executable, "-m", "studio.training.train", f"{folder}/recipe.yaml"],
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(open(f"{folder}/result.json").read())
    assert result["status"] == "finished", result
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.resolve(models.EMBEDDED))
    bf16 = models.cpu_bf16()
    found = fit.estimate(fit.shape_of(models.EMBEDDED), settings, "dpo", fit.longest_row(data, tokenizer), "cpu", bf16)
    return result["peak_memory_bytes"], found.total


def test_the_estimate_is_within_a_quarter_of_a_measured_peak(store):
    measured, estimated = measured_and_estimated(
        store, 200, {"per_device_train_batch_size": 1, "gradient_checkpointing": False}
    )
    assert abs(estimated / measured - 1) <= 0.25, (measured / 2**30, estimated / 2**30)


@pytest.mark.slow
@pytest.mark.parametrize(
    "answer_words, settings",
    [
        (250, {"per_device_train_batch_size": 6, "gradient_checkpointing": True, "checkpoint_share": 1.0}),
        (150, {"per_device_train_batch_size": 4, "gradient_checkpointing": False}),
        (300, {"per_device_train_batch_size": 2, "gradient_checkpointing": True, "checkpoint_share": 0.5}),
    ],
)
def test_the_estimate_is_within_a_quarter_of_measured_peaks(store, answer_words, settings):
    measured, estimated = measured_and_estimated(store, answer_words, settings)
    assert abs(estimated / measured - 1) <= 0.25, (measured / 2**30, estimated / 2**30)


def test_an_8b_model_says_what_to_change_when_it_does_not_fit():
    """Llama 3 8B's shape: 4-bit weights about 7.3 GiB (the embeddings and head in float32), bf16 about 15 GiB; a 24 GB
    card fits the first at the shipped recipe's settings, and the line for the second names 4-bit first."""
    llama = fit.Shape(
        hidden=4096, layers=32, intermediate=14336, vocab=128256, heads=32, kv_heads=8, head_dim=128, tied=False
    )
    settings = {"per_device_train_batch_size": 1, "max_length": 1024, "lora_r": 16, "gradient_checkpointing": True}
    qlora = fit.estimate(llama, {**settings, "load_in_4bit": True}, "dpo", 1024, "cuda", True)
    assert 6.8 < qlora.parts["weights"] / 2**30 < 7.8
    qlora.free = 22 * 2**30
    assert qlora.fits and "fits the 22.0 GiB free" in qlora.line()
    full = fit.estimate(llama, settings, "dpo", 1024, "cuda", True)
    assert 14.5 < full.parts["weights"] / 2**30 < 15.5
    full.free = 12 * 2**30
    assert not full.fits and "does NOT fit" in full.line() and "Tick 4-bit QLoRA" in full.line()


def test_the_train_tab_line_comes_from_the_engine(store):
    from tests.helpers import clear_cut_set

    clear_cut_set(store)
    line = launch.fit_check(store, "dpo", {"model": "embedded", "per_device_train_batch_size": 2}, "polite")
    assert line.startswith("Estimated peak") and "GiB of RAM" in line and "free" in line
