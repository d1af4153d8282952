"""Two annotators in two browsers rank one set with an overlap target; a judge pre-ranks; the lead sees the team."""

import re

import pytest
from playwright.sync_api import expect

from studio.data import ranking
from tests.browser.conftest import WAIT_MS
from tests.browser.helpers import set_number, start_ranking
from tests.browser.test_rank_page import seed_candidates

pytestmark = pytest.mark.browser


def open_rank(browser, url, name):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(WAIT_MS)
    start_ranking(page, url, name)
    return page


def test_two_annotators_a_target_a_judge_and_the_lead_sees_the_team(app_server, browser):
    store, prompts = seed_candidates(app_server["home"], prompts=3, candidates=3)
    anna = open_rank(browser, app_server["url"], "anna")  # no leads named: anna may lead
    anna.get_by_text("Team: target, gold, agreement, quality").click()
    set_number(anna, "rank-target", 2)  # typed again if the just-opened panel puts its initial value back
    anna.locator("#rank-target-save").click()
    expect(anna.locator("#rank-team-status")).to_contain_text("now wants 2 annotators")
    anna.locator("#rank-judge-go").click()  # the bank set's rubric judges
    expect(anna.locator("#rank-team-status")).to_contain_text("judge:rubric:bank ranked 3 prompts", timeout=60_000)

    bob = open_rank(browser, app_server["url"], "bob")
    expect(bob.locator("#rank-progress")).to_contain_text("0 / 3 reached 2 annotators")
    expect(bob.locator("#rank-suggestion textarea")).to_have_value(re.compile(r"\(by rubric:bank\)$"))
    for page, orders in ((bob, ["r", "c b a", "a b c"]), (anna, ["a b c", "b a c", "c a b"])):  # bob accepts first
        for done, order in enumerate(orders, 1):
            shown = page.locator("#rank-prompt textarea").input_value()
            page.locator("#rank-order textarea").fill(order)
            page.locator("#rank-order textarea").press("Enter")
            try:  # a loaded CI machine can take seconds; say what the page showed if it never came
                expect(page.locator("#rank-progress")).to_contain_text(f"Ranked by you: {done} / 3")
            except AssertionError as error:
                raise AssertionError(
                    f"{error}\nstatus: {page.locator('#rank-status').inner_text()!r}, order box: "
                    f"{page.locator('#rank-order textarea').input_value()!r}, prompt before: "
                    f"{shown!r}, now: {page.locator('#rank-prompt textarea').input_value()!r}"
                )
    expect(anna.locator("#rank-progress")).to_contain_text("3 / 3 reached 2 annotators")

    anna.locator("#rank-team-show").click()
    status = anna.locator("#rank-team-status")
    expect(status).to_contain_text("Krippendorff's alpha (ordinal)")
    expect(status).to_contain_text("judge:rubric:bank: people's rankings identical to it")
    expect(status).to_contain_text("its suggestion accepted unchanged: 1.")
    table = anna.locator("#rank-team-table")
    expect(table).to_contain_text("anna")
    expect(table).to_contain_text("bob")
    anna.screenshot(path=str(app_server["home"] / "team.png"), full_page=True)
    # Stored as they were made: the judge's rankings under the judge, bob's accepted one under bob.
    rows = store.query(
        "SELECT a.name, a.kind, r.suggested_by FROM rankings r JOIN annotators a ON "
        "a.id = r.annotator_id WHERE r.status = 'current' ORDER BY r.id"
    )
    assert sum(1 for r in rows if r["kind"] == "judge") == 3
    assert [r["suggested_by"] for r in rows if r["name"] == "bob"].count("judge:rubric:bank") == 1
    assert len(ranking.current_rankings(store, "bank")) == 6
