"""Rankings: who ranked what, the annotator's queue, undo and history, pairs for training, and agreement.

A ranking is a list of tiers of response ids, best first; responses in one tier are tied. Each submission is one
transaction. An annotator has one current ranking per prompt: a new one replaces it and the old one stays as
history (status 'replaced'); undo marks the newest 'undone' and brings back the one it replaced.
"""

import itertools
import json
import random
import time
import zlib
from dataclasses import dataclass, field

from studio.core import access
from studio.core.store import Store
from studio.data import rubric
from studio.inference.decode import prompt_messages

LETTERS = "ABCDEFGH"
# With two candidates one key decides: a or b better, = tie, x both bad -> (better tier, worse tier, label).
PAIRWISE = {"a": ([0], [1], None), "b": ([1], [0], None), "=": ([0, 1], None, None), "x": ([0, 1], None, "both_bad")}
# With one candidate there is nothing to order: the annotator rates it good or bad (stored as feedback, for KTO).
THUMBS = {"+": "up", "-": "down"}
MAX_SHOWN = len(LETTERS)  # candidates shown per prompt: the newest ones when a prompt has more
PAIR_MODES = {
    "best_worst": "best vs worst",
    "all": "all ordered pairs",
    "one_per_prompt": "one pair per prompt, best vs worst",
}


class RankingError(ValueError):
    """A ranking that cannot be saved; the message says what to fix."""


@dataclass
class Task:
    prompt_id: int
    set_name: str
    text: str
    system: str
    context: list
    response_ids: list[int]  # in display order: LETTERS[i] names response_ids[i]
    responses: list[str]
    total_responses: int
    current: list[list[int]] | None = None  # this annotator's current ranking, if any
    current_label: str | None = None
    current_thumb: str | None = None  # one candidate: this annotator's rating of it, up or down

    def messages(self) -> list[dict]:
        return prompt_messages({"text": self.text, "system": self.system, "context": self.context})

    def order_text(self) -> str:
        """The current ranking written the way it is typed, e.g. 'B > A = C > D' (a rating: '+' or '-')."""
        if self.current_thumb:
            return {kind: key for key, kind in THUMBS.items()}[self.current_thumb]
        if not self.current:
            return ""
        index = {rid: LETTERS[i] for i, rid in enumerate(self.response_ids)}
        return " > ".join(" = ".join(index[r] for r in tier if r in index) for tier in self.current)


# Names that only a kind of annotator may carry: a typed name cannot pass for a Space login, a Ground Truth worker
# or an import.
JUDGE_PREFIX = "judge:"  # a judge's own rankings (judge:rubric:<set>, judge:llm:<model>), never a person's
RESERVED_FOR = {"gt:": "groundtruth", "import:": "import", "hf:": "hf", JUDGE_PREFIX: "judge"}
RESERVED_PREFIXES = tuple(RESERVED_FOR)


def check_annotator(name: str, kind: str = "local") -> str:
    name = (name or "").strip()
    if not name:
        raise RankingError("Enter your annotator name first: every ranking records who made it.")
    if len(name) > 64 or not name.isprintable():
        raise RankingError("An annotator name is at most 64 printable characters.")
    for prefix, owner in RESERVED_FOR.items():
        if name.startswith(prefix) and kind != owner:
            raise RankingError(f"Names starting with {', '.join(RESERVED_PREFIXES)} are reserved; choose another.")
    return name


def identity(typed: str, username: str | None = None, hub_user: str | None = None) -> tuple[str, str]:
    """(annotator name, kind) of whoever is at the page: the Hugging Face login (a Space) as `hf:<user>`, else the
    --auth user, else the typed name (checked: reserved prefixes are refused)."""
    if hub_user:
        return f"hf:{hub_user}", "hf"
    if username:
        return username, "auth"
    return check_annotator(typed, "local"), "local"


def act(
    store: Store,
    annotator: str,
    kind: str,
    set_name: str | None,
    prompt_id: int | None,
    typed: str,
    max_age: float = 0.0,
) -> tuple["Task | None", str]:
    """What the Rank tab's order box (and each of its buttons) does with `typed` while `prompt_id` is on screen:
    `u` undo the last submission, `p` the previous ranking, `s` skip, else an order (or `r`, a, b, =, x) to save.
    Returns the task to show next and a note for the status line; RankingError says what is wrong. max_age: how old
    a read of the set's team-wide counts may be (TEAM_MAX_AGE)."""
    if not set_name:
        raise RankingError("Choose a prompt set.")
    command = (typed or "").strip().lower()
    on_screen = load_task(store, prompt_id, annotator) if prompt_id is not None else None
    if command == "u":
        undone = undo_last(store, annotator)
        if undone is None:
            return on_screen or next_task(store, set_name, annotator, max_age), "Nothing to undo."
        return load_task(store, undone, annotator), "Undone: rank it again, or skip it."
    if command == "p":
        ids = [h["prompt_id"] for h in history(store, set_name, annotator)]
        position = ids.index(prompt_id) + 1 if prompt_id in ids else 0
        if position >= len(ids):
            return on_screen or next_task(store, set_name, annotator, max_age), "No earlier ranking."
        return (
            load_task(store, ids[position], annotator),
            "Your earlier ranking: change it and press Enter, or press Enter to keep it.",
        )
    if on_screen is None:
        return next_task(store, set_name, annotator, max_age), ""
    if command == "s":
        skip(store, annotator, prompt_id)
        return next_task(store, set_name, annotator, max_age), "Skipped."
    submit_order(store, annotator, on_screen, typed, kind)
    return next_task(store, set_name, annotator, max_age), "Saved."


def empty_queue_note(store: Store, set_name: str) -> str:
    """Why there is nothing to rank: everything is ranked, or no prompt has candidates yet."""
    if progress(store, set_name, None)["total"]:
        return "Nothing left to rank in this set for you."
    return (
        "Generate candidates for this set first (Generate tab: 2 or more per prompt to rank them, or 1 to rate "
        "each answer good or bad)."
    )


def annotator_id(db, name: str, kind: str = "local") -> int:
    """The id of annotator `name`, created on first use (inside the caller's transaction)."""
    row = db.execute("SELECT id FROM annotators WHERE name = ?", (name,)).fetchone()
    if row:
        return row[0]
    return db.execute("INSERT INTO annotators (name, kind) VALUES (?, ?)", (name, kind)).lastrowid


def parse_order(order: str, count: int) -> list[list[int]]:
    """'B > A = C > D', 'b a=c d' or 'ba=cd' -> tiers of display indices, best first. Every candidate once."""
    letters = LETTERS[:count]
    tiers: list[list[int]] = []
    seen, tie_next = set(), False
    for char in (order or "").upper():
        if char in " \t>,":
            continue
        if char == "=":
            if not tiers:
                raise RankingError("'=' ties a candidate to the one before it; start with a letter.")
            tie_next = True
            continue
        if char not in letters:
            raise RankingError(f"{char!r} is not a candidate here; use {', '.join(letters)}.")
        if char in seen:
            raise RankingError(f"{char} appears twice; each candidate goes in the order once.")
        seen.add(char)
        if tie_next:
            tiers[-1].append(letters.index(char))
        else:
            tiers.append([letters.index(char)])
        tie_next = False
    if not seen:
        raise RankingError(f"Type the order best to worst, e.g. '{' > '.join(letters)}'; '=' ties two.")
    if tie_next:
        raise RankingError("The order ends with '='; tie it to a candidate or remove it.")
    missing = [letter for letter in letters if letter not in seen]
    if missing:
        raise RankingError(
            f"Rank every candidate: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing."
        )
    return tiers


def response_for_letter(store: Store, prompt_id: int, annotator: str, letter: str) -> int | None:
    """The response shown to `annotator` as candidate `letter` of the prompt (None for an empty letter)."""
    letter = (letter or "").strip().upper()
    if not letter:
        return None
    ids = load_task(store, prompt_id, annotator).response_ids
    if len(letter) != 1 or letter not in LETTERS[: len(ids)]:
        raise RankingError(f"{letter!r} is not a candidate here; use {', '.join(LETTERS[: len(ids)])}.")
    return ids[LETTERS.index(letter)]


def _shown_responses(store: Store, prompt_id: int) -> tuple[list[tuple[int, str]], int]:
    rows = store.query("SELECT id, text FROM responses WHERE prompt_id = ? ORDER BY id DESC", (prompt_id,))
    return [(r["id"], r["text"]) for r in rows[:MAX_SHOWN]], len(rows)


def load_task(store: Store, prompt_id: int, annotator: str) -> Task:
    """One prompt with its candidates in this annotator's order (shuffled, stable: no position bias)."""
    row = store.query(
        "SELECT p.id, p.text, p.system, p.context, s.name FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id "
        "WHERE p.id = ?",
        (prompt_id,),
    )
    if not row:
        raise RankingError(f"Prompt {prompt_id} does not exist.")
    row = row[0]
    shown, total = _shown_responses(store, prompt_id)
    random.Random(f"{annotator}|{prompt_id}").shuffle(shown)
    task = Task(
        prompt_id,
        row["name"],
        row["text"],
        row["system"],
        json.loads(row["context"] or "[]"),
        [r[0] for r in shown],
        [r[1] for r in shown],
        total,
    )
    current = store.query(
        "SELECT r.tiers, r.label FROM rankings r JOIN annotators a ON a.id = r.annotator_id "
        "WHERE r.prompt_id = ? AND a.name = ? AND r.status = 'current' AND r.source != 'import'",
        (prompt_id, annotator),
    )
    if current:
        task.current, task.current_label = json.loads(current[0]["tiers"]), current[0]["label"]
    if len(shown) == 1:
        rated = store.query(
            "SELECT f.kind FROM feedback f JOIN annotators a ON a.id = f.annotator_id "
            "WHERE f.response_id = ? AND a.name = ?",
            (shown[0][0], annotator),
        )
        task.current_thumb = rated[0]["kind"] if rated else None
    return task


# A prompt counts as ranked by an annotator while their current ranking is newer than its newest candidate: new
# candidates (the next round's, from an aligned model) put it back in the queue, to be ranked with the earlier ones.
# A single candidate rated good or bad counts the same way. A prompt's votes are people's current rankings of it
# (imports and judges left out) and ratings of its single candidate.
#
# The queue and the progress line are asked for on every submission. They read the set once (_set_state: every
# prompt with candidates, its newest candidate and its votes: a pass over the whole set) and the annotator's own
# rankings and skips (a few rows); with `max_age`, a read of the set up to that many seconds old is reused, so that
# a team of 50 submitting at once does not read a 500-prompt set 50 times a second (the Rank tab passes
# TEAM_MAX_AGE: the team's counts and the order by votes may then lag by that much; the annotator's own part is
# always read now, and the Rank tab reads the set anew for an annotator whose queue is empty).
TEAM_MAX_AGE = 1.0
_SET_READS: dict[tuple[str, str], tuple[float, dict]] = {}


def _set_state(store: Store, set_name: str, max_age: float = 0.0) -> dict:
    """The set as the queue sees it: "prompts" {id: (position, newest candidate's time, votes, active-order score)}
    of its prompts with candidates, "target", "ordered" (an active order is set), the team's counts, and "levels":
    the prompts grouped by the part of the queue's order that is the same for everyone (_queue_key), best first."""
    key = (str(store.path), set_name)
    now = time.monotonic()
    if max_age > 0 and key in _SET_READS and now - _SET_READS[key][0] <= max_age:
        return _SET_READS[key][1]
    rows = store.query(
        """SELECT p.id, p.position, s.target, s.queue_order, pr.score,
                  (SELECT MAX(n.created_at) FROM responses n WHERE n.prompt_id = p.id) AS newest,
                  (SELECT COUNT(*) FROM rankings r JOIN annotators x ON x.id = r.annotator_id
                   WHERE r.prompt_id = p.id AND r.status = 'current' AND r.source != 'import' AND x.kind != 'judge')
                  + (SELECT COUNT(*) FROM feedback f JOIN responses c ON c.id = f.response_id
                     WHERE c.prompt_id = p.id) AS votes
           FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id LEFT JOIN priorities pr ON pr.prompt_id = p.id
           WHERE s.name = ? AND EXISTS (SELECT 1 FROM responses n WHERE n.prompt_id = p.id)
           ORDER BY p.position""",
        (set_name,),
    )
    target = rows[0]["target"] if rows else None
    state = {
        "target": target,
        "ordered": bool(rows and rows[0]["queue_order"]),
        "prompts": {r["id"]: (r["position"], r["newest"], r["votes"], r["score"]) for r in rows},
    }
    votes = [r["votes"] for r in rows]
    state["counts"] = {
        "total": len(rows),
        "ranked_by_anyone": sum(1 for v in votes if v),
        "rankings": sum(votes),
        "target": target,
        "reached_target": sum(1 for v in votes if v >= target) if target else None,
    }
    levels: dict[tuple, list[int]] = {}
    for pid in state["prompts"]:  # in the set's order
        levels.setdefault(_level(state, pid), []).append(pid)
    state["levels"] = sorted(levels.items())
    _SET_READS[key] = (now, state)
    return state


def _level(state: dict, pid: int) -> tuple:
    """The part of the queue's order that is the same for every annotator: with a target, prompts below it first;
    with an active order, the most informative first (smallest score); then, with a target, the fewest votes; without
    one, the set's order."""
    position, _, votes, score = state["prompts"][pid]
    target = state["target"]
    return (
        target is not None and votes >= target,
        (1e300 if score is None else score) if state["ordered"] else 0,
        votes if target is not None else 0,
        position if target is None else 0,
    )


def _queue_key(state: dict, skipped: dict, salt: int):
    """The queue's order: skipped ones last (oldest skip first), then _level, then, with a target, an order of the
    annotator's own (`salt`: so a team starting together spreads out over equally needed prompts)."""

    def key(pid: int):
        return (
            pid in skipped,
            skipped.get(pid, ""),
            *_level(state, pid),
            _spread(state, pid, salt),
            state["prompts"][pid][0],
        )

    return key


def _spread(state: dict, pid: int, salt: int) -> int:
    return 0 if state["target"] is None else (pid * salt) % 2147483647


def _waits(state: dict, done: dict, pid: int) -> bool:
    """Whether the annotator (`done`: _done_by) has not ranked prompt `pid` since its newest candidate arrived."""
    return done.get(pid, "") < state["prompts"][pid][1]


def _done_by(store: Store, set_name: str, annotator: str) -> dict[int, str]:
    """{prompt id: when} of the annotator's newest current ranking (or rating) of each prompt of the set."""
    rows = store.query(
        """SELECT r.prompt_id AS id, r.created_at AS at FROM rankings r JOIN annotators a ON a.id = r.annotator_id
           JOIN prompts p ON p.id = r.prompt_id JOIN prompt_sets s ON s.id = p.prompt_set_id
           WHERE a.name = ? AND s.name = ? AND r.status = 'current'
           UNION ALL
           SELECT c.prompt_id, f.created_at FROM feedback f JOIN annotators a ON a.id = f.annotator_id
           JOIN responses c ON c.id = f.response_id JOIN prompts p ON p.id = c.prompt_id
           JOIN prompt_sets s ON s.id = p.prompt_set_id WHERE a.name = ? AND s.name = ?""",
        (annotator, set_name, annotator, set_name),
    )
    done: dict[int, str] = {}
    for r in rows:
        done[r["id"]] = max(done.get(r["id"], ""), r["at"])
    return done


def _mine(store: Store, set_name: str, annotator: str, max_age: float) -> tuple[dict, dict, dict, int]:
    """(set state, the annotator's done prompts, their skips, their salt): what their queue is made of."""
    state = _set_state(store, set_name, max_age)
    skipped = {
        r["prompt_id"]: r["created_at"]
        for r in store.query(
            "SELECT k.prompt_id, k.created_at FROM skips k JOIN annotators a ON a.id = k.annotator_id WHERE a.name = ?",
            (annotator,),
        )
    }
    return state, _done_by(store, set_name, annotator), skipped, zlib.crc32(annotator.encode()) or 1


def queue(store: Store, set_name: str, annotator: str, max_age: float = 0.0) -> list[int]:
    """Prompt ids of the set with candidates that this annotator has not ranked since their newest candidate
    arrived, in the order they are served (_queue_key); max_age: see TEAM_MAX_AGE."""
    state, done, skipped, salt = _mine(store, set_name, annotator, max_age)
    waiting = [pid for pid in state["prompts"] if _waits(state, done, pid)]
    return sorted(waiting, key=_queue_key(state, skipped, salt))


def next_task(store: Store, set_name: str, annotator: str, max_age: float = 0.0) -> Task | None:
    """The first prompt of queue(), found without ordering the whole set: the best level with a prompt waiting for
    this annotator (most of a busy annotator's work stops at the first levels), then the skipped ones."""
    state, done, skipped, salt = _mine(store, set_name, annotator, max_age)
    prompts = state["prompts"]
    for _, pids in state["levels"]:
        waiting = [pid for pid in pids if pid not in skipped and _waits(state, done, pid)]
        if waiting:
            return load_task(
                store, min(waiting, key=lambda pid: (_spread(state, pid, salt), prompts[pid][0])), annotator
            )
    waiting = [pid for pid in skipped if pid in prompts and _waits(state, done, pid)]
    return load_task(store, min(waiting, key=_queue_key(state, skipped, salt)), annotator) if waiting else None


def insert_ranking(
    db,
    annotator: str,
    prompt_id: int,
    tiers: list[list[int]],
    *,
    label: str | None = None,
    source: str = "local",
    kind: str = "local",
    suggested_by: str | None = None,
) -> int | None:
    """Make `tiers` the annotator's current ranking of the prompt, inside the caller's transaction.

    The ranking it replaces stays as history. Returns the new ranking's id, or None if it equals the current one.
    """
    flat = [rid for tier in tiers for rid in tier]
    if len(flat) < 2 or len(set(flat)) != len(flat) or any(not tier for tier in tiers):
        raise RankingError("A ranking orders two or more different candidates.")
    known = {r[0] for r in db.execute("SELECT id FROM responses WHERE prompt_id = ?", (prompt_id,))}
    if not set(flat) <= known:
        raise RankingError(f"Responses {sorted(set(flat) - known)} are not candidates of prompt {prompt_id}.")
    who = annotator_id(db, annotator, kind)
    current = db.execute(
        "SELECT tiers, label, suggested_by FROM rankings WHERE prompt_id = ? AND annotator_id = ? "
        "AND status = 'current' AND source != 'import'",
        (prompt_id, who),
    ).fetchone()
    if (
        current
        and json.loads(current["tiers"]) == tiers
        and current["label"] == label
        and current["suggested_by"] == suggested_by
    ):
        return None
    db.execute(
        "UPDATE rankings SET status = 'replaced' WHERE prompt_id = ? AND annotator_id = ? "
        "AND status = 'current' AND source != 'import'",
        (prompt_id, who),
    )
    db.execute("DELETE FROM skips WHERE prompt_id = ? AND annotator_id = ?", (prompt_id, who))
    return db.execute(
        "INSERT INTO rankings (prompt_id, annotator_id, tiers, label, source, suggested_by) VALUES (?, ?, ?, ?, ?, ?)",
        (prompt_id, who, json.dumps(tiers), label, source, suggested_by),
    ).lastrowid


def submit(
    store: Store,
    annotator: str,
    prompt_id: int,
    tiers: list[list[int]],
    *,
    label: str | None = None,
    kind: str = "local",
    suggested_by: str | None = None,
) -> int | None:
    """Save `tiers` (response ids, best first) as this annotator's current ranking; one transaction. `kind` is how
    they signed in (local, auth, hf); `suggested_by` names the judge whose suggestion they accepted unchanged."""
    annotator = check_annotator(annotator, kind)
    with store.tx() as db:
        return insert_ranking(db, annotator, prompt_id, tiers, label=label, kind=kind, suggested_by=suggested_by)


def submit_order(store: Store, annotator: str, task: Task, typed: str, kind: str = "local") -> int | None:
    """Save what the annotator typed for `task` (a prompt on screen): an order like 'b a=c d', with two candidates
    a / b / = / x (both bad), with one + (good) or - (bad), or 'r' to accept the rubric's suggestion."""
    command = (typed or "").strip().lower()
    label, suggested_by = None, None
    if len(task.response_ids) == 1:
        if command not in THUMBS:
            raise RankingError("There is one answer here: type + if it is good, - if it is bad (s skips it).")
        return rate(store, annotator, task, THUMBS[command], kind)
    if command == "r":
        found = suggestion(store, task)
        if found is None:
            raise RankingError("There is no suggestion for this prompt: its set has no rubric.")
        tiers, suggested_by = found[0], found[2]
    elif len(task.response_ids) == 2 and command in PAIRWISE:
        first, second, label = PAIRWISE[command]
        tiers = [first] + ([second] if second else [])
    else:
        tiers = parse_order(typed, len(task.response_ids))
    return submit(
        store,
        annotator,
        task.prompt_id,
        [[task.response_ids[i] for i in tier] for tier in tiers],
        label=label,
        kind=kind,
        suggested_by=suggested_by,
    )


def rate(store: Store, annotator: str, task: Task, thumb: str, kind: str = "local") -> int:
    """Thumbs up or down on the single candidate of `task`, stored as feedback on that response (with the model and
    adapter that wrote it; studio.data.feedback turns it into a KTO row). A new rating replaces the annotator's earlier
    one of the same answer. Returns the feedback id."""
    annotator = check_annotator(annotator, kind)
    if len(task.response_ids) != 1 or thumb not in THUMBS.values():
        raise RankingError("Only a prompt with a single answer is rated up or down; rank several answers instead.")
    (response_id,) = task.response_ids
    with store.tx() as db:
        written = db.execute("SELECT model, adapter FROM responses WHERE id = ?", (response_id,)).fetchone()
        if written is None:
            raise RankingError(f"Response {response_id} does not exist any more.")
        who = annotator_id(db, annotator, kind)
        db.execute("DELETE FROM feedback WHERE response_id = ? AND annotator_id = ?", (response_id, who))
        db.execute("DELETE FROM skips WHERE prompt_id = ? AND annotator_id = ?", (task.prompt_id, who))
        return db.execute(
            "INSERT INTO feedback (annotator_id, model, adapter, messages, answer, kind, response_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                who,
                written["model"],
                written["adapter"],
                json.dumps(task.messages(), ensure_ascii=False),
                task.responses[0],
                thumb,
                response_id,
            ),
        ).lastrowid


def suggestion(store: Store, task: Task) -> tuple[list[list[int]], str, str] | None:
    """A judge's order of the candidates on screen: (tiers of display indices, the text shown, e.g. 'B > A = C
    (B 0.95, ...)', the judge's name). The newest stored judge ranking of the prompt (judges.prerank) when there is
    one covering these candidates, else the set's rubric scored now ('rubric:<set>'); None without either, and
    for a single candidate (nothing to order)."""
    if len(task.response_ids) < 2:
        return None
    rows = store.query(
        "SELECT a.name, r.tiers FROM rankings r JOIN annotators a ON a.id = r.annotator_id WHERE r.prompt_id = ? "
        "AND r.status = 'current' AND a.kind = 'judge' ORDER BY r.id DESC LIMIT 1",
        (task.prompt_id,),
    )
    if rows:
        shown = {rid: i for i, rid in enumerate(task.response_ids)}
        tiers = [[shown[rid] for rid in tier if rid in shown] for tier in json.loads(rows[0]["tiers"])]
        tiers = [tier for tier in tiers if tier]
        if sum(map(len, tiers)) == len(task.response_ids):
            order = " > ".join(" = ".join(LETTERS[i] for i in tier) for tier in tiers)
            return tiers, f"{order} (by {rows[0]['name'].removeprefix(JUDGE_PREFIX)})", rows[0]["name"]
    try:
        checks = rubric.for_set(store, task.set_name)
    except rubric.RubricError:
        return None
    if checks is None:
        return None
    scores = checks.score_many([task.text] * len(task.responses), task.responses)
    tiers = rubric.rank_scores(scores)
    order = " > ".join(" = ".join(LETTERS[i] for i in tier) for tier in tiers)
    listed = ", ".join(f"{LETTERS[i]} {scores[i]:.2f}" for tier in tiers for i in tier)
    return tiers, f"{order} (scores {listed})", f"rubric:{task.set_name}"


def skip(store: Store, annotator: str, prompt_id: int) -> None:
    """Put the prompt at the end of this annotator's queue (kept across reloads)."""
    annotator = check_annotator(annotator)
    with store.tx() as db:
        who = annotator_id(db, annotator)
        db.execute("INSERT OR REPLACE INTO skips (annotator_id, prompt_id) VALUES (?, ?)", (who, prompt_id))


def undo_last(store: Store, annotator: str) -> int | None:
    """Withdraw the annotator's newest submission; the ranking it replaced, if any, is current again (a rating of a
    single answer is withdrawn).

    Returns the prompt id, or None if there is nothing to undo.
    """
    annotator = check_annotator(annotator)
    with store.tx() as db:
        last = db.execute(
            "SELECT r.id, r.prompt_id, r.annotator_id, r.created_at FROM rankings r "
            "JOIN annotators a ON a.id = r.annotator_id "
            "WHERE a.name = ? AND r.status = 'current' AND r.source = 'local' ORDER BY r.id DESC LIMIT 1",
            (annotator,),
        ).fetchone()
        rated = db.execute(
            "SELECT f.id, c.prompt_id, f.created_at FROM feedback f JOIN annotators a ON a.id = f.annotator_id "
            "JOIN responses c ON c.id = f.response_id WHERE a.name = ? ORDER BY f.id DESC LIMIT 1",
            (annotator,),
        ).fetchone()
        if rated is not None and (last is None or rated["created_at"] > last["created_at"]):
            db.execute("DELETE FROM feedback WHERE id = ?", (rated["id"],))
            return rated["prompt_id"]
        if last is None:
            return None
        db.execute("UPDATE rankings SET status = 'undone' WHERE id = ?", (last["id"],))
        db.execute(
            "UPDATE rankings SET status = 'current' WHERE id = (SELECT MAX(id) FROM rankings WHERE prompt_id = ? "
            "AND annotator_id = ? AND status = 'replaced' AND id < ?)",
            (last["prompt_id"], last["annotator_id"], last["id"]),
        )
        return last["prompt_id"]


def history(store: Store, set_name: str, annotator: str) -> list[dict]:
    """The prompts this annotator has ranked (or whose single answer they rated) in the set, newest first."""
    rows = store.query(
        """SELECT p.id AS prompt_id, p.text, MAX(done.at) AS last, MAX(done.seq) AS seq FROM (
               SELECT r.prompt_id, r.created_at AS at, r.id AS seq FROM rankings r
               JOIN annotators a ON a.id = r.annotator_id
               WHERE a.name = ? AND r.status = 'current' AND r.source != 'import'
               UNION ALL
               SELECT c.prompt_id, f.created_at, f.id FROM feedback f JOIN annotators a ON a.id = f.annotator_id
               JOIN responses c ON c.id = f.response_id WHERE a.name = ?) AS done
           JOIN prompts p ON p.id = done.prompt_id JOIN prompt_sets s ON s.id = p.prompt_set_id
           WHERE s.name = ? GROUP BY p.id ORDER BY last DESC, seq DESC""",
        (annotator, annotator, set_name),
    )
    return [dict(r) for r in rows]


def progress(store: Store, set_name: str, annotator: str | None, max_age: float = 0.0) -> dict:
    """Rankable prompts (any candidate: one alone is rated good or bad), how many this annotator ranked, how many
    people ranked, and with an overlap target, how many prompts reached it (max_age: see TEAM_MAX_AGE)."""
    state = _set_state(store, set_name, max_age)
    prompts = state["prompts"]
    done = _done_by(store, set_name, annotator) if annotator else {}
    return {**state["counts"], "mine": sum(1 for pid in done if pid in prompts and not _waits(state, done, pid))}


def get_guidelines(store: Store, set_name: str) -> str:
    return store.get_text("guidelines", set_name) or ""


def save_guidelines(store: Store, set_name: str, text: str, updated_by: str | None = None, by=None) -> None:
    """The annotators' guidelines of a prompt set. `updated_by`: the name recorded with them; `by`: the logged-in
    user, who must be a lead (access)."""
    access.check_lead(by, "edit the guidelines")
    if not store.set_text("guidelines", set_name, text, updated_by):
        raise RankingError(f"No prompt set named {set_name!r}.")


def current_rankings(
    store: Store, set_name: str, include_imports: bool = True, include_judges: bool = False
) -> list[dict]:
    """The set's current rankings; judges' (judges.prerank) only when asked for: they are not people's votes."""
    rows = store.query(
        """SELECT r.id, r.prompt_id, a.name AS annotator, r.tiers, r.label, r.source FROM rankings r
           JOIN annotators a ON a.id = r.annotator_id JOIN prompts p ON p.id = r.prompt_id
           JOIN prompt_sets s ON s.id = p.prompt_set_id
           WHERE s.name = ? AND r.status = 'current' AND (? OR r.source != 'import') AND (? OR a.kind != 'judge')
           ORDER BY r.id""",
        (set_name, include_imports, include_judges),
    )
    return [dict(r, tiers=json.loads(r["tiers"])) for r in rows]


def ordered_pairs(tiers: list[list[int]], mode: str) -> list[tuple[int, int]]:
    """(better, worse) pairs one ranking votes for. Ties give no pair."""
    if mode in ("best_worst", "one_per_prompt"):
        return [(a, b) for a in tiers[0] for b in tiers[-1]] if len(tiers) > 1 else []
    if mode == "all":
        return [(a, b) for i, upper in enumerate(tiers) for lower in tiers[i + 1 :] for a in upper for b in lower]
    raise ValueError(f"Unknown pair mode {mode!r}: use one of {', '.join(PAIR_MODES)}.")


@dataclass
class Pair:
    prompt_id: int
    chosen_id: int
    rejected_id: int
    votes_for: float  # votes (or their weights) for chosen over rejected
    votes_against: float


@dataclass
class PairSet:
    pairs: list[Pair] = field(default_factory=list)
    conflicts: int = 0  # response pairs on which annotators disagree (some said a > b, others b > a)
    unresolved: int = 0  # conflicts with no majority: dropped
    rankings: int = 0


def pairs_from_rankings(
    rankings: list[dict], mode: str = "best_worst", weights: dict[str, float] | None = None
) -> PairSet:
    """Majority over every annotator's vote on each pair of responses of a prompt; with `weights` (annotator ->
    weight, 1 where missing: team.quality's), a weighted majority."""
    votes: dict[tuple[int, int, int], list[float]] = {}  # (prompt, low id, high id) -> [low better, high better]
    for ranking in rankings:
        weight = 1.0 if weights is None else weights.get(ranking["annotator"], 1.0)
        for better, worse in ordered_pairs(ranking["tiers"], mode):
            low, high = sorted((better, worse))
            votes.setdefault((ranking["prompt_id"], low, high), [0, 0])[better != low] += weight
    result = PairSet(rankings=len(rankings))
    for (prompt_id, low, high), (low_wins, high_wins) in sorted(votes.items()):
        if low_wins and high_wins:
            result.conflicts += 1
        if low_wins == high_wins:
            result.unresolved += 1
        elif low_wins > high_wins:
            result.pairs.append(Pair(prompt_id, low, high, low_wins, high_wins))
        else:
            result.pairs.append(Pair(prompt_id, high, low, high_wins, low_wins))
    if mode == "one_per_prompt":
        # Tied best (or worst) answers give several pairs that teach the same thing; keep the clearest one per prompt
        # (the largest majority), ties broken by a fixed draw so that no answer property (length, age) decides.
        def strength(pair):
            return pair.votes_for - pair.votes_against, random.Random(
                f"{pair.prompt_id}/{pair.chosen_id}/{pair.rejected_id}"
            ).random()

        best: dict[int, Pair] = {}
        for pair in result.pairs:
            if pair.prompt_id not in best or strength(pair) > strength(best[pair.prompt_id]):
                best[pair.prompt_id] = pair
        result.pairs = [best[p] for p in sorted(best)]
    return result


def agreement(store: Store, set_name: str) -> dict:
    """Agreement between annotators who ranked the same prompts (imported pairs left out).

    pairwise: the share of (prompt, annotator pair, response pair) judgements where both said the same
    (a better, b better, or tie). kendall_tau: scipy's tau-b between the two rankings of each prompt, averaged.
    """
    from scipy.stats import kendalltau

    by_prompt: dict[int, list[dict]] = {}
    for ranking in current_rankings(store, set_name, include_imports=False):
        if ranking["annotator"].startswith(JUDGE_PREFIX):
            continue  # people's agreement: a judge's agreement with people is reported apart
        by_prompt.setdefault(ranking["prompt_id"], []).append(ranking)
    same = judged = 0
    taus = []
    annotators = set()
    for rankings in by_prompt.values():
        for first, second in itertools.combinations(rankings, 2):
            rank_a = {rid: i for i, tier in enumerate(first["tiers"]) for rid in tier}
            rank_b = {rid: i for i, tier in enumerate(second["tiers"]) for rid in tier}
            common = sorted(rank_a.keys() & rank_b.keys())
            if len(common) < 2:
                continue
            annotators.update((first["annotator"], second["annotator"]))
            for x, y in itertools.combinations(common, 2):
                judged += 1
                same += _sign(rank_a[x] - rank_a[y]) == _sign(rank_b[x] - rank_b[y])
            tau = kendalltau([rank_a[r] for r in common], [rank_b[r] for r in common]).statistic
            if tau == tau:  # NaN when one side ties everything
                taus.append(float(tau))
    return {
        "annotators": len(annotators),
        "judgements": judged,
        "pairwise": same / judged if judged else None,
        "kendall_tau": sum(taus) / len(taus) if taus else None,
        "ranking_pairs": len(taus),
    }


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)
