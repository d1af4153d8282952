"""Stored and uploaded text reaches Markdown components as text: no links, no images, no markup."""

import pytest
from playwright.sync_api import expect

from studio.core.store import Store

pytestmark = pytest.mark.browser

PAYLOAD = "![pic](http://127.0.0.1:9/leak.png) [click](http://example.com) <b>bold</b> **strong**"


def test_markdown_in_stored_labels_is_shown_literally(app_server, page):
    store = Store(app_server["home"] / "studio.db")
    with store.tx() as db:
        db.execute(
            "INSERT INTO jobs (method, status, folder, base_model, data) VALUES ('dpo', 'failed', ?, 'embedded', ?)",
            (str(app_server["home"] / "jobs" / "1-dpo"), PAYLOAD),
        )
        set_id = db.execute("SELECT id FROM prompt_sets WHERE name = 'bank'").fetchone()[0]
        prompt_id = db.execute(
            "SELECT id FROM prompts WHERE prompt_set_id = ? ORDER BY position", (set_id,)
        ).fetchone()[0]
        evaluation = db.execute(
            "INSERT INTO evaluations (prompt_set_id, params, status) VALUES (?, '{}', 'ready')", (set_id,)
        ).lastrowid
        for position, label in enumerate(["base (embedded)", PAYLOAD]):
            db.execute(
                "INSERT INTO eval_models (evaluation_id, position, label, model) VALUES (?, ?, ?, 'embedded')",
                (evaluation, position, label),
            )
            db.execute(
                "INSERT INTO eval_answers (evaluation_id, position, prompt_id, text) VALUES (?, ?, ?, ?)",
                (evaluation, position, prompt_id, f"answer {position}"),
            )
    fetched = []
    page.on("request", lambda request: fetched.append(request.url) if "leak.png" in request.url else None)
    page.goto(app_server["url"])

    page.get_by_role("tab", name="Train").click()
    page.locator("#train-job input").click()
    page.get_by_role("option").filter(has_text="1: dpo").click()
    lineage = page.locator("#train-lineage")
    expect(lineage).to_contain_text("![pic](http://127.0.0.1:9/leak.png) [click](http://example.com)")
    expect(lineage).to_contain_text("<b>bold</b> **strong**")
    assert lineage.locator("img, a, b, strong").count() == 0

    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#ev-annotator textarea").fill("anna")
    page.locator("#ev-annotator textarea").press("Enter")
    expect(page.locator("#ev-prompt textarea")).not_to_have_value("")
    page.locator("#ev-key textarea, #ev-key input").first.fill("a")
    page.locator("#ev-key textarea, #ev-key input").first.press("Enter")
    reveal = page.locator("#ev-reveal")
    expect(reveal).to_contain_text("![pic](http://127.0.0.1:9/leak.png)")
    assert reveal.locator("img, a, b, strong").count() == 0
    assert not fetched, fetched  # the browser never asked for the image
