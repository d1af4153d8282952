import json

import pytest

from studio.data import preferences
from studio.data.preferences import (
    PreferenceError,
    dataset_card,
    export_preferences,
    import_file,
    preference_rows,
    push_preferences,
)
from studio.data.ranking import submit
from tests.conftest import table_counts
from tests.helpers import make_set


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_export_loads_with_datasets_and_trains_two_dpo_steps(store, tmp_path):
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from studio.inference.models import embedded_folder

    for prompt_id, ids in make_set(store, prompts=4, candidates=2):
        submit(store, "anna", prompt_id, [[ids[0]], [ids[1]]])
    out = export_preferences(store, "s", "best_worst", tmp_path / "out")
    dataset = load_dataset("json", data_files=str(out["jsonl"]), split="train")
    assert len(dataset) == 4
    assert dataset[0] == {
        "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "question 0"}],
        "chosen": [{"role": "assistant", "content": "question 0 answer 0"}],
        "rejected": [{"role": "assistant", "content": "question 0 answer 1"}],
    }
    assert load_dataset("parquet", data_files=str(out["parquet"]), split="train").to_list() == dataset.to_list()

    folder = embedded_folder()
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(folder),
        args=DPOConfig(
            output_dir=str(tmp_path / "dpo"),
            max_steps=2,
            per_device_train_batch_size=2,
            learning_rate=1e-3,
            logging_steps=1,
            report_to=[],
            bf16=False,
            use_cpu=True,
            gradient_checkpointing=False,
            save_strategy="no",
            max_length=128,
        ),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(folder),
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert trainer.state.global_step == 2
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)


def test_no_pairs_is_a_clear_error(store):
    prompt_id, ids = make_set(store, prompts=1)[0]
    submit(store, "anna", prompt_id, [ids])  # all tied
    with pytest.raises(PreferenceError, match="No preference pairs in 's' yet"):
        export_preferences(store, "s")


HH_CHOSEN = (
    "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a joke."
    "\n\nAssistant: Why did the chicken cross the road?"
)
HH_REJECTED = "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a joke.\n\nAssistant: No."


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"prompt": "Q?", "chosen": "good", "rejected": "bad"}, ("", [], "Q?", "good", "bad")),
        (
            {
                "prompt": [
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": "u1"},
                    {"role": "assistant", "content": "a1"},
                    {"role": "user", "content": "u2"},
                ],
                "chosen": [{"role": "assistant", "content": "good"}],
                "rejected": [{"role": "assistant", "content": "bad"}],
            },
            ("S", [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}], "u2", "good", "bad"),
        ),
        (
            {
                "chosen": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "good"}],
                "rejected": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "bad"}],
            },
            ("", [], "Q?", "good", "bad"),
        ),
        (
            {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},
            (
                "",
                [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello, how can I help?"}],
                "Tell me a joke.",
                "Why did the chicken cross the road?",
                "No.",
            ),
        ),
        ({"question": "Q?", "response_j": "good", "response_k": "bad"}, ("", [], "Q?", "good", "bad")),
        ({"instruction": "Q?", "chosen_response": "good", "rejected_response": "bad"}, ("", [], "Q?", "good", "bad")),
    ],
)
def test_each_import_format(row, expected):
    pair = preferences.parse_pair(row)
    assert (pair.system, pair.context, pair.text, pair.chosen, pair.rejected) == expected


def test_import_keeps_pairs_as_import_rankings_and_exports_them(store, tmp_path):
    path = write_jsonl(
        tmp_path / "hh.jsonl",
        [
            {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},
            {"prompt": "Q?", "chosen": "good", "rejected": "bad"},
            {"prompt": "Q?", "chosen": "better", "rejected": "bad"},  # a second pair for the same prompt
        ],
    )
    assert import_file(store, path) == {"pairs": 3, "prompts": 2, "prompt_set": "hh"}  # named after the file
    sources = store.query("SELECT DISTINCT r.source, a.name FROM rankings r JOIN annotators a ON a.id = r.annotator_id")
    assert [tuple(r) for r in sources] == [("import", "import:hh")]
    rows, pair_set = preference_rows(store, "hh")
    assert len(rows) == 3 and pair_set.conflicts == 0
    assert rows[0]["prompt"] == [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    with pytest.raises(PreferenceError, match="already exists"):
        import_file(store, path)


def test_parquet_and_csv_imports(store, tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"prompt": "Q?", "chosen": "good", "rejected": "bad"}]).to_parquet(tmp_path / "p.parquet")
    assert import_file(store, tmp_path / "p.parquet")["pairs"] == 1
    (tmp_path / "c.csv").write_text("question,chosen,rejected\nQ?,good,bad\nR?,yes,no\n")
    assert import_file(store, tmp_path / "c.csv", "from-csv")["pairs"] == 2


def test_a_malformed_file_is_refused_whole(store, tmp_path):
    before = table_counts(store)
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "Q?", "chosen": "good", "rejected": "bad"},
            {"prompt": "Q?", "chosen": "good"},
            {"prompt": [{"role": "user", "content": "u"}], "chosen": "x", "rejected": "y"},
            {"chosen": "plain text", "rejected": "other text"},
        ],
    )
    with pytest.raises(PreferenceError) as error:
        import_file(store, path)
    text = str(error.value)
    assert "nothing imported, 3 bad rows" in text
    assert "row 2: no chosen/rejected columns" in text and "row 3:" in text and "row 4:" in text
    (tmp_path / "broken.jsonl").write_text('{"prompt": "Q?", "chosen": "a", "rejected": "b"}\n{"prompt": \n')
    with pytest.raises(PreferenceError, match="broken.jsonl line 2 is not valid JSON"):
        import_file(store, tmp_path / "broken.jsonl")
    assert table_counts(store) == before


def test_dataset_card_says_how_the_data_was_made(store):
    (p1, (a, b, c)), (p2, (d, e, f)) = make_set(store)
    submit(store, "x", p1, [[a], [b], [c]])
    submit(store, "y", p1, [[a], [c], [b]])
    submit(store, "x", p2, [[d], [e, f]])
    rows, pair_set = preference_rows(store, "s", "all")
    card = dataset_card(store, "s", "all", pair_set)
    assert "2 prompts, 6 candidate answers from\n  1 model(s): m" in card
    assert "3 rankings by 2 annotator(s) (sources: local)" in card
    assert f"all ordered pairs, majority over annotators, ties give no pair: {len(rows)} pairs" in card
    assert "1 response pairs had conflicting votes, 1 of them without a majority" in card
    assert "pairwise 0.67, Kendall's tau-b 0.33 over 3 judgements" in card


def test_push_without_a_token_says_how_to_get_one(store, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # no saved login either
    with pytest.raises(PreferenceError, match="No Hugging Face token: set HF_TOKEN"):
        push_preferences(store, "s", "me/prefs")
    with pytest.raises(PreferenceError, match="not a Hub repository id"):
        push_preferences(store, "s", "../etc")
