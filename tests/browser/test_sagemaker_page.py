"""The Train tab runs a job on SageMaker (moto's stand-in in server mode, reached by AWS_ENDPOINT_URL; no real AWS
account): a wrong role ARN is refused before any job is made, then the job starts there and the jobs table says so."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import run_app
from tests.browser.helpers import train_on_polite
from tests.test_sagemaker import PREFIX, ROLE

pytestmark = pytest.mark.browser


@pytest.fixture
def aws_app(tmp_path, aws):
    yield from run_app(
        tmp_path,
        env_extra={
            "AWS_ENDPOINT_URL": aws,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )


def test_launch_a_job_on_sagemaker_from_the_train_tab(aws_app, page):
    import boto3

    store = train_on_polite(aws_app, page)
    page.get_by_text("Where it runs: this machine or SageMaker").click()
    page.get_by_text("A SageMaker training job (your AWS credentials)").click()
    page.locator("#train-sm-prefix textarea").fill(PREFIX)
    page.locator("#train-sm-role textarea").fill("my-role")
    page.locator("#train-launch").click()
    expect(page.locator("#train-launch-status")).to_contain_text("Give the ARN of a SageMaker execution role")
    assert store.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"] == 0
    page.locator("#train-sm-role textarea").fill(ROLE)
    page.locator("#train-launch").click()
    status = page.locator("#train-launch-status")
    expect(status).to_contain_text(re.compile(r"Job 1 is running on SageMaker as align-studio-1-dpo-"), timeout=60_000)
    name = re.search(r"align-studio-1-dpo-[0-9a-f-]+", status.inner_text()).group(0)
    expect(page.locator("#train-jobs")).to_contain_text("running on SageMaker")
    expect(page.locator("#train-progress")).to_contain_text(f"On SageMaker: {name} (us-east-1, 1 x ml.g5.2xlarge)")
    page.screenshot(path=str(aws_app["home"] / "sagemaker.png"), full_page=True)
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert described["RoleArn"] == ROLE and described["ResourceConfig"]["InstanceCount"] == 1
