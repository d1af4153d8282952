import re

import pytest
from playwright.sync_api import expect

from studio.core.store import Store
from tests.browser.helpers import set_number

pytestmark = pytest.mark.browser


def test_launch_a_grpo_job_on_reference_answers_and_see_each_reward(app_server, page):
    page.goto(app_server["url"])
    page.get_by_role("tab", name="Train").click()
    # Nothing ranked yet: said plainly, not as an error.
    expect(page.locator("#train-data-summary")).to_have_text(
        "No preference pairs in 'bank' yet: rank some prompts first (ties give no pair)."
    )
    page.get_by_label("Online RL (GRPO)", exact=True).check()
    expect(page.locator("#train-data-summary")).to_contain_text("45 prompts of bank")
    expect(page.locator("#train-settings-note")).to_contain_text("GRPO on 45 prompts")  # settings followed
    expect(page.locator("#train-set")).to_contain_text("Data: the prompts of a prompt set")  # not its rankings
    page.locator("#train-set input").click()
    page.get_by_role("option", name="bank_math (64 prompts)").click()
    expect(page.locator("#train-data-summary")).to_contain_text("64 prompts of bank_math")
    page.get_by_text("Online RL (RLOO, GRPO): rewards and sampling").click()  # the accordion
    page.get_by_label("correct_number: the number in the final answer matches the reference (within a cent)").check()
    page.get_by_label("answer_line: the answer ends with an 'Answer: ...' line").check()
    page.locator("#train-reward-weights textarea").fill("1, 0.5")
    set_number(page, "train-completion", 12)
    page.get_by_text("Hyperparameters").click()
    expect(page.locator("#train-loss input")).to_have_value(re.compile(r"^dapo: TRL's default"))  # GRPO's losses
    set_number(page, "train-steps", 3)
    expect(page.locator("#train-steps input[type=number]").first).to_have_value("3")
    page.locator("#train-launch").click()
    expect(page.locator("#train-launch-status")).to_contain_text("Job 1 is running", timeout=60_000)
    expect(page.locator("#train-progress")).to_contain_text("/ 3", timeout=180_000)
    expect(page.locator("#train-plot-1 canvas, #train-plot-1 svg").first).to_be_visible(timeout=30_000)
    expect(page.locator("#train-samples")).to_contain_text("correct_number", timeout=60_000)
    expect(page.locator("#train-lineage")).to_contain_text(
        "job 1 (grpo, rewards: correct_number x1, answer_line x0.5, round 1, data: bank_math (prompts))"
    )
    expect(page.locator("#train-progress")).to_contain_text("finished", timeout=180_000)
    page.screenshot(path=str(app_server["home"] / "rl.png"), full_page=True)
    job = Store(app_server["home"] / "studio.db").query("SELECT method, status, data FROM jobs")[0]
    assert tuple(job) == ("grpo", "finished", "bank_math (prompts)")
