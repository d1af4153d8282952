import sqlite3

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import start_generation

pytestmark = pytest.mark.browser


def test_generate_two_prompts_two_candidates(app_server, page):
    page.goto(app_server["url"])
    expect(page.locator("#gen-start")).to_be_visible()
    start_generation(page, limit=2, k=2, max_new_tokens=16)
    expect(page.locator("#gen-status")).to_contain_text("Saved 4 candidates for 2 of 2 prompts", timeout=180_000)
    table = page.locator("#gen-table")
    expect(table).to_contain_text("How do I open a savings account with Lumen Bank?")
    expect(table).to_contain_text("What is the daily limit for card payments")
    page.screenshot(path=str(app_server["home"] / "generate.png"), full_page=True)

    db = sqlite3.connect(app_server["home"] / "studio.db")
    rows = db.execute(
        "SELECT p.text, r.model, r.params FROM responses r JOIN prompts p ON p.id = r.prompt_id"
    ).fetchall()
    assert len(rows) == 4
    assert {r[0] for r in rows} == {
        "How do I open a savings account with Lumen Bank?",
        "What is the daily limit for card payments and how can I change it?",
    }
    assert all(r[1] == "embedded" and '"k": 2' in r[2] and '"max_new_tokens": 16' in r[2] for r in rows)


def test_candidates_show_as_text_not_html(app_server, page):
    # A model answer with markup must be shown literally, never run or rendered.
    from studio.core.store import Store

    store = Store(app_server["home"] / "studio.db")
    evil = '<b id="bold-answer">bold</b><img id="evil-img" src="x" onerror="window.pwned=1">'
    with store.tx() as db:
        prompt_id = db.execute(
            "SELECT p.id FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id "
            "WHERE s.name = 'bank' ORDER BY p.position LIMIT 1"
        ).fetchone()[0]
        db.execute(
            "INSERT INTO responses (prompt_id, model, text, params) VALUES (?, 'embedded', ?, '{}')", (prompt_id, evil)
        )
    page.goto(app_server["url"])
    table = page.locator("#gen-table")
    expect(table).to_contain_text('<b id="bold-answer">bold</b>')
    assert page.locator("#bold-answer").count() == 0 and page.locator("#evil-img").count() == 0
    assert page.evaluate("window.pwned") is None
