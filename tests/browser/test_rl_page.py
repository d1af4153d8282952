import pytest
from playwright.sync_api import expect

from studio.core.store import Store
from tests.browser.helpers import set_number

pytestmark = pytest.mark.browser


def test_launch_an_rloo_job_and_see_its_reward_plot_and_samples(app_server, page):
    page.goto(app_server["url"])
    page.get_by_role("tab", name="Train").click()
    # Nothing ranked yet: said plainly, not as an error.
    expect(page.locator("#train-data-summary")).to_have_text(
        "No preference pairs in 'bank' yet: rank some prompts first (ties give no pair)."
    )
    page.get_by_label("Online RL (RLOO)", exact=True).check()
    expect(page.locator("#train-data-summary")).to_contain_text("45 prompts of bank")
    expect(page.locator("#train-settings-note")).to_contain_text("RLOO: TRL-style defaults")  # settings followed
    page.get_by_text("Online RL (RLOO)", exact=True).last.click()  # the accordion
    page.locator("#train-toxicity input").check()
    set_number(page, "train-completion", 12)
    page.get_by_text("Hyperparameters").click()
    set_number(page, "train-steps", 3)
    expect(page.locator("#train-steps input[type=number]").first).to_have_value("3")
    page.locator("#train-launch").click()
    expect(page.locator("#train-launch-status")).to_contain_text("Job 1 is running", timeout=60_000)
    expect(page.locator("#train-progress")).to_contain_text("/ 3", timeout=180_000)
    expect(page.locator("#train-plot-1 canvas, #train-plot-1 svg").first).to_be_visible(timeout=30_000)
    expect(page.locator("#train-samples")).to_contain_text("toxicity_penalty", timeout=60_000)
    expect(page.locator("#train-lineage")).to_contain_text("job 1 (rloo, round 1, data: bank (prompts))")
    expect(page.locator("#train-progress")).to_contain_text("finished", timeout=180_000)
    page.screenshot(path=str(app_server["home"] / "rl.png"), full_page=True)
    job = Store(app_server["home"] / "studio.db").query("SELECT method, status, data FROM jobs")[0]
    assert tuple(job) == ("rloo", "finished", "bank (prompts)")
