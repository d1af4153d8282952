import pytest
from playwright.sync_api import expect

from tests.browser.helpers import start_generation

pytestmark = pytest.mark.browser


def test_a_status_line_says_what_happens_now_not_what_happened_before(app_server, page):
    # A visitor makes a mistake: an error on the page.
    other = page.context.browser.new_page()  # a second visitor: its own session
    other.goto(app_server["url"])
    expect(other.locator("#gen-prompt-set input")).to_have_value("bank (45 prompts)")
    other.locator("#gen-model input").fill("./no-such-model")
    other.locator("#gen-start").click()
    expect(other.locator("#gen-status")).to_contain_text("Error: Unknown model", timeout=60_000)

    # Someone else starts generating: the model is busy for a while.
    page.goto(app_server["url"])
    start_generation(page, limit=3, k=2, max_new_tokens=64)
    expect(page.locator("#gen-status")).to_contain_text("of 3 prompts", timeout=120_000)

    # The first visitor fixes the mistake and asks again: the old error goes at once, and the page says why
    # nothing happens yet.
    other.locator("#gen-model input").fill("embedded")
    start_generation(other, limit=1, k=1, max_new_tokens=8)
    expect(other.locator("#gen-status")).to_contain_text("Waiting for the model: it is generating answers")
    expect(other.locator("#gen-status")).not_to_contain_text("Error")
    expect(page.locator("#gen-status")).to_contain_text("Saved 6 candidates", timeout=180_000)
    expect(other.locator("#gen-status")).to_contain_text("Saved 1 candidates for 1 of 1 prompts", timeout=120_000)
