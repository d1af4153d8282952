"""Steps the browser tests share."""

import warnings

from playwright.sync_api import expect


def set_number(page, elem_id, value):
    """Type a number and see it stay. A box inside an accordion opened a moment ago can take its initial value from
    the page just after Playwright's fill (measured: 3 of 8 tries at once, none with a 10 ms pause; a person is never
    that quick), so the value is typed again until it holds."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    for _ in range(3):
        box.fill(str(value))
        box.press("Enter")
        try:
            expect(box).to_have_value(str(value), timeout=1_000)
            page.wait_for_timeout(200)
            if box.input_value() == str(value):
                return
        except AssertionError:
            pass
    expect(box).to_have_value(str(value))


def start_generation(page, limit: int, k: int, max_new_tokens: int):
    """On the Generate tab of a loaded page (the default `bank` set): the first `limit` prompts, k candidates each."""
    expect(page.locator("#gen-prompt-set input")).to_have_value("bank (45 prompts)")
    set_number(page, "gen-limit", limit)
    set_number(page, "gen-k", k)
    set_number(page, "gen-max-tokens", max_new_tokens)
    page.locator("#gen-start").click()


def start_ranking(page, url: str, name: str):
    """Open the Rank tab on the default `bank` set and start ranking as `name` (typed, then Enter)."""
    page.goto(url)
    page.get_by_role("tab", name="Rank").click()
    expect(page.locator("#rank-set input")).to_have_value("bank (45 prompts)")
    page.locator("#rank-annotator textarea").fill(name)
    page.locator("#rank-annotator textarea").press("Enter")
    # The first prompt can take seconds on a busy machine: the page's other load events import the training stack
    # into the app process at the same time (seen under load: over 5 s, once in 5 runs). Once in about ten CI runs,
    # while opening the queue was a Gradio event, the name's start was lost altogether (the prompt stayed empty for
    # 30 s; cause not found); it now goes to the studio's route. A person would press Enter again, and so does this
    # step, once, with a warning in the test report so that a recurrence is seen.
    prompt = page.locator("#rank-prompt textarea")
    try:
        expect(prompt).not_to_have_value("", timeout=15_000)
    except AssertionError:
        warnings.warn(f"{name}'s start showed no prompt in 15 s; Enter pressed again")
        page.locator("#rank-annotator textarea").press("Enter")
        expect(prompt).not_to_have_value("")


def train_on_polite(app, page):
    """A fresh app with tests.helpers.clear_cut_set's rankings, on the Train tab with that set chosen; returns the
    app's Store."""
    from studio.core.store import Store
    from tests.helpers import clear_cut_set

    store = Store(app["home"] / "studio.db")
    clear_cut_set(store)
    page.goto(app["url"])
    page.get_by_role("tab", name="Train").click()
    # The page's load fills the set list and chooses the first set; a choice made before that would be undone.
    expect(page.locator("#train-set input")).to_have_value("bank (45 prompts)")
    page.locator("#train-set input").click()
    page.get_by_role("option", name="polite (8 prompts)").click()
    expect(page.locator("#train-data-summary")).to_contain_text("8 pairs from 8 rankings")
    # The settings recommended for this set are in (they follow the summary), so that they land before any edit.
    expect(page.locator("#train-settings-note")).to_contain_text("8 pairs on a small model")
    return store
