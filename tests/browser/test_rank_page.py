import json
import re

import pytest
from playwright.sync_api import expect

from pages.rank import RANK_ROUTE
from studio.core.store import Store
from studio.data.ranking import load_task
from tests.browser.helpers import start_ranking

pytestmark = pytest.mark.browser


def seed_candidates(home, prompts=3, candidates=3):
    """Hand-written candidates for the first prompts of the built-in bank set (no model needed)."""
    store = Store(home / "studio.db")
    with store.tx() as db:
        rows = db.execute(
            "SELECT p.id, p.text FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id "
            "WHERE s.name = 'bank' ORDER BY p.position LIMIT ?",
            (prompts,),
        ).fetchall()
        for prompt_id, _ in rows:
            for j in range(candidates):
                db.execute(
                    "INSERT INTO responses (prompt_id, model, text, params) VALUES (?, 'embedded', ?, '{}')",
                    (prompt_id, f"answer {j} <b>to</b> {prompt_id}"),
                )
    return store, [r[0] for r in rows]


def test_rank_two_prompts_with_the_keyboard_and_undo_one(app_server, page):
    store, (p1, p2, p3) = seed_candidates(app_server["home"])
    page.goto(app_server["url"])
    page.get_by_role("tab", name="Rank").click()
    expect(page.locator("#rank-set input")).to_have_value("bank (45 prompts)")
    expect(page.get_by_text("type the order best to worst")).to_be_visible()
    page.locator("#rank-annotator textarea").focus()
    page.keyboard.type("anna")
    page.keyboard.press("Enter")
    prompt = page.locator("#rank-prompt textarea")
    # The first prompt can take seconds on a busy machine (see start_ranking).
    expect(prompt).to_have_value("How do I open a savings account with Lumen Bank?", timeout=30_000)
    # The candidates are text: the markup is shown, not rendered.
    assert "<b>to</b>" in page.locator("#rank-cand-a textarea").input_value()
    expect(page.locator("#rank-order textarea")).to_be_focused()

    page.keyboard.type("b a=c")
    page.keyboard.press("Enter")
    expect(prompt).to_have_value("What is the daily limit for card payments and how can I change it?")
    expect(page.locator("#rank-progress")).to_contain_text("Ranked by you: 1 / 3")
    for letter in "abc":  # the same layout: only the texts change, every one of them
        expect(page.locator(f"#rank-cand-{letter} textarea")).to_have_value(re.compile(rf"^answer \d <b>to</b> {p2}$"))
    expect(page.locator("#rank-order textarea")).to_be_focused()
    page.keyboard.type("c > b > a")
    page.keyboard.press("Enter")
    expect(prompt).to_have_value("How long does a transfer to another bank take?")
    expect(page.locator("#rank-progress")).to_contain_text("Ranked by you: 2 / 3")

    page.keyboard.type("u")
    page.keyboard.press("Enter")
    expect(prompt).to_have_value("What is the daily limit for card payments and how can I change it?")
    expect(page.locator("#rank-status")).to_contain_text("Undone")
    expect(page.locator("#rank-progress")).to_contain_text("Ranked by you: 1 / 3")

    shown = load_task(store, p1, "anna").response_ids  # the letters anna saw, in order
    rows = store.query(
        "SELECT r.prompt_id, r.tiers, r.status, r.source, a.name FROM rankings r "
        "JOIN annotators a ON a.id = r.annotator_id ORDER BY r.id"
    )
    assert [(r["prompt_id"], r["status"], r["source"], r["name"]) for r in rows] == [
        (p1, "current", "local", "anna"),
        (p2, "undone", "local", "anna"),
    ]
    assert json.loads(rows[0]["tiers"]) == [[shown[1]], [shown[0], shown[2]]]

    # The earlier ranking, found in the list (filled when the panel opens) and shown to be changed.
    page.get_by_text("Change an earlier ranking").click()
    page.locator("#rank-earlier input").click()
    page.get_by_role("option", name="How do I open a savings account with Lumen Bank?").click()
    expect(prompt).to_have_value("How do I open a savings account with Lumen Bank?")
    expect(page.locator("#rank-order textarea")).to_have_value("B > A = C")


def test_pairwise_keys_and_errors(app_server, page):
    store, (p1,) = seed_candidates(app_server["home"], prompts=1, candidates=2)
    start_ranking(page, app_server["url"], "bob")
    expect(page.locator("#rank-prompt textarea")).to_have_value("How do I open a savings account with Lumen Bank?")
    expect(page.get_by_role("button", name="Both bad (x)")).to_be_visible()
    order = page.locator("#rank-order textarea")
    order.fill("z")
    order.press("Enter")
    expect(page.locator("#rank-status")).to_contain_text("'Z' is not a candidate here; use A, B.")
    order.fill("x")
    order.press("Enter")
    expect(page.locator("#rank-prompt textarea")).to_have_value("Nothing left to rank in this set for you.")
    row = store.query("SELECT tiers, label FROM rankings")[0]
    assert (len(json.loads(row["tiers"])), row["label"]) == (1, "both_bad")


@pytest.fixture
def auth_server(tmp_path):
    from tests.browser.conftest import run_app

    yield from run_app(tmp_path, "--auth", "carol:secret1", "dave:secret2")


def test_with_auth_the_logged_in_user_is_the_annotator(auth_server, page):
    store, (p1,) = seed_candidates(auth_server["home"], prompts=1, candidates=2)
    page.goto(auth_server["url"])
    page.get_by_label("username").fill("carol")
    page.get_by_label("password").fill("secret1")
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Rank").click()
    expect(page.locator("#rank-annotator textarea, #rank-annotator input").first).to_have_value("carol")
    expect(page.locator("#rank-prompt textarea")).to_have_value(
        "How do I open a savings account with Lumen Bank?", timeout=30_000
    )  # the first prompt: see start_ranking
    page.locator("#rank-order textarea").fill("b")
    page.locator("#rank-order textarea").press("Enter")
    expect(page.locator("#rank-status")).to_contain_text("Saved.")
    rows = store.query("SELECT a.name, a.kind FROM rankings r JOIN annotators a ON a.id = r.annotator_id")
    assert [tuple(r) for r in rows] == [("carol", "auth")]

    # The submission route that the page posts to: without the login's cookie it refuses and saves nothing; with
    # it, a name typed into the request does not change who ranks (the login does).
    route = auth_server["url"] + RANK_ROUTE
    body = {"name": "mallory", "set": "bank", "prompt_id": p1, "layout": None, "text": "a"}
    stranger = page.context.browser.new_context()
    refused = stranger.request.post(route, data=body)
    assert refused.status == 401 and "not logged in" in refused.json()[-1]
    stranger.close()
    assert store.query("SELECT COUNT(*) AS n FROM rankings")[0]["n"] == 1
    answer = page.request.post(route, data=body)  # the page's own cookies
    assert answer.status == 200 and "Saved" in answer.json()[-1]
    rows = store.query(
        "SELECT a.name, r.status FROM rankings r JOIN annotators a ON a.id = r.annotator_id ORDER BY r.id"
    )
    assert [tuple(r) for r in rows] == [("carol", "replaced"), ("carol", "current")]


def test_the_rubric_suggestion_is_saved_only_when_accepted(app_server, page):
    store = Store(app_server["home"] / "studio.db")
    with store.tx() as db:
        prompt_id = db.execute(
            "SELECT p.id FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id "
            "WHERE s.name = 'bank' ORDER BY p.position"
        ).fetchone()[0]
        good = "Happy to help! You can open a savings pot in the app under Accounts, then tap Add. It takes a minute."
        ids = [
            db.execute(
                "INSERT INTO responses (prompt_id, model, text, params) VALUES (?, 'embedded', ?, '{}')",
                (prompt_id, text),
            ).lastrowid
            for text in ("no", good)
        ]
    start_ranking(page, app_server["url"], "erin")
    suggestion = page.locator("#rank-suggestion textarea")
    expect(suggestion).to_have_value(re.compile(r"^([AB]) > ([AB]) \(scores \1 1\.00, \2 0\.\d\d\)$"))
    assert store.query("SELECT COUNT(*) AS n FROM rankings")[0]["n"] == 0  # shown, not saved
    page.locator("#rank-order textarea").fill("r")
    page.locator("#rank-order textarea").press("Enter")
    expect(page.locator("#rank-status")).to_contain_text("Saved.")
    row = store.query("SELECT tiers, suggested_by FROM rankings")[0]
    assert row["suggested_by"] == "rubric:bank" and json.loads(row["tiers"]) == [[ids[1]], [ids[0]]]


def test_tabs_open_on_what_to_do_next_not_on_errors(app_server, page):
    page.goto(app_server["url"])
    page.get_by_role("tab", name="Rank").click()
    page.locator("#rank-annotator textarea").fill("dora")
    page.locator("#rank-annotator textarea").press("Enter")
    expect(page.locator("#rank-prompt textarea")).to_have_value(
        "Generate candidates for this set first (Generate tab: 2 or more per prompt to rank them, or 1 to rate each "
        "answer good or bad)."
    )
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train-data-summary")).to_contain_text("No preference pairs in 'bank' yet")
    page.get_by_role("tab", name="Evaluate").click()
    expect(page.locator("#ev-progress")).to_have_text("No evaluation yet: generate one on the left, then vote here.")
    for tab in ("Generate", "Rank", "Data", "Train", "Compare", "Evaluate", "Publish"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(300)
        assert "Error" not in page.locator("body").inner_text(), f"{tab} opens on an error"


def test_a_single_answer_is_rated_with_a_key_or_a_button_and_reaches_the_data_tab(app_server, page):
    store, (p1, p2) = seed_candidates(app_server["home"], prompts=2, candidates=1)
    start_ranking(page, app_server["url"], "fay")
    expect(page.locator("#rank-prompt textarea")).to_have_value("How do I open a savings account with Lumen Bank?")
    expect(page.get_by_role("button", name="Good (+)")).to_be_visible()
    expect(page.get_by_role("button", name="A better (a)")).to_be_hidden()
    expect(page.get_by_label("One answer: + if it is good, - if it is bad; Enter submits")).to_be_visible()
    order = page.locator("#rank-order textarea")
    order.fill("b")
    order.press("Enter")
    expect(page.locator("#rank-status")).to_contain_text("There is one answer here: type + if it is good")
    order.fill("+")
    order.press("Enter")
    expect(page.locator("#rank-status")).to_contain_text("Saved.")
    expect(page.locator("#rank-prompt textarea")).to_have_value(
        "What is the daily limit for card payments and how can I change it?"
    )
    page.get_by_role("button", name="Bad (-)").click()
    expect(page.locator("#rank-prompt textarea")).to_have_value("Nothing left to rank in this set for you.")
    assert [
        (r["kind"], r["response_id"] is not None)
        for r in store.query("SELECT kind, response_id FROM feedback ORDER BY id")
    ] == [("up", True), ("down", True)]
    page.get_by_role("tab", name="Data").click()
    expect(page.locator("#data-feedback")).to_contain_text(
        "1 thumbs up, 1 thumbs down, 0 edited answer(s), by 1 person(s), on 1 model(s)."
    )
