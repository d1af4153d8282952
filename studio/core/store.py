"""The studio's one SQLite database: WAL mode, foreign keys on, one connection per thread, a schema version.

Every user action is one transaction (`Store.tx()`); the schema grows by appending a tuple of statements to MIGRATIONS,
never by editing an entry that has shipped, so an older database is brought up to date when it is opened.
"""

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

MIGRATIONS = [
    # 1: prompt sets, prompts and the candidate responses generated for them.
    (
        """CREATE TABLE prompt_sets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,              -- builtin | upload:<file name> | hub:<id>:<split>:<column>
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
        """CREATE TABLE prompts (
        id INTEGER PRIMARY KEY,
        prompt_set_id INTEGER NOT NULL REFERENCES prompt_sets(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        text TEXT NOT NULL,
        system TEXT NOT NULL DEFAULT '',
        context TEXT NOT NULL DEFAULT '',  -- earlier turns of a conversation as a JSON message list, '' for none
        UNIQUE (prompt_set_id, text, system, context)
    )""",
        """CREATE TABLE responses (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
        model TEXT NOT NULL,               -- the model reference as the user gave it: embedded, a Hub id, a folder
        adapter TEXT,                      -- LoRA adapter folder or Hub id, NULL for the plain model
        text TEXT NOT NULL,
        params TEXT NOT NULL,              -- generation parameters as JSON
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
        "CREATE INDEX responses_prompt ON responses(prompt_id)",
    ),
    # 2: annotators, their rankings (with history), skips, and per-set guidelines.
    (
        """CREATE TABLE annotators (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,         -- anna | hf:anna | gt:<workerId> | import:<set>
        kind TEXT NOT NULL,                -- local | hf | auth | groundtruth | import
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
        """CREATE TABLE rankings (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
        annotator_id INTEGER NOT NULL REFERENCES annotators(id),
        tiers TEXT NOT NULL,               -- JSON, best first: [[12], [14, 15], [13]] (14 and 15 tied)
        label TEXT,                        -- both_bad, where a pairwise vote said so
        source TEXT NOT NULL,              -- local | groundtruth | import
        status TEXT NOT NULL DEFAULT 'current',  -- current | replaced (kept as history) | undone
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
        # One current ranking per annotator and prompt; an imported data set may hold several pairs per prompt.
        """CREATE UNIQUE INDEX rankings_current ON rankings(prompt_id, annotator_id)
        WHERE status = 'current' AND source != 'import'""",
        "CREATE INDEX rankings_annotator ON rankings(annotator_id, status)",
        """CREATE TABLE skips (
        annotator_id INTEGER NOT NULL REFERENCES annotators(id),
        prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        PRIMARY KEY (annotator_id, prompt_id)
    )""",
        """CREATE TABLE guidelines (
        prompt_set_id INTEGER PRIMARY KEY REFERENCES prompt_sets(id) ON DELETE CASCADE,
        text TEXT NOT NULL,
        updated_by TEXT,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
    ),
    # 3: training jobs.
    (
        """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        method TEXT NOT NULL,              -- dpo | sft | reward
        status TEXT NOT NULL,              -- queued | running | stopping | stopped | finished | failed
        folder TEXT NOT NULL,
        base_model TEXT NOT NULL,
        data TEXT NOT NULL,                -- what it trains on, as the user chose it
        data_info TEXT NOT NULL DEFAULT '{}',  -- JSON: prompt set, pair mode, pairs, ranking ids, annotators
        parent_job_id INTEGER REFERENCES jobs(id),
        pid INTEGER,
        resume INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        started_at TEXT,
        finished_at TEXT
    )""",
    ),
    # 4: evaluations: two or more models answer the same prompts; blind A/B votes and automatic scores on the answers.
    # Their answers live apart from `responses`, so they never enter the Rank queue or the training pairs.
    (
        """CREATE TABLE evaluations (
        id INTEGER PRIMARY KEY,
        prompt_set_id INTEGER NOT NULL REFERENCES prompt_sets(id) ON DELETE CASCADE,
        params TEXT NOT NULL,              -- generation parameters as JSON (seed included)
        status TEXT NOT NULL DEFAULT 'generating',  -- generating | ready | cancelled
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
        """CREATE TABLE eval_models (
        evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,         -- 0 is the baseline the others are compared with
        label TEXT NOT NULL,               -- base (embedded) | job 3 (dpo) | an adapter folder or Hub id
        model TEXT NOT NULL,               -- the base model reference
        adapter TEXT,                      -- LoRA adapter folder or Hub id, NULL for the plain model
        job_id INTEGER REFERENCES jobs(id),
        PRIMARY KEY (evaluation_id, position)
    )""",
        """CREATE TABLE eval_answers (
        id INTEGER PRIMARY KEY,
        evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
        text TEXT NOT NULL,
        UNIQUE (evaluation_id, position, prompt_id)
    )""",
        """CREATE TABLE eval_votes (
        id INTEGER PRIMARY KEY,
        evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
        annotator_id INTEGER NOT NULL REFERENCES annotators(id),
        first INTEGER NOT NULL,            -- model positions, first < second
        second INTEGER NOT NULL,
        left_position INTEGER NOT NULL,    -- which of the two was shown on the left (A)
        outcome TEXT NOT NULL CHECK (outcome IN ('first', 'second', 'tie', 'both_bad')),
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        UNIQUE (evaluation_id, prompt_id, annotator_id, first, second)
    )""",
        """CREATE TABLE eval_scores (
        answer_id INTEGER NOT NULL REFERENCES eval_answers(id) ON DELETE CASCADE,
        scorer TEXT NOT NULL,              -- toxicity:profanity-check | toxicity:<hub id> | reward:job <id>
        value REAL NOT NULL,
        PRIMARY KEY (answer_id, scorer)
    )""",
    ),
    # 5: rounds: each job's round (1 + the round of its parent or of the models whose candidates it learnt from).
    ("ALTER TABLE jobs ADD COLUMN round INTEGER NOT NULL DEFAULT 1",),
    # 6: rubrics per prompt set; accepted suggestions; alignment reports; several samples per prompt in evaluations.
    (
        """CREATE TABLE rubrics (
        prompt_set_id INTEGER PRIMARY KEY REFERENCES prompt_sets(id) ON DELETE CASCADE,
        text TEXT NOT NULL,                -- the rubric's YAML (checked before it is stored)
        updated_by TEXT,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
        # The judge (rubric:<set>) whose suggested order the annotator accepted unchanged; NULL for their own order.
        "ALTER TABLE rankings ADD COLUMN suggested_by TEXT",
        """CREATE TABLE reports (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        status TEXT NOT NULL DEFAULT 'generating',  -- generating | ready | cancelled | failed
        settings TEXT NOT NULL,            -- JSON: prompt sets, samples per prompt, generation parameters
        summary TEXT,                      -- JSON: the effect per set and scorer, lengths, warnings, examples
        error TEXT,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
        "ALTER TABLE evaluations ADD COLUMN report_id INTEGER REFERENCES reports(id) ON DELETE CASCADE",
        "ALTER TABLE evaluations ADD COLUMN samples INTEGER NOT NULL DEFAULT 1",
        # JSON settings of the report to make when the job finishes; NULL for none.
        "ALTER TABLE jobs ADD COLUMN report_settings TEXT",
        # eval_answers and eval_votes gain a sample number (several seeds per prompt): SQLite changes a UNIQUE
        # constraint only by rebuilding the table (foreign keys are off while migrations run).
        """CREATE TABLE eval_answers_new (
        id INTEGER PRIMARY KEY,
        evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
        sample INTEGER NOT NULL DEFAULT 0,
        text TEXT NOT NULL,
        UNIQUE (evaluation_id, position, prompt_id, sample)
    )""",
        "INSERT INTO eval_answers_new (id, evaluation_id, position, prompt_id, text) "
        "SELECT id, evaluation_id, position, prompt_id, text FROM eval_answers",
        "DROP TABLE eval_answers",
        "ALTER TABLE eval_answers_new RENAME TO eval_answers",
        """CREATE TABLE eval_votes_new (
        id INTEGER PRIMARY KEY,
        evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
        sample INTEGER NOT NULL DEFAULT 0,
        annotator_id INTEGER NOT NULL REFERENCES annotators(id),
        first INTEGER NOT NULL,
        second INTEGER NOT NULL,
        left_position INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('first', 'second', 'tie', 'both_bad')),
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        UNIQUE (evaluation_id, prompt_id, sample, annotator_id, first, second)
    )""",
        "INSERT INTO eval_votes_new (id, evaluation_id, prompt_id, annotator_id, first, second, left_position, "
        "outcome, created_at) SELECT id, evaluation_id, prompt_id, annotator_id, first, second, left_position, "
        "outcome, created_at FROM eval_votes",
        "DROP TABLE eval_votes",
        "ALTER TABLE eval_votes_new RENAME TO eval_votes",
    ),
    # Merges of a job's adapter into a full model, recorded where job state lives (they outlive an app restart).
    (
        "ALTER TABLE jobs ADD COLUMN merge_status TEXT",  # merging | merged | failed; NULL: never merged
        "ALTER TABLE jobs ADD COLUMN merge_pid INTEGER",
    ),
    # A team: how many annotators should rank each prompt of a set (NULL: no target), and gold prompts (the lead's
    # known best answer, used to estimate each annotator's quality; annotators are not told which prompts are gold).
    (
        "ALTER TABLE prompt_sets ADD COLUMN target INTEGER",
        # Active selection: the queue puts first the prompts with the lowest priority (team.set_active_order).
        "ALTER TABLE prompt_sets ADD COLUMN queue_order TEXT",  # NULL: the set's order | how priorities were made
        """CREATE TABLE priorities (
        prompt_id INTEGER PRIMARY KEY REFERENCES prompts(id) ON DELETE CASCADE,
        score REAL NOT NULL                -- lower first: a reward model's margin, or minus the disagreement
    )""",
        """CREATE TABLE gold (
        prompt_id INTEGER PRIMARY KEY REFERENCES prompts(id) ON DELETE CASCADE,
        response_id INTEGER NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
        marked_by TEXT,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
    ),
    # Reactions to single answers where people chat: thumbs up or down, or a better answer written by hand.
    (
        """CREATE TABLE feedback (
        id INTEGER PRIMARY KEY,
        annotator_id INTEGER NOT NULL REFERENCES annotators(id),
        model TEXT NOT NULL,               -- the base model reference
        adapter TEXT,                      -- the adapter folder (or Hub id) that answered; NULL: the base itself
        messages TEXT NOT NULL,            -- JSON: the conversation up to the user's message the answer replies to
        answer TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('up', 'down', 'edit')),
        edited TEXT,                       -- kind edit: the better answer
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
    ),
    # Thumbs on the Rank tab: a prompt with a single candidate is judged good or bad there; the candidate is kept.
    (
        "ALTER TABLE feedback ADD COLUMN response_id INTEGER REFERENCES responses(id) ON DELETE SET NULL",
        "CREATE INDEX feedback_response ON feedback(response_id)",
    ),
    # API keys for the OpenAI-compatible endpoint (studio/shipping/openai_api.py): only each key's SHA-256 is kept.
    (
        """CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        digest TEXT NOT NULL UNIQUE,       -- sha256 of the key, hex
        created_by TEXT,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        last_used_at TEXT
    )""",
    ),
    # Jobs run elsewhere (training/sagemaker.py): JSON of where (the service, the training job's name, region, role,
    # instance, S3 prefix) and its last known state; NULL: a local job. The local queue never starts these.
    ("ALTER TABLE jobs ADD COLUMN remote TEXT",),
    # The Rank tab's read of a set (ranking._set_state) asks each prompt for its newest candidate: one index seek;
    # an annotator's own ratings (ranking._done_by) are found from the annotator, not from every prompt of the set.
    # And the LLM judge's prompt kept per set.
    (
        "CREATE INDEX responses_prompt_time ON responses(prompt_id, created_at)",
        "DROP INDEX responses_prompt",
        "CREATE INDEX feedback_annotator ON feedback(annotator_id)",
        # The LLM judge's prompt as the set's lead last ran it (studio/data/judges.py), shown again next time.
        """CREATE TABLE judge_prompts (
        prompt_set_id INTEGER PRIMARY KEY REFERENCES prompt_sets(id) ON DELETE CASCADE,
        text TEXT NOT NULL,
        updated_by TEXT,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
    ),
    # Demonstrations: good answers written (or edited from a candidate) by a person, for a rule of the rubric that
    # the model's candidates never show (studio/data/demonstrations.py). Apart from responses, so that a person's
    # answer is never taken for a model's candidate.
    (
        """CREATE TABLE demonstrations (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
        annotator_id INTEGER NOT NULL REFERENCES annotators(id),
        rule TEXT,                         -- the rubric check it shows; NULL: none named
        text TEXT NOT NULL,
        edited_from INTEGER REFERENCES responses(id) ON DELETE SET NULL,  -- the candidate it was edited from
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
        "CREATE INDEX demonstrations_prompt ON demonstrations(prompt_id)",
    ),
    # Inference servers (studio/inference/servers.py): OpenAI-compatible base URLs and the NAME of the environment
    # variable that holds the key, never the key; the models the server listed when it was last checked.
    (
        """CREATE TABLE servers (
        name TEXT PRIMARY KEY,
        urls TEXT NOT NULL,                -- JSON list of base URLs ending in /v1; requests are spread over them
        key_env TEXT,                      -- the environment variable with the API key; NULL: no key
        models TEXT NOT NULL DEFAULT '[]', -- JSON list of model ids from GET /v1/models at the last check
        added_by TEXT,
        checked_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
    ),
    # A prompt's reference answer (an `answer` column in the upload), for verifiable rewards in online RL.
    ("ALTER TABLE prompts ADD COLUMN answer TEXT",),
]

SCHEMA_VERSION = len(MIGRATIONS)


_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _writers(path: Path) -> threading.RLock:
    """The lock this process's writers of the database at `path` share (one per file, whichever Store opened it)."""
    key = str(path.resolve())
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.RLock())


class Store:
    """Opens (and migrates) the database at `path`; hands each thread its own connection."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = _writers(self.path)
        self._migrate()

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN ourselves, so a transaction is exactly one `tx()` block.
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self):
        """One transaction: committed when the block ends, rolled back whole if it raises."""
        conn = self.connection()
        # Writers of this process queue on a lock, handed over the moment a transaction ends; left to SQLite, a
        # waiting writer sleeps in its busy handler between tries, and a team submitting at once waits on those
        # sleeps (bench/annotators.py). Another process is still kept out by SQLite's own lock (its busy timeout).
        with self._write_lock:
            # IMMEDIATE takes the write lock up front, so two writers queue instead of failing half-way.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, params=()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    SET_TEXTS = ("guidelines", "rubrics", "judge_prompts")  # the tables of texts a prompt set has one of

    def get_text(self, table: str, set_name: str) -> str | None:
        """The text a prompt set has one of (SET_TEXTS); None when it has none."""
        assert table in self.SET_TEXTS
        rows = self.query(
            f"SELECT t.text FROM {table} t JOIN prompt_sets s ON s.id = t.prompt_set_id WHERE s.name = ?", (set_name,)
        )
        return rows[0]["text"] if rows else None

    def set_text(self, table: str, set_name: str, text: str, updated_by: str | None) -> bool:
        """Write the text a prompt set has one of (SET_TEXTS), replacing the old one; False when there is no set of
        that name."""
        assert table in self.SET_TEXTS
        with self.tx() as db:
            row = db.execute("SELECT id FROM prompt_sets WHERE name = ?", (set_name,)).fetchone()
            if row is None:
                return False
            db.execute(
                f"INSERT INTO {table} (prompt_set_id, text, updated_by) VALUES (?, ?, ?) "
                "ON CONFLICT (prompt_set_id) DO UPDATE SET text = excluded.text, updated_by = "
                "excluded.updated_by, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                (row["id"], text, updated_by),
            )
        return True

    def schema_version(self) -> int:
        return self.connection().execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self):
        conn = self.connection()
        # Off while the schema changes (a table rebuild drops and renames tables), checked before the commit.
        conn.execute("PRAGMA foreign_keys=OFF")
        try:
            with self.tx() as db:
                self._apply_migrations(db)
                broken = db.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"{self.path}: the migration left {len(broken)} broken references.")
        finally:
            conn.execute("PRAGMA foreign_keys=ON")

    def _apply_migrations(self, db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this studio's {SCHEMA_VERSION}: "
                "update Align Studio."
            )
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
