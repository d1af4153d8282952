"""Prompt sets: the built-in ones, uploaded JSONL or CSV files, and Hub data sets.

Everything is checked before anything is written, and a set is added in one transaction: bad input stores nothing.
"""

import argparse
import csv
import io
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from studio.core import hub
from studio.core.paths import check_name, db_path
from studio.core.store import Store
from studio.data import rubric

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "prompts"
GUIDELINES = ASSETS.parent / "guidelines"
BUILTIN_SETS = {
    "bank": "bank.jsonl",
    "helpful_harmless": "helpful_harmless.jsonl",
    "provocative": "provocative.jsonl",
    "capability": "capability.jsonl",
    "bank_math": "bank_math.jsonl",  # fees and interest with numeric reference answers, for GRPO
}
PROMPT_COLUMNS = ("prompt", "question", "instruction")
SYSTEM_COLUMN = "system"
ANSWER_COLUMN = "answer"  # a reference answer, for verifiable rewards (training/rewards.py)
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PROMPTS = 20_000


class PromptError(ValueError):
    """Input that cannot become a prompt set; the message says what to fix."""


@dataclass
class ParsedPrompts:
    rows: list[tuple[str, str]]  # (prompt, system prompt or '')
    answers: list[str | None] = field(default_factory=list)  # a reference answer per row, where the file has them
    duplicates: int = 0
    empty: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.rows)} prompts"]
        if any(a is not None for a in self.answers):
            parts.append(f"{sum(a is not None for a in self.answers)} with a reference answer")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicated prompts removed")
        if self.empty:
            parts.append(f"{self.empty} empty rows skipped")
        return ", ".join(parts)


def _pick_column(columns, source: str) -> str:
    lowered = {str(c).strip().lower(): c for c in columns if c is not None}
    for name in PROMPT_COLUMNS:
        if name in lowered:
            return lowered[name]
    found = ", ".join(repr(str(c)) for c in columns if c is not None) or "none"
    raise PromptError(f"{source} has no prompt column: expected one of {', '.join(PROMPT_COLUMNS)}; found {found}.")


def _from_records(records: list[dict], source: str, column: str | None = None) -> ParsedPrompts:
    columns = list(dict.fromkeys(key for record in records for key in record))
    if column is None:
        column = _pick_column(columns, source)
    elif column not in columns:
        raise PromptError(f"{source} has no column {column!r}; its columns are {', '.join(map(repr, columns))}.")
    system_key = next((c for c in columns if str(c).strip().lower() == SYSTEM_COLUMN), None)
    answer_key = next((c for c in columns if str(c).strip().lower() == ANSWER_COLUMN), None)
    parsed = ParsedPrompts(rows=[])
    seen = set()
    for number, record in enumerate(records, start=1):
        text = record.get(column)
        if text is not None and not isinstance(text, str):
            raise PromptError(
                f"{source} row {number}: {column!r} is {type(text).__name__}, not text; a prompt is a string."
            )
        text = (text or "").strip()
        if not text:
            parsed.empty += 1
            continue
        system = record.get(system_key) if system_key else ""
        if system is not None and not isinstance(system, str):
            raise PromptError(f"{source} row {number}: the system prompt is {type(system).__name__}, not text.")
        system = (system or "").strip()
        if (text, system) in seen:
            parsed.duplicates += 1
            continue
        seen.add((text, system))
        parsed.rows.append((text, system))
        if answer_key:
            parsed.answers.append(_answer(record.get(answer_key), source, number))
    if not parsed.rows:
        raise PromptError(f"{source} has no prompts: every row's {column!r} is empty.")
    if len(parsed.rows) > MAX_PROMPTS:
        raise PromptError(f"{source} has {len(parsed.rows)} prompts; the limit is {MAX_PROMPTS}. Split it.")
    return parsed


def _answer(value, source: str, number: int) -> str | None:
    """A reference answer as text (a number in a JSONL file is one); None where a row has none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PromptError(f"{source} row {number}: the answer is {type(value).__name__}; write it as text or a number.")
    return str(value).strip()


def read_records(path, max_bytes: int | None = None, suffixes=(".jsonl", ".csv")) -> list[dict]:
    """The rows of an uploaded .jsonl, .csv (or .parquet, where allowed) file; PromptError names the problem."""
    max_bytes = max_bytes or MAX_UPLOAD_BYTES
    path = Path(path)
    name = path.name
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise PromptError(f"{name}: upload a {' or '.join(suffixes)} file.")
    size = path.stat().st_size
    if size > max_bytes:
        raise PromptError(
            f"{name} is {size / 1024 / 1024:.1f} MB; the limit is {max_bytes // 1024 // 1024} MB. "
            "Split it into smaller files."
        )
    if suffix == ".parquet":  # read by pyarrow straight from the file, not first into memory as bytes
        import pyarrow.parquet

        if size == 0:
            raise PromptError(f"{name} is empty.")
        try:
            return pyarrow.parquet.read_table(path).to_pylist()
        except Exception as error:  # pyarrow raises several kinds for a broken file
            raise PromptError(f"{name} is not a readable Parquet file: {error}.") from None
    raw = path.read_bytes()
    if not raw.strip():
        raise PromptError(f"{name} is empty.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PromptError(
            f"{name} is not UTF-8 text (byte 0x{raw[error.start]:02x} at position {error.start}). "
            "Save it as UTF-8 and upload it again."
        ) from None
    if suffix == ".csv":
        try:
            records = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as error:
            raise PromptError(f"{name} is not valid CSV: {error}.") from None
        if not records:
            raise PromptError(f"{name} has a header row but no rows.")
        return records
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptError(f"{name} line {number} is not valid JSON: {error.msg}.") from None
        except RecursionError:
            raise PromptError(f"{name} line {number} is nested too deeply to read.") from None
        if not isinstance(record, dict):
            raise PromptError(f"{name} line {number} is not a JSON object.")
        records.append(record)
    return records


def parse_prompt_file(path) -> ParsedPrompts:
    """Read a .jsonl or .csv upload into prompts; PromptError names the problem and the file."""
    return _from_records(read_records(path), Path(path).name)


def hub_records(dataset_id: str, split: str = "train", limit: int = MAX_PROMPTS) -> list[dict]:
    """The first `limit` rows of a Hub data set (needs network) or of a local data set folder."""
    dataset_id = (dataset_id or "").strip()
    if not dataset_id:
        raise PromptError("Enter a Hub data set id such as 'tatsu-lab/alpaca'.")
    if not Path(dataset_id).is_dir() and not hub.reachable():  # datasets also loads a local data set folder
        raise PromptError(
            f"Could not load {dataset_id!r}: the Hugging Face Hub is out of reach (no network?). Upload a file instead."
        )
    try:
        from datasets import load_dataset

        dataset = load_dataset(dataset_id, split=(split or "train").strip())
    except Exception as error:  # datasets raises many kinds; the user needs the reason, not the type
        raise PromptError(
            f"Could not load the data set {dataset_id!r} (split {split!r}) from the Hub: {error}."
        ) from None
    return dataset.select(range(min(limit, len(dataset)))).to_list()


def load_hub_prompts(dataset_id: str, split: str = "train", column: str | None = None) -> ParsedPrompts:
    """Prompts from a Hugging Face Hub data set (needs network) or a local data set folder."""
    records = hub_records(dataset_id, split)
    return _from_records(records, f"{(dataset_id or '').strip()} ({split})", (column or "").strip() or None)


def add_prompt_set(store: Store, name: str, parsed: ParsedPrompts, source: str) -> int:
    """Store a new prompt set in one transaction; return its id."""
    name = check_name(name, "prompt set name")
    with store.tx() as db:
        if db.execute("SELECT 1 FROM prompt_sets WHERE name = ?", (name,)).fetchone():
            raise PromptError(f"A prompt set named {name!r} already exists; choose another name.")
        set_id = db.execute("INSERT INTO prompt_sets (name, source) VALUES (?, ?)", (name, source)).lastrowid
        answers = parsed.answers or [None] * len(parsed.rows)
        db.executemany(
            "INSERT INTO prompts (prompt_set_id, position, text, system, answer) VALUES (?, ?, ?, ?, ?)",
            [(set_id, i, text, system, answers[i]) for i, (text, system) in enumerate(parsed.rows)],
        )
    return set_id


def import_prompt_file(store: Store, path, name: str | None = None) -> tuple[str, ParsedPrompts]:
    """A prompt set from an uploaded .jsonl/.csv file, named `name` or after the file; returns (name, parsed)."""
    path = Path(path)
    parsed = parse_prompt_file(path)
    name = (name or "").strip() or path.stem
    add_prompt_set(store, name, parsed, f"upload:{path.name}")
    return name, parsed


def import_hub_prompts(
    store: Store, dataset_id: str, split: str = "train", column: str | None = None, name: str | None = None
) -> tuple[str, ParsedPrompts]:
    """A prompt set from a Hub data set (or a local data set folder), named `name` or after the data set."""
    dataset_id = (dataset_id or "").strip()
    parsed = load_hub_prompts(dataset_id, split, column)
    name = (name or "").strip() or dataset_id.rstrip("/").split("/")[-1]
    add_prompt_set(store, name, parsed, f"hub:{dataset_id}:{split}:{column or ''}")
    return name, parsed


def install_builtin_sets(store: Store) -> None:
    """Add the built-in sets that are not in the database yet, each with its rubric and guidelines (idempotent).
    A rubric the user removed stays removed (its row holds empty text); edited guidelines stay as edited."""
    present = {row["name"] for row in store.query("SELECT name FROM prompt_sets")}
    for name, file_name in BUILTIN_SETS.items():
        if name not in present:
            add_prompt_set(store, name, parse_prompt_file(ASSETS / file_name), "builtin")
    with store.tx() as db:
        for name in BUILTIN_SETS:
            text = rubric.builtin_text(name)
            if text:
                db.execute(
                    "INSERT OR IGNORE INTO rubrics (prompt_set_id, text, updated_by) "
                    "SELECT id, ?, 'builtin' FROM prompt_sets WHERE name = ? AND source = 'builtin'",
                    (text, name),
                )
            # Guidelines written from the set's system prompt; edited ones are kept.
            guidelines = GUIDELINES / f"{name}.md"
            if guidelines.is_file():
                db.execute(
                    "INSERT OR IGNORE INTO guidelines (prompt_set_id, text, updated_by) "
                    "SELECT id, ?, 'builtin' FROM prompt_sets WHERE name = ? AND source = 'builtin'",
                    (guidelines.read_text(encoding="utf-8"), name),
                )


def list_prompt_sets(store: Store) -> list[dict]:
    return [
        dict(row)
        for row in store.query(
            "SELECT s.id, s.name, s.source, COUNT(p.id) AS prompts FROM prompt_sets s "
            "LEFT JOIN prompts p ON p.prompt_set_id = s.id GROUP BY s.id ORDER BY s.id"
        )
    ]


def get_prompts(store: Store, set_name: str, limit: int | None = None) -> list[dict]:
    """The prompts of a set in their order; PromptError if the set does not exist."""
    rows = store.query(
        "SELECT p.id, p.text, p.system, p.context, p.answer FROM prompts p "
        "JOIN prompt_sets s ON s.id = p.prompt_set_id "
        "WHERE s.name = ? ORDER BY p.position LIMIT ?",
        (set_name, limit if limit and limit > 0 else -1),
    )
    if not rows and not store.query("SELECT 1 FROM prompt_sets WHERE name = ?", (set_name,)):
        known = ", ".join(s["name"] for s in list_prompt_sets(store))
        raise PromptError(f"No prompt set named {set_name!r}; known sets: {known or 'none'}.")
    return [dict(row, context=json.loads(row["context"]) if row["context"] else []) for row in rows]


def prompt_key(prompt: dict) -> tuple:
    """What makes two prompts the same prompt, whatever set holds them: the text, the system prompt, earlier turns."""
    return (
        prompt["text"].strip(),
        (prompt.get("system") or "").strip(),
        json.dumps(prompt.get("context") or [], ensure_ascii=False, sort_keys=True),
    )


def messages_key(messages) -> tuple | None:
    """prompt_key of a chat message list that ends with the user's message (TRL's prompt column); None if it
    does not."""
    if isinstance(messages, str):
        return prompt_key({"text": messages})
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return None
    while messages and messages[-1].get("role") == "assistant":  # SFT rows: the conversation with its answer
        messages = messages[:-1]
    if not messages or messages[-1].get("role") != "user":
        return None
    system = messages[0].get("content", "") if messages[0].get("role") == "system" else ""
    turns = messages[1:] if system else messages
    context = [{"role": m.get("role"), "content": m.get("content")} for m in turns[:-1]]
    return prompt_key({"text": str(turns[-1].get("content", "")), "system": str(system), "context": context})


def split_set(store: Store, set_name: str, held_out: float = 0.3, seed: int = 0) -> tuple[str, str]:
    """Split a prompt set into `<name>-train` and `<name>-heldout` (a share `held_out` of its prompts, drawn with
    `seed`), copying the prompts, the guidelines and the rubric; returns the two names. One transaction."""
    if not 0 < held_out < 1:
        raise PromptError("The held-out share must be above 0 and below 1, e.g. 0.3.")
    prompts = get_prompts(store, set_name)
    if len(prompts) < 2:
        raise PromptError(f"{set_name!r} has {len(prompts)} prompt(s); a split needs at least 2.")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    count = min(len(prompts) - 1, max(1, round(len(prompts) * held_out)))
    held = set(order[:count])
    names = (
        check_name(f"{set_name}-train"[:64], "prompt set name"),
        check_name(f"{set_name}-heldout"[:64], "prompt set name"),
    )
    source = f"split:{set_name}:{held_out}:{seed}"
    with store.tx() as db:
        for name in names:
            if db.execute("SELECT 1 FROM prompt_sets WHERE name = ?", (name,)).fetchone():
                raise PromptError(f"A prompt set named {name!r} already exists; rename or remove it first.")
        original = db.execute("SELECT id FROM prompt_sets WHERE name = ?", (set_name,)).fetchone()["id"]
        for name, keep in zip(names, (False, True)):
            set_id = db.execute("INSERT INTO prompt_sets (name, source) VALUES (?, ?)", (name, source)).lastrowid
            rows = [p for i, p in enumerate(prompts) if (i in held) == keep]
            db.executemany(
                "INSERT INTO prompts (prompt_set_id, position, text, system, context, answer) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        set_id,
                        position,
                        p["text"],
                        p["system"],
                        json.dumps(p["context"]) if p["context"] else "",
                        p["answer"],
                    )
                    for position, p in enumerate(rows)
                ],
            )
            for table in ("guidelines", "rubrics"):
                db.execute(
                    f"INSERT INTO {table} (prompt_set_id, text, updated_by) SELECT ?, text, updated_by "
                    f"FROM {table} WHERE prompt_set_id = ?",
                    (set_id, original),
                )
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio prompts", description="Prompt sets in the studio.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the prompt sets and their sizes")
    split = sub.add_parser("split", help="split a set into <name>-train and <name>-heldout")
    split.add_argument("set_name")
    split.add_argument("--held-out", type=float, default=0.3, help="share of prompts held out (default 0.3)")
    split.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    args = parser.parse_args(argv)
    store = Store(db_path())
    install_builtin_sets(store)
    if args.command == "list":
        for row in list_prompt_sets(store):
            print(f"{row['name']}\t{row['prompts']} prompts\t{row['source']}")
        return 0
    try:
        train, held = split_set(store, args.set_name, args.held_out, args.seed)
    except PromptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sizes = {s["name"]: s["prompts"] for s in list_prompt_sets(store)}
    print(f"{train}: {sizes[train]} prompts; {held}: {sizes[held]} prompts (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
