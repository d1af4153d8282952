"""The whole loop in a real browser on the embedded model: generate 4 prompts x 2, rank them, train DPO a few steps,
read its alignment report, chat side by side, cast blind votes, see the win rate."""

import re

import pytest
from playwright.sync_api import expect

from studio.core.store import Store
from tests.browser.helpers import set_number, start_generation


def drawn(locator, rgb, tolerance=40) -> int:
    """How many pixels of an element's screenshot have about this colour (a legend's marker alone has about 30)."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(rgb)).max(axis=-1) < tolerance).sum())


pytestmark = pytest.mark.browser


def test_generate_rank_train_compare_vote(app_server, page):
    store = Store(app_server["home"] / "studio.db")
    page.goto(app_server["url"])

    # Generate: the first 4 bank prompts, 2 candidates each.
    start_generation(page, limit=4, k=2, max_new_tokens=24)
    expect(page.locator("#gen-status")).to_contain_text("Saved 8 candidates for 4 of 4 prompts", timeout=180_000)

    # The Data tab before any ranking: no pairs yet.
    page.get_by_role("tab", name="Data").click()
    expect(page.locator("#data-summary")).to_contain_text("0 pairs from 0 rankings")

    # Rank: pairwise, keyboard only.
    page.get_by_role("tab", name="Rank").click()
    expect(page.locator("#rank-set input")).to_have_value("bank (45 prompts)")
    page.locator("#rank-annotator textarea").fill("anna")
    page.locator("#rank-annotator textarea").press("Enter")
    for done in range(1, 5):
        expect(page.locator("#rank-cand-b textarea")).to_be_visible()
        page.locator("#rank-order textarea").fill("a")
        page.locator("#rank-order textarea").press("Enter")
        expect(page.locator("#rank-progress")).to_contain_text(f"Ranked by you: {done} / 4")

    # Back on the Data tab, the count follows the rankings just made.
    page.get_by_role("tab", name="Data").click()
    expect(page.locator("#data-summary")).to_contain_text("4 pairs from 4 rankings")

    # Train: DPO, 3 steps.
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-set input").click()
    page.get_by_role("option", name="bank (45 prompts)").click()
    expect(page.locator("#train-data-summary")).to_contain_text("4 pairs from 4 rankings by 1 annotator(s)")
    page.get_by_text("Hyperparameters").click()
    expect(page.locator("#train-settings-note")).to_contain_text("4 pairs on a small model")
    set_number(page, "train-steps", 3)
    page.locator("#train-auto-report input").uncheck()  # made by hand below, on 2 prompts
    page.locator("#train-launch").click()
    expect(page.locator("#train-launch-status")).to_contain_text("Job 1 is running", timeout=60_000)
    expect(page.locator("#train-progress")).to_contain_text("finished", timeout=300_000)

    # The rewards plot draws its lines (chosen, rejected, margin), not only axes and a legend.
    expect(page.locator("#train-plot-1 canvas, #train-plot-1 svg").first).to_be_visible()
    page.wait_for_timeout(1000)
    assert drawn(page.locator("#train-plot-1"), (0xF5, 0x85, 0x18)) > 80  # the "rejected" line, Vega's orange
    assert drawn(page.locator("#train-plot-1"), (0xE4, 0x57, 0x56)) > 80  # the "margin" line, Vega's red

    # The alignment report: base and adapter on held-out prompts, scored, against the noise floor.
    expect(page.locator("#train-report-status")).to_contain_text("No report yet", timeout=30_000)
    expect(page.locator("#train-report-sets")).to_contain_text("bank")  # the 41 bank prompts it did not train on
    set_number(page, "train-report-samples", 2)
    set_number(page, "train-report-limit", 2)
    set_number(page, "train-report-tokens", 24)
    page.locator("#train-report-go").click()
    expect(page.locator("#train-report-status")).to_contain_text(
        re.compile(r"Report 1 \(.*prompts x 2"), timeout=240_000
    )
    table = page.locator("#train-report")
    expect(table).to_contain_text("rubric")
    expect(table).to_contain_text("toxicity")
    # Per rule of the bank rubric, on the prompts each applies to, and how often the answers decline to help.
    rules = page.locator("#train-report-rules")
    expect(rules).to_contain_text("Helps with everyday questions")
    expect(rules).to_contain_text("Never asks for a password, PIN or code")
    expect(rules).to_contain_text("Declines to help (lower is better)")
    # The first two bank prompts it did not train on, each with both answers.
    expect(page.locator("#train-report-examples")).to_contain_text("Where can I find my IBAN?")
    page.screenshot(path=str(app_server["home"] / "report.png"), full_page=True)

    # Compare: one message, both sides answer; markup typed by the user is shown as text.
    page.get_by_role("tab", name="Compare").click()
    expect(page.locator("#cmp-model input")).to_have_value(
        "job 1: dpo on embedded (bank (one pair per prompt, best vs worst))"
    )
    page.get_by_text("Sampling (the same for both sides)").click()
    set_number(page, "cmp-max-tokens", 16)
    page.locator("#cmp-message textarea").fill("Can I freeze my <b>card</b>?")
    page.locator("#cmp-message textarea").press("Enter")
    for side in ("#cmp-base", "#cmp-aligned"):
        expect(page.locator(side)).to_contain_text("Can I freeze my <b>card</b>?", timeout=120_000)
    expect(page.locator("#cmp-status")).to_contain_text("Seed", timeout=120_000)
    assert page.locator("#cmp-base b, #cmp-aligned b").count() == 0
    expect(page.locator("#cmp-aligned")).to_contain_text("Aligned model: job 1 (dpo)")
    expect(page.locator("#cmp-base")).to_contain_text("Base model: embedded")
    assert len(page.locator("#cmp-aligned").inner_text()) > len("Can I freeze my <b>card</b>?")

    # Evaluate: base vs the DPO job on 2 prompts of the held-out set, blind votes by keyboard.
    page.get_by_role("tab", name="Evaluate").click()
    expect(page.locator("#ev-models")).to_contain_text("job 1: dpo")
    expect(page.locator("#ev-set input")).to_have_value("helpful_harmless (41 prompts)")
    set_number(page, "ev-limit", 2)
    set_number(page, "ev-max-tokens", 16)
    set_number(page, "ev-samples", 1)
    page.locator("#ev-create").click()
    # Evaluation 1 holds the report's answers (open to blind votes too); this is the second.
    expect(page.locator("#ev-create-status")).to_contain_text("Evaluation 2: 2 prompts answered", timeout=180_000)
    page.locator("#ev-annotator textarea").fill("ben")
    page.locator("#ev-annotator textarea").press("Enter")
    expect(page.locator("#ev-progress")).to_contain_text("Comparison 1 of 2")
    vote_area = ["#ev-a", "#ev-b", "#ev-prompt", "#ev-progress", "#ev-reveal"]
    for selector in vote_area:  # no model name before the vote
        text = page.locator(selector).inner_text() + (
            page.locator(f"{selector} textarea").input_value() if page.locator(f"{selector} textarea").count() else ""
        )
        assert "job" not in text and "base" not in text and "embedded" not in text
    page.locator("#ev-key textarea, #ev-key input").first.fill("b")
    page.locator("#ev-key textarea, #ev-key input").first.press("Enter")
    expect(page.locator("#ev-reveal")).to_contain_text("You voted B better. A was ")
    expect(page.locator("#ev-progress")).to_contain_text("Comparison 2 of 2")
    page.get_by_role("button", name="Tie (=)").click()
    expect(page.locator("#ev-reveal")).to_contain_text("You voted tie.")
    expect(page.locator("#ev-prompt textarea")).to_have_value("")
    results = page.locator("#ev-results")
    expect(results).to_contain_text("job 1 (dpo)")
    expect(results).to_contain_text("base (embedded)")
    votes = store.query("SELECT outcome, left_position FROM eval_votes ORDER BY id")
    assert len(votes) == 2 and votes[1]["outcome"] == "tie"
    aligned_won = votes[0]["outcome"] == "second"  # B was the right-hand answer: the aligned one if it sat there
    expect(results).to_contain_text("100.0%" if aligned_won else "0.0%")
    page.locator("#ev-score").click()
    expect(page.locator("#ev-score-status")).to_contain_text("Scored 4 answers with rubric", timeout=60_000)
    expect(page.locator("#ev-scores")).to_contain_text("rubric")
    # The chart: a bar per model (Vega's blue at 70% opacity) with its interval.
    expect(page.locator("#ev-plot canvas, #ev-plot svg").first).to_be_visible()
    page.wait_for_timeout(1000)
    assert drawn(page.locator("#ev-plot"), (130, 160, 194), tolerance=25) > 500
    page.screenshot(path=str(app_server["home"] / "evaluate.png"), full_page=True)

    # A fresh page (another session): the vote panel opens on the newest evaluation, and scoring acts on it.
    page.reload()
    page.get_by_role("tab", name="Evaluate").click()
    expect(page.locator("#ev-pick input")).to_have_value(re.compile(r"^2: base \(embedded\) \| job 1"))
    page.locator("#ev-scorer input").fill("toxicity")
    page.locator("#ev-scorer input").press("Enter")
    page.locator("#ev-score").click()
    expect(page.locator("#ev-score-status")).to_contain_text("Scored 4 answers with toxicity", timeout=60_000)
