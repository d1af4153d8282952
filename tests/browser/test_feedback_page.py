"""Feedback where people chat: a thumbs down and an edit in the Compare chat, found on the Data tab."""

import pytest
from playwright.sync_api import expect

from studio.core.store import Store
from studio.data import feedback
from tests.browser.helpers import set_number
from tests.helpers import random_lora

pytestmark = pytest.mark.browser


def test_a_thumbs_down_and_an_edit_in_the_chat_reach_the_data_tab(app_server, page):
    adapter = random_lora(app_server["home"] / "my-adapter")
    page.goto(app_server["url"])
    page.get_by_role("tab", name="Compare").click()
    page.locator("#cmp-model input").fill(str(adapter))
    page.locator("#cmp-model input").press("Enter")
    page.get_by_text("Sampling (the same for both sides)").click()
    set_number(page, "cmp-max-tokens", 8)  # a box in an accordion opened a moment ago: typed until it holds
    page.locator("#cmp-who textarea").fill("erin")
    page.locator("#cmp-message textarea").fill("How do I freeze my card?")
    page.locator("#cmp-message textarea").press("Enter")
    expect(page.locator("#cmp-status")).to_contain_text("Seed", timeout=180_000)

    page.locator("#cmp-base").get_by_label("Dislike").first.click()
    status = page.locator("#cmp-feedback-status")
    expect(status).to_contain_text("Saved: thumbs down on the base model's answer, by erin.")
    editor = page.locator("#cmp-aligned textarea").first
    for _ in range(3):  # a click that lands while the chat box redraws (after the thumbs) opens no editor: again
        page.locator("#cmp-aligned").get_by_label("Edit").last.click()  # the answer's (the question has one too)
        try:
            expect(editor).to_be_visible(timeout=15_000)
            break
        except AssertionError:
            pass
    editor.fill("Open the app, tap Cards, then Freeze. It takes a second.")
    page.locator("#cmp-aligned").get_by_label("Submit").click()
    expect(status).to_contain_text("Saved: your better aligned model's answer, by erin")
    expect(page.locator("#cmp-aligned")).to_contain_text("tap Cards, then Freeze")

    page.get_by_role("tab", name="Data").click()
    expect(page.locator("#data-feedback")).to_contain_text(
        "0 thumbs up, 1 thumbs down, 1 edited answer(s), by 1 person(s), on 2 model(s)."
    )
    store = Store(app_server["home"] / "studio.db")
    down, edit = feedback.listed(store)
    assert (down["kind"], down["adapter"], down["annotator"]) == ("down", None, "erin")
    assert (edit["kind"], edit["adapter"]) == ("edit", str(adapter))
    assert edit["messages"] == [{"role": "user", "content": "How do I freeze my card?"}]
    assert edit["edited"] == "Open the app, tap Cards, then Freeze. It takes a second."
    page.screenshot(path=str(app_server["home"] / "feedback.png"), full_page=True)
