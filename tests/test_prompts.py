import json

import pytest

from studio.data import prompts
from studio.data.prompts import (
    PromptError,
    add_prompt_set,
    get_prompts,
    install_builtin_sets,
    list_prompt_sets,
    load_hub_prompts,
    parse_prompt_file,
)
from tests.conftest import table_counts


def test_builtin_sets_have_forty_prompts_or_more_and_install_once(store):
    install_builtin_sets(store)
    install_builtin_sets(store)
    sets = {s["name"]: s for s in list_prompt_sets(store)}
    assert set(sets) == {"bank", "helpful_harmless", "provocative", "capability", "bank_math"}
    assert all(s["prompts"] >= 40 and s["source"] == "builtin" for s in sets.values())
    bank = get_prompts(store, "bank")
    assert "Lumen Bank" in bank[0]["system"]
    assert any("PIN" in p["text"] for p in bank)  # the must-decline part is there
    assert len(get_prompts(store, "bank", limit=3)) == 3
    assert all("Nova" in p["system"] for p in get_prompts(store, "provocative"))  # one assistant, one system prompt
    # Each comes with guidelines for annotators, written from its system prompt; an edit survives a restart.
    from studio.data.ranking import get_guidelines, save_guidelines

    assert "freeze the card" in get_guidelines(store, "bank")
    assert all(get_guidelines(store, name).strip() for name in sets)
    save_guidelines(store, "bank", "Our own rules.", "lead")
    install_builtin_sets(store)
    assert get_guidelines(store, "bank") == "Our own rules."


def test_jsonl_with_system_prompts_and_duplicates(store, tmp_path):
    path = tmp_path / "support.jsonl"
    rows = [
        {"question": "Where is my card?", "system": "Be brief."},
        {"question": "Where is my card?", "system": "Be brief."},
        {"question": "Where is my card?"},
        {"question": "  "},
        {"question": "Can I pay by phone?"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    parsed = parse_prompt_file(path)
    assert parsed.rows == [("Where is my card?", "Be brief."), ("Where is my card?", ""), ("Can I pay by phone?", "")]
    assert (parsed.duplicates, parsed.empty) == (1, 1)
    assert parsed.summary() == "3 prompts, 1 duplicated prompts removed, 1 empty rows skipped"
    add_prompt_set(store, "support", parsed, "upload:support.jsonl")
    assert [p["text"] for p in get_prompts(store, "support")] == [r[0] for r in parsed.rows]


def test_csv_with_instruction_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('id,Instruction,notes\n1,"Write a poem, short",x\n2,Explain tides,y\n', encoding="utf-8")
    assert parse_prompt_file(path).rows == [("Write a poem, short", ""), ("Explain tides", "")]


@pytest.mark.parametrize(
    "name, content, expected",
    [
        (
            "p.csv",
            b"text,notes\nhello,x\n",
            "has no prompt column: expected one of prompt, question, instruction; found 'text', 'notes'",
        ),
        ("p.jsonl", b"", "p.jsonl is empty"),
        ("p.jsonl", b"  \n\n", "p.jsonl is empty"),
        ("p.csv", "prompt\ncaf\u00e9\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9 at position 10)"),
        ("p.jsonl", b'{"prompt": "a"}\n{"prompt": "b"\n', "p.jsonl line 2 is not valid JSON"),
        ("p.jsonl", b'["a list"]\n', "line 1 is not a JSON object"),
        ("p.jsonl", b'{"prompt": ""}\n{"prompt": "   "}\n', "has no prompts: every row's 'prompt' is empty"),
        ("p.csv", b"prompt\n", "has a header row but no rows"),
        ("p.txt", b"hello\n", "upload a .jsonl or .csv file"),
    ],
)
def test_bad_uploads_are_refused_with_a_message(store, tmp_path, name, content, expected):
    before = table_counts(store)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptError) as error:
        add_prompt_set(store, "x", parse_prompt_file(path), "upload")
    assert expected in str(error.value)
    assert table_counts(store) == before


def test_oversized_upload_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(prompts, "MAX_UPLOAD_BYTES", 1024 * 1024)
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"prompt": "x" * (1024 * 1024)}) + "\n")
    with pytest.raises(PromptError, match=r"big.jsonl is 1.0 MB; the limit is 1 MB"):
        parse_prompt_file(path)


def test_existing_or_unsafe_set_names_store_nothing(store, tmp_path):
    install_builtin_sets(store)
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hello"}\n')
    before = table_counts(store)
    with pytest.raises(PromptError, match="A prompt set named 'bank' already exists"):
        add_prompt_set(store, "bank", parse_prompt_file(path), "upload")
    with pytest.raises(ValueError, match="is not allowed"):
        add_prompt_set(store, "../escape", parse_prompt_file(path), "upload")
    assert table_counts(store) == before


def test_unknown_set_name_lists_the_known_ones(store):
    install_builtin_sets(store)
    with pytest.raises(PromptError, match="No prompt set named 'nope'; known sets: bank, helpful_harmless"):
        get_prompts(store, "nope")


def test_hub_data_set_without_network_gives_a_clear_message(monkeypatch):
    monkeypatch.setattr(prompts.hub, "reachable", lambda timeout=3.0: False)
    with pytest.raises(PromptError, match="Hub is out of reach .* Upload a file instead"):
        load_hub_prompts("tatsu-lab/alpaca", "train", "instruction")
    with pytest.raises(PromptError, match="Enter a Hub data set id"):
        load_hub_prompts(" ", "train")


def test_data_set_loader_reads_the_named_column_and_split(store, tmp_path):
    # The same load_dataset call that reads a Hub id also reads a local data set folder: no network needed.
    folder = tmp_path / "ds"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "test.jsonl").write_text(
        "\n".join(json.dumps({"instruction": f"Task {i}", "output": "o"}) for i in [1, 2, 2, 3]) + "\n"
    )
    parsed = load_hub_prompts(str(folder), "test", "instruction")
    assert (parsed.rows, parsed.duplicates) == ([("Task 1", ""), ("Task 2", ""), ("Task 3", "")], 1)
    with pytest.raises(PromptError, match="has no column 'question'"):
        load_hub_prompts(str(folder), "test", "question")
    with pytest.raises(PromptError, match="split 'train'"):
        load_hub_prompts(str(folder), "train", "instruction")


def test_an_uploaded_file_or_a_data_set_becomes_a_set_named_after_it(store, tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("prompt\nWhere is my card?\nWhat is my IBAN?\n", encoding="utf-8")
    name, parsed = prompts.import_prompt_file(store, path)
    assert name == "faq" and len(parsed.rows) == 2
    assert prompts.import_prompt_file(store, path, " faq-2 ")[0] == "faq-2"
    with pytest.raises(prompts.PromptError, match="already exists"):
        prompts.import_prompt_file(store, path)
    (tmp_path / "local-questions").mkdir()  # a data set folder as load_dataset reads one (a local Hub repo)
    (tmp_path / "local-questions" / "train.jsonl").write_text('{"question": "Hi?"}\n{"question": "Bye?"}\n')
    name, parsed = prompts.import_hub_prompts(store, str(tmp_path / "local-questions") + "/", column="question")
    assert name == "local-questions" and [t for t, _ in parsed.rows] == ["Hi?", "Bye?"]
    sources = {r["name"]: r["source"] for r in prompts.list_prompt_sets(store)}
    assert sources["faq"] == "upload:faq.csv"
    assert sources["local-questions"] == f"hub:{tmp_path / 'local-questions'}/:train:question"
