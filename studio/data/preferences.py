"""Preference data: rankings -> pairs in TRL's conversational format, import of existing data, push to the Hub.

Export rows are {"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}, which
TRL's DPOTrainer reads unchanged. Imports accept TRL's standard and conversational formats (explicit or implicit
prompt), Anthropic HH transcripts and prompt/chosen/rejected columns under their common names; each imported pair
is kept as a two-candidate ranking with source = import.
"""

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from studio.core import access, hub
from studio.core.paths import check_name, studio_home
from studio.core.store import Store
from studio.data import demonstrations, team
from studio.data.prompts import PromptError, hub_records, read_records
from studio.data.ranking import PAIR_MODES, PairSet, agreement, annotator_id, current_rankings, pairs_from_rankings
from studio.inference.decode import prompt_messages

MAX_IMPORT_BYTES = 200 * 1024 * 1024
MAX_IMPORT_ROWS = 500_000
PROMPT_KEYS = ("prompt", "question", "instruction", "input")
CHOSEN_KEYS = ("chosen", "response_chosen", "chosen_response", "response_j")
REJECTED_KEYS = ("rejected", "response_rejected", "rejected_response", "response_k")
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


class PreferenceError(ValueError):
    """Preference data that cannot be exported, imported or pushed; the message says what to fix."""


@dataclass
class ImportedPair:
    system: str
    context: list  # earlier turns
    text: str  # the last user message
    chosen: str
    rejected: str


def preference_rows(
    store: Store, set_name: str, mode: str = "best_worst", weighted: bool = False, judges: bool = False
) -> tuple[list[dict], PairSet]:
    """The set's rankings as TRL conversational preference rows, with the pair statistics. `weighted`: each
    annotator's votes count by their quality (team.quality), so a careless annotator sways fewer pairs. `judges`:
    the judges' own rankings (judges.prerank) count as votes too."""
    weights = {who: q["weight"] for who, q in team.quality(store, set_name).items()} if weighted else None
    pair_set = pairs_from_rankings(current_rankings(store, set_name, include_judges=judges), mode, weights)
    if not pair_set.pairs:
        return [], pair_set
    prompt_ids = sorted({p.prompt_id for p in pair_set.pairs})
    marks = ",".join("?" * len(prompt_ids))
    prompts = {
        r["id"]: dict(r, context=json.loads(r["context"] or "[]"))
        for r in store.query(f"SELECT id, text, system, context FROM prompts WHERE id IN ({marks})", prompt_ids)
    }
    texts = {
        r["id"]: r["text"]
        for r in store.query(f"SELECT id, text FROM responses WHERE prompt_id IN ({marks})", prompt_ids)
    }
    rows = [
        {
            "prompt": prompt_messages(prompts[p.prompt_id]),
            "chosen": [{"role": "assistant", "content": texts[p.chosen_id]}],
            "rejected": [{"role": "assistant", "content": texts[p.rejected_id]}],
        }
        for p in pair_set.pairs
    ]
    return rows, pair_set


def training_snapshot(
    store: Store, set_name: str, mode: str = "best_worst", weighted: bool = False, judges: bool = False
) -> tuple[list[dict], dict]:
    """The rows a training job gets, and what the model card will say about them (which rankings, by whom)."""
    rankings = current_rankings(store, set_name, include_judges=judges)
    rows, pair_set = preference_rows(store, set_name, mode, weighted, judges)
    shown, shown_info = demonstrations.pair_rows(store, set_name)
    if not rows and not shown:
        raise PreferenceError(f"No preference pairs in {set_name!r} yet: rank some prompts first (ties give no pair).")
    info = {
        "prompt_set": set_name,
        "pair_mode": mode,
        "pairs": len(rows) + len(shown),
        **(shown_info if shown else {}),
        "prompts": len({p.prompt_id for p in pair_set.pairs}),
        "rankings": len(rankings),
        "annotators": sorted({r["annotator"] for r in rankings}),
        "conflicts": pair_set.conflicts,
        "unresolved": pair_set.unresolved,
        "ranking_ids": [r["id"] for r in rankings],
        **({"weighted_by_quality": True} if weighted else {}),
    }
    return rows + shown, info


def export_preferences(store: Store, set_name: str, mode: str = "best_worst", out_dir=None) -> dict:
    """Write preferences.jsonl and preferences.parquet; returns their paths and the pair statistics."""
    from datasets import Dataset

    rows, pair_set = preference_rows(store, set_name, mode)
    if not rows:
        raise PreferenceError(f"No preference pairs in {set_name!r} yet: rank some prompts first (ties give no pair).")
    out_dir = Path(
        out_dir or studio_home() / "exports" / f"{check_name(set_name)}-{mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = Dataset.from_list(rows)
    dataset.to_json(out_dir / "preferences.jsonl", lines=True, force_ascii=False)
    dataset.to_parquet(out_dir / "preferences.parquet")
    return {
        "jsonl": out_dir / "preferences.jsonl",
        "parquet": out_dir / "preferences.parquet",
        "folder": out_dir,
        "pairs": pair_set,
    }


def _first_key(record: dict, keys) -> str | None:
    return next((k for k in keys if k in record), None)


def _hh_messages(transcript: str) -> list[dict]:
    parts = _HH_TURN.split("\n\n" + transcript.lstrip())
    if len(parts) < 3 or parts[0].strip():
        raise PreferenceError("not an Anthropic HH transcript ('\\n\\nHuman: ... \\n\\nAssistant: ...')")
    return [
        {"role": "user" if role == "Human" else "assistant", "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2])
    ]


def _is_messages(value) -> bool:
    """A chat message list: each a {"role": ..., "content": text} (text only; null or an object is refused)."""
    return isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    )


def _completion(messages: list[dict]) -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise PreferenceError("chosen and rejected must each end in one assistant message after the shared prompt")
    return messages[0]["content"]


def _split_prompt(prompt: list[dict]) -> tuple[str, list, str]:
    system = prompt[0]["content"] if prompt and prompt[0]["role"] == "system" else ""
    turns = prompt[1:] if system else prompt
    if not turns or turns[-1]["role"] != "user":
        raise PreferenceError("the prompt must end with a user message")
    return system, [{"role": m["role"], "content": m["content"]} for m in turns[:-1]], turns[-1]["content"]


def parse_pair(record: dict) -> ImportedPair:
    """One row of any supported format -> ImportedPair; PreferenceError says what is wrong with it."""
    chosen_key, rejected_key = _first_key(record, CHOSEN_KEYS), _first_key(record, REJECTED_KEYS)
    if not chosen_key or not rejected_key:
        raise PreferenceError(
            f"no chosen/rejected columns (expected one of {', '.join(CHOSEN_KEYS)} and one of "
            f"{', '.join(REJECTED_KEYS)})"
        )
    chosen, rejected = record[chosen_key], record[rejected_key]
    prompt_key = _first_key(record, PROMPT_KEYS)
    prompt = record.get(prompt_key) if prompt_key else None
    if prompt is None:  # implicit prompt: the shared beginning of chosen and rejected
        if isinstance(chosen, str) and isinstance(rejected, str):
            if "\n\nHuman:" not in chosen and not chosen.lstrip().startswith("Human:"):
                raise PreferenceError("no prompt column, and chosen is not a Human/Assistant transcript")
            chosen, rejected = _hh_messages(chosen), _hh_messages(rejected)
        if not (_is_messages(chosen) and _is_messages(rejected)):
            raise PreferenceError("chosen and rejected must both be strings or both be message lists")
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        system, context, text = _split_prompt(chosen[:shared])
        return ImportedPair(system, context, text, _completion(chosen[shared:]), _completion(rejected[shared:]))
    if isinstance(prompt, str):
        if _is_messages(chosen) and _is_messages(rejected):
            chosen, rejected = _completion(chosen), _completion(rejected)
        if not (isinstance(chosen, str) and isinstance(rejected, str)):
            raise PreferenceError("chosen and rejected must both be text for a text prompt")
        if not prompt.strip() or not chosen.strip() or not rejected.strip():
            raise PreferenceError("prompt, chosen and rejected must not be empty")
        return ImportedPair("", [], prompt.strip(), chosen.strip(), rejected.strip())
    if _is_messages(prompt) and _is_messages(chosen) and _is_messages(rejected):
        system, context, text = _split_prompt(prompt)
        return ImportedPair(system, context, text, _completion(chosen), _completion(rejected))
    raise PreferenceError("prompt must be text or a message list, with chosen and rejected of the same kind")


def parse_pairs(records: list[dict], source: str) -> list[ImportedPair]:
    """Every row or none: the error lists each bad row (the first 20)."""
    if not records:
        raise PreferenceError(f"{source} has no rows.")
    if len(records) > MAX_IMPORT_ROWS:
        raise PreferenceError(f"{source} has {len(records)} rows; the limit is {MAX_IMPORT_ROWS}. Split it.")
    pairs, errors = [], []
    for number, record in enumerate(records, start=1):
        try:
            pairs.append(parse_pair(record))
        except PreferenceError as error:
            errors.append(f"row {number}: {error}")
    if errors:
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        raise PreferenceError(f"{source}: nothing imported, {len(errors)} bad rows{more}:\n" + "\n".join(errors[:20]))
    return pairs


def import_pairs(store: Store, set_name: str, pairs: list[ImportedPair], source: str) -> dict:
    """Store imported pairs as a new prompt set in one transaction; each pair is a ranking with source = import."""
    set_name = check_name(set_name, "data set name")
    who_name = f"import:{set_name}"
    with store.tx() as db:
        if db.execute("SELECT 1 FROM prompt_sets WHERE name = ?", (set_name,)).fetchone():
            raise PreferenceError(f"A prompt set named {set_name!r} already exists; choose another name.")
        set_id = db.execute("INSERT INTO prompt_sets (name, source) VALUES (?, ?)", (set_name, source)).lastrowid
        who = annotator_id(db, who_name, "import")
        prompt_ids: dict[tuple, int] = {}
        for pair in pairs:
            key = (pair.text, pair.system, json.dumps(pair.context) if pair.context else "")
            if key not in prompt_ids:
                prompt_ids[key] = db.execute(
                    "INSERT INTO prompts (prompt_set_id, position, text, system, context) VALUES (?, ?, ?, ?, ?)",
                    (set_id, len(prompt_ids), *key),
                ).lastrowid
            ids = [
                db.execute(
                    "INSERT INTO responses (prompt_id, model, text, params) VALUES (?, ?, ?, '{}')",
                    (prompt_ids[key], who_name, text),
                ).lastrowid
                for text in (pair.chosen, pair.rejected)
            ]
            db.execute(
                "INSERT INTO rankings (prompt_id, annotator_id, tiers, source) VALUES (?, ?, ?, 'import')",
                (prompt_ids[key], who, json.dumps([[ids[0]], [ids[1]]])),
            )
    return {"pairs": len(pairs), "prompts": len(prompt_ids), "prompt_set": set_name}


def import_file(store: Store, path, set_name: str | None = None, by: str | None = None) -> dict:
    """Preference pairs from a file as a new prompt set with their rankings (a lead's action: it adds rankings under
    other names)."""
    access.check_lead(by, "import preference data")
    path = Path(path)
    try:
        records = read_records(path, MAX_IMPORT_BYTES, (".jsonl", ".csv", ".parquet"))
    except PromptError as error:
        raise PreferenceError(str(error)) from None
    return import_pairs(
        store, (set_name or "").strip() or path.stem, parse_pairs(records, path.name), f"import:{path.name}"
    )


def import_hub(
    store: Store, dataset_id: str, split: str = "train", set_name: str | None = None, by: str | None = None
) -> dict:
    access.check_lead(by, "import preference data")
    try:
        records = hub_records(dataset_id, split, MAX_IMPORT_ROWS)
    except PromptError as error:
        raise PreferenceError(str(error)) from None
    name = (set_name or "").strip() or (dataset_id or "").strip().rstrip("/").split("/")[-1]
    return import_pairs(store, name, parse_pairs(records, dataset_id), f"import:hub:{dataset_id.strip()}:{split}")


def dataset_card(store: Store, set_name: str, mode: str, pair_set: PairSet) -> str:
    """A data set card that says how the data was made."""
    stats = store.query(
        """SELECT COUNT(DISTINCT p.id) AS prompts, COUNT(r.id) AS responses, COUNT(DISTINCT r.model) AS models,
                  GROUP_CONCAT(DISTINCT r.model) AS model_names
           FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id LEFT JOIN responses r ON r.prompt_id = p.id
           WHERE s.name = ?""",
        (set_name,),
    )[0]
    rankings = current_rankings(store, set_name)
    annotators = {r["annotator"] for r in rankings}
    sources = sorted({r["source"] for r in rankings})
    agree = agreement(store, set_name)
    agree_text = (
        "not measured (no prompt was ranked by two annotators)"
        if agree["pairwise"] is None
        else f"pairwise {agree['pairwise']:.2f}, Kendall's tau-b "
        f"{agree['kendall_tau'] if agree['kendall_tau'] is None else round(agree['kendall_tau'], 2)} "
        f"over {agree['judgements']} judgements"
    )
    return f"""---
tags:
- dpo
- preference
- rlhf
- align-studio
configs:
- config_name: default
  data_files: data/*.parquet
---

# {set_name}: preference pairs

Made with Align Studio. Rows are in TRL's conversational preference format (`prompt`, `chosen`, `rejected` as
message lists) and train with TRL's `DPOTrainer` as they are.

- Prompt set `{set_name}`: {stats["prompts"]} prompts, {stats["responses"]} candidate answers from
  {stats["models"]} model(s): {stats["model_names"] or "none"}.
- {len(rankings)} rankings by {len(annotators)} annotator(s) (sources: {", ".join(sources) or "none"}).
- Pairs: {PAIR_MODES[mode]}, majority over annotators, ties give no pair: {len(pair_set.pairs)} pairs;
  {pair_set.conflicts} response pairs had conflicting votes, {pair_set.unresolved} of them without a majority
  (dropped).
- Agreement between annotators: {agree_text}.
"""


def push_preferences(
    store: Store,
    set_name: str,
    repo_id: str,
    mode: str = "best_worst",
    private: bool = True,
    token: str | None = None,
    by: str | None = None,
) -> str:
    """Push the pairs and a data set card to the Hub; returns the repository URL. The token is never stored. A
    lead's action."""
    access.check_lead(by, "push to the Hub")
    from huggingface_hub import DatasetCard

    try:
        repo_id = hub.check_repo_id(repo_id, "my-org/bank-prefs")
    except ValueError as error:
        raise PreferenceError(str(error)) from None
    token = hub.get_token(token)
    if not token:
        raise PreferenceError("No Hugging Face token: set HF_TOKEN, run `hf auth login`, or log in on the Space.")
    rows, pair_set = preference_rows(store, set_name, mode)
    if not rows:
        raise PreferenceError(f"No preference pairs in {set_name!r} yet: rank some prompts first.")
    if not hub.reachable():
        raise PreferenceError("The Hugging Face Hub is out of reach (no network?); export the files instead.")
    from datasets import Dataset

    Dataset.from_list(rows).push_to_hub(repo_id, private=private, token=token)
    DatasetCard(dataset_card(store, set_name, mode, pair_set)).push_to_hub(repo_id, repo_type="dataset", token=token)
    return f"https://huggingface.co/datasets/{repo_id}"
