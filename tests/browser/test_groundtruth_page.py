"""The Data tab's Ground Truth panel: export a job, then start it on AWS; without credentials the start says why."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_rank_page import seed_candidates

pytestmark = pytest.mark.browser


def test_export_then_start_says_what_is_missing(app_server, page):
    seed_candidates(app_server["home"], prompts=2, candidates=3)
    page.goto(app_server["url"])
    page.get_by_role("tab", name="Data").click()
    page.locator("#gt-export").click()
    expect(page.locator("#gt-status")).to_contain_text("for 2 prompts", timeout=30_000)
    page.get_by_text("Run it on Ground Truth with your AWS credentials").click()
    expect(page.locator("#gt-job input")).to_have_value(re.compile(r"^align-studio-bank-\d{8}-\d{6}$"))
    page.locator("#gt-role textarea").fill("my-role")
    page.locator("#gt-start").click()
    expect(page.locator("#gt-status")).to_contain_text("Give the ARN of the job's role (arn:aws:...); got 'my-role'.")
    page.locator("#gt-role textarea").fill("arn:aws:iam::123456789012:role/SageMakerGroundTruthRole")
    page.locator("#gt-pre textarea").fill("arn:aws:lambda:us-east-1:123456789012:function:SageMaker-pre")
    page.locator("#gt-post textarea").fill("arn:aws:lambda:us-east-1:123456789012:function:SageMaker-post")
    page.locator("#gt-team textarea").fill("arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/t")
    page.locator("#gt-region textarea").fill("us-east-1")
    page.locator("#gt-start").click()  # this machine has no AWS credentials: AWS's own refusal, said plainly
    expect(page.locator("#gt-status")).to_contain_text(
        "AWS refused to take manifest.jsonl into s3://my-bucket/", timeout=30_000
    )
    expect(page.locator("#gt-status")).to_contain_text("Unable to locate credentials")
    page.locator("#gt-fetch").click()
    expect(page.locator("#gt-status")).to_contain_text("was not started on Ground Truth from the studio")
    page.screenshot(path=str(app_server["home"] / "gt.png"), full_page=True)
