import pytest
from playwright.sync_api import expect

from studio.core.store import Store
from studio.data import demonstrations
from studio.data.preferences import training_snapshot

pytestmark = pytest.mark.browser

RULE = "Fraud: freeze the card and call the fraud line"
LOST = "I lost my card. What should I do?"
DISPUTE = "How do I dispute a payment I don't recognise from a shop?"


def seed_fraud_candidates(home):
    """Candidates for the bank set's fraud prompts that never say to freeze the card (the rule no candidate shows),
    one of them friendlier than the other."""
    store = Store(home / "studio.db")
    with store.tx() as db:
        for text in (LOST, DISPUTE):
            (prompt_id,) = db.execute(
                "SELECT p.id FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id "
                "WHERE s.name = 'bank' AND p.text = ?",
                (text,),
            ).fetchone()
            for answer in ("Sorry to hear that! Please check your statement in the app.", "Wait and see."):
                db.execute(
                    "INSERT INTO responses (prompt_id, model, text, params) VALUES (?, 'embedded', ?, '{}')",
                    (prompt_id, answer),
                )
    return store


def test_write_a_demonstration_for_a_rule_no_candidate_shows(app_server, page):
    store = seed_fraud_candidates(app_server["home"])
    page.goto(app_server["url"])
    page.get_by_role("tab", name="Rank").click()
    expect(page.locator("#rank-set input")).to_have_value("bank (45 prompts)")
    page.locator("#rank-annotator textarea").fill("anna")
    page.get_by_text("Demonstrations: teach a rule that no candidate shows").click()
    page.locator("#demo-rule input").click()
    page.get_by_role("option", name=RULE).click()
    expect(page.locator("#demo-about")).to_contain_text("2 prompt(s) where all 2 candidate(s) fail")
    expect(page.locator("#demo-prompt textarea")).to_have_value(LOST)
    answer = page.locator("#demo-answer textarea")
    # The edit starts from the best candidate by the rubric (the friendly one).
    expect(answer).to_have_value("Sorry to hear that! Please check your statement in the app.")
    answer.fill("I'm sorry! Freeze the card in the Lumen app right away, then call our fraud line on 0800 123 456.")
    page.locator("#demo-save").click()
    expect(page.locator("#demo-status")).to_contain_text("saved, by anna: it passes the rule's check")
    expect(page.locator("#demo-prompt textarea")).to_have_value(DISPUTE)  # the next prompt to write for
    expect(page.locator("#demo-saved")).to_contain_text("Freeze the card in the Lumen app")
    page.locator("#demo-skip").click()
    expect(page.locator("#demo-about")).to_contain_text("No prompt left where every candidate fails")
    page.screenshot(path=str(app_server["home"] / "demonstrations.png"), full_page=True)

    (saved,) = demonstrations.listed(store, "bank")
    assert (saved["annotator"], saved["rule"], saved["prompt"]) == ("anna", RULE, LOST)
    assert saved["edited_from"] is not None
    rows, info = training_snapshot(store, "bank")  # no ranking yet: the demonstration alone makes pairs
    assert info["demonstrations"] == 1 and len(rows) == 2
    assert store.query("SELECT COUNT(*) AS n FROM responses WHERE text LIKE '%fraud line%'")[0]["n"] == 0

    # The same task for a workforce: a Ground Truth demonstrations job for the prompt still to write for.
    page.get_by_role("tab", name="Data").click()
    page.locator("#gt-task input").click()
    page.get_by_role("option", name=f"Write demonstrations: {RULE}").click()
    page.locator("#gt-export").click()
    expect(page.locator("#gt-status")).to_contain_text(f"(demonstrations of '{RULE}') for 1 prompts")
