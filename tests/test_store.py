import sqlite3
import threading

import pytest

from studio.core.store import SCHEMA_VERSION, Store


def test_new_database_is_wal_with_foreign_keys_and_current_schema(store):
    assert store.connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.connection().execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.schema_version() == SCHEMA_VERSION
    with pytest.raises(sqlite3.IntegrityError):  # foreign keys are enforced
        with store.tx() as db:
            db.execute("INSERT INTO prompts (prompt_set_id, position, text) VALUES (999, 0, 'x')")


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path):
    first = Store(tmp_path / "s.db")
    with first.tx() as db:
        db.execute("INSERT INTO prompt_sets (name, source) VALUES ('a', 'builtin')")
    second = Store(tmp_path / "s.db")
    assert [r["name"] for r in second.query("SELECT name FROM prompt_sets")] == ["a"]
    assert second.schema_version() == SCHEMA_VERSION


def test_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "s.db"
    Store(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this studio"):
        Store(path)


def test_transaction_is_all_or_nothing(store):
    with pytest.raises(ZeroDivisionError):
        with store.tx() as db:
            db.execute("INSERT INTO prompt_sets (name, source) VALUES ('a', 'builtin')")
            1 / 0
    assert store.query("SELECT COUNT(*) AS n FROM prompt_sets")[0]["n"] == 0


def test_threads_writing_at_once_lose_nothing(store):
    with store.tx() as db:
        set_id = db.execute("INSERT INTO prompt_sets (name, source) VALUES ('a', 'builtin')").lastrowid

    def write(n):
        for i in range(10):
            with store.tx() as db:
                db.execute(
                    "INSERT INTO prompts (prompt_set_id, position, text) VALUES (?, ?, ?)",
                    (set_id, n * 10 + i, f"prompt {n}-{i}"),
                )

    threads = [threading.Thread(target=write, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.query("SELECT COUNT(*) AS n FROM prompts")[0]["n"] == 200


def test_a_version_5_database_with_evaluations_is_migrated_keeping_every_row(tmp_path):
    from studio.core.store import MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys=ON")
    for statements in MIGRATIONS[:5]:
        for statement in statements:
            conn.execute(statement)
    conn.executescript("""
        PRAGMA user_version = 5;
        INSERT INTO prompt_sets (id, name, source) VALUES (1, 's', 'test');
        INSERT INTO prompts (id, prompt_set_id, position, text) VALUES (1, 1, 0, 'q');
        INSERT INTO annotators (id, name, kind) VALUES (1, 'anna', 'local');
        INSERT INTO evaluations (id, prompt_set_id, params) VALUES (1, 1, '{}');
        INSERT INTO eval_models (evaluation_id, position, label, model) VALUES (1, 0, 'base', 'm'), (1, 1, 'job', 'm');
        INSERT INTO eval_answers (id, evaluation_id, position, prompt_id, text)
            VALUES (7, 1, 0, 1, 'a'), (8, 1, 1, 1, 'b');
        INSERT INTO eval_scores (answer_id, scorer, value) VALUES (7, 'toxicity', 0.1), (8, 'toxicity', 0.2);
        INSERT INTO eval_votes (evaluation_id, prompt_id, annotator_id, first, second, left_position, outcome)
            VALUES (1, 1, 1, 0, 1, 0, 'second');
    """)
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert [tuple(r) for r in store.query("SELECT id, sample, text FROM eval_answers ORDER BY id")] == [
        (7, 0, "a"),
        (8, 0, "b"),
    ]
    assert [tuple(r) for r in store.query("SELECT sample, outcome FROM eval_votes")] == [(0, "second")]
    assert store.connection().execute("PRAGMA foreign_keys").fetchone()[0] == 1
    # The rebuilt tables keep their references: deleting the evaluation removes its answers and their scores.
    with store.tx() as db:
        db.execute("DELETE FROM evaluations WHERE id = 1")
    assert store.query("SELECT COUNT(*) AS n FROM eval_scores")[0]["n"] == 0
