import re

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import set_number, train_on_polite

pytestmark = pytest.mark.browser


def test_launch_watch_and_stop_a_dpo_job(app_server, page):
    store = train_on_polite(app_server, page)
    expect(page.locator("#train-data-summary")).to_contain_text("8 pairs from 8 rankings by 1 annotator(s)")
    # Before launch: the job's estimated peak memory against the RAM that is free.
    expect(page.locator("#train-fit")).to_contain_text(re.compile(r"Estimated peak \d+\.\d GiB of RAM .*: fits the"))
    page.get_by_text("Hyperparameters").click()
    set_number(page, "train-steps", 40)  # a box in an accordion opened a moment ago: typed until it holds
    page.locator("#train-launch").click()
    # The first launch imports TRL into the app process: seconds on a cold machine.
    expect(page.locator("#train-launch-status")).to_contain_text("Job 1 is running", timeout=60_000)
    progress = page.locator("#train-progress")
    expect(progress).to_contain_text("running", timeout=60_000)
    expect(progress).to_contain_text("/ 40", timeout=120_000)  # the first metrics line is in
    expect(page.locator("#train-plot-0 canvas, #train-plot-0 svg").first).to_be_visible(timeout=30_000)
    expect(page.locator("#train-plot-1 canvas, #train-plot-1 svg").first).to_be_visible()
    page.screenshot(path=str(app_server["home"] / "train.png"), full_page=True)
    page.locator("#train-stop").click()
    expect(page.locator("#train-launch-status")).to_contain_text("Stopping")
    expect(progress).to_contain_text("stopped", timeout=120_000)
    job = store.query("SELECT status, folder FROM jobs")[0]
    assert job["status"] == "stopped"
    from pathlib import Path

    assert any(Path(job["folder"]).glob("checkpoint-*"))
