"""SageMaker training jobs and endpoints (training/sagemaker.py), end to end against moto's AWS stand-in in server mode:
the real boto3 clients the app makes, pointed at it by AWS_ENDPOINT_URL, for S3 and SageMaker's create, describe and
delete calls (botocore checks every request against its own service model before sending). StopTrainingJob, which
moto does not have, goes through botocore's Stubber, which checks the request the same way. The training container's
part is played here for real: its code and inputs are read back from S3 and its entry script trains the job. No real
AWS account is used."""

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from studio.core import jobs
from studio.inference import models
from studio.training import launch, sagemaker
from studio.training.launch import Manager
from tests.helpers import SETTINGS, clear_cut_set, steps_logged, wait_for

PREFIX = "s3://studio-bucket/align"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"


def _read_s3(uri: str) -> bytes:
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def _play_the_container(described: dict, tmp_path: Path) -> Path:
    """What SageMaker does with the request: the code and the input channel from S3, the entry script run in the
    code folder, then /opt/ml/model packed as model.tar.gz and the checkpoint folder synced, both to S3."""
    import boto3

    s3 = boto3.client("s3")
    code, channel, model, checkpoints = (tmp_path / p for p in ("code", "input/data/job", "model", "checkpoints"))
    hyper = {k: json.loads(v) for k, v in described["HyperParameters"].items()}
    with tarfile.open(fileobj=io.BytesIO(_read_s3(hyper["sagemaker_submit_directory"]))) as tar:
        tar.extractall(code, filter="data")
    source = described["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    bucket, _, prefix = source.removeprefix("s3://").partition("/")
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        target = channel / item["Key"][len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, item["Key"], str(target))
    env = {
        **os.environ,
        "SM_CHANNEL_JOB": str(channel),
        "SM_MODEL_DIR": str(model),
        "STUDIO_SM_JOB_DIR": str(checkpoints),
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
    }
    done = subprocess.run(
        [sys.executable, hyper["sagemaker_program"]], cwd=code, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tar:
        for item in model.iterdir():
            tar.add(item, arcname=item.name)
    bucket, _, key = described["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://").partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=packed.getvalue())
    bucket, _, key = described["CheckpointConfig"]["S3Uri"].removeprefix("s3://").partition("/")
    for name in ("metrics.jsonl", "train.log"):
        s3.upload_file(str(checkpoints / name), bucket, key + name)
    return checkpoints


def test_a_job_trains_on_sagemaker_comes_back_and_serves_on_an_endpoint(store, aws, tmp_path, monkeypatch):
    import boto3

    clear_cut_set(store)
    job_id = launch.launch(store, "dpo", {**SETTINGS, "max_steps": 2}, prompt_set="polite", where="sagemaker")
    finished = []
    manager = Manager(store, on_finished=finished.append, remote=sagemaker)
    manager.remote_every_s = 0
    manager.refresh()
    assert jobs.get(store, job_id)["status"] == "queued"  # the local queue leaves a SageMaker job alone
    assert sagemaker.progress(jobs.get(store, job_id)) == "Waiting to be started on SageMaker."
    with pytest.raises(sagemaker.SageMakerError, match="ARN of a SageMaker execution role"):
        sagemaker.start(store, job_id, prefix=PREFIX, role_arn="my-role")

    name = sagemaker.start(
        store, job_id, prefix=PREFIX, role_arn=ROLE, instance_type="ml.g5.2xlarge", region="us-east-1"
    )
    job = jobs.get(store, job_id)
    assert job["status"] == "running" and name.startswith(f"align-studio-{job_id}-dpo-")
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert described["AlgorithmSpecification"]["TrainingImage"].startswith(
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:"
    )
    assert described["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
    assert described["CheckpointConfig"]["S3Uri"] == f"{PREFIX}/jobs/{Path(job['folder']).name}/checkpoints/"
    recipe = _read_s3(f"{PREFIX}/jobs/{name}/input/recipe.yaml").decode()
    assert "data: data.jsonl" in recipe and "output_dir" not in recipe and str(job["folder"]) not in recipe

    checkpoints = _play_the_container(described, tmp_path)
    assert (checkpoints / "adapter" / "adapter_config.json").is_file()
    wait_for(lambda: jobs.get(store, job_id)["status"] != "running", manager, timeout=30)
    job = jobs.get(store, job_id)
    assert job["status"] == "finished", job["error"]
    assert finished == [job_id] and steps_logged(job) == [1, 2]
    assert f"On SageMaker: {name} (us-east-1, 1 x ml.g5.2xlarge): Completed" in sagemaker.progress(job)
    assert jobs.adapter_folder(job)  # loaded into PEFT below, from the endpoint's model.tar.gz

    # The endpoint: the adapter with its Hub base, served by code/inference.py.
    with pytest.raises(sagemaker.SageMakerError, match="no merged model yet"):
        sagemaker.deploy(store, job_id, what="merged", prefix=PREFIX, role_arn=ROLE)
    # moto's own list of endpoint instance types stops before g5 (AWS's has it): a g4dn here
    endpoint = sagemaker.deploy(
        store, job_id, prefix=PREFIX, role_arn=ROLE, instance_type="ml.g4dn.xlarge", name="polite-dpo"
    )
    client = boto3.client("sagemaker")
    container = client.describe_model(ModelName=endpoint)["PrimaryContainer"]
    assert container["Environment"]["BASE_MODEL"] == models.EMBEDDED_HUB_ID
    assert "huggingface-pytorch-inference" in container["Image"] and "-gpu-" in container["Image"]
    assert (
        sagemaker.endpoint_status(store, job_id)
        == "Endpoint polite-dpo (us-east-1, adapter on ml.g4dn.xlarge): InService."
    )
    with pytest.raises(sagemaker.SageMakerError, match="already has the endpoint polite-dpo"):
        sagemaker.deploy(store, job_id, prefix=PREFIX, role_arn=ROLE)

    served = tmp_path / "served"
    with tarfile.open(fileobj=io.BytesIO(_read_s3(container["ModelDataUrl"]))) as tar:
        tar.extractall(served, filter="data")
    assert (served / "adapter_config.json").is_file() and (served / "code/inference.py").is_file()
    assert "peft==" in (served / "code/requirements.txt").read_text()
    # The handler as the container runs it; the base from this machine (no network here) instead of the Hub.
    monkeypatch.setenv("BASE_MODEL", str(models.embedded_folder()))
    spec = importlib.util.spec_from_file_location("inference", served / "code/inference.py")
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    answer = handler.predict_fn(
        {"inputs": [{"role": "user", "content": "Say hello."}], "parameters": {"max_new_tokens": 8}},
        handler.model_fn(str(served)),
    )
    assert isinstance(answer["generated_text"], str) and answer["generated_text"].strip()
    # moto answers InvokeEndpoint with what it is given: the handler's answer, as the container would send it.
    import urllib.request

    request = urllib.request.Request(
        f"{aws}/moto-api/static/sagemaker/endpoint-results",
        method="POST",
        data=json.dumps({"results": [{"Body": json.dumps(answer)}]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request).read()
    assert sagemaker.call(store, job_id, "Say hello.", max_new_tokens=8) == answer["generated_text"]

    assert sagemaker.delete(store, job_id) == "Deleted the endpoint polite-dpo, its configuration and its model."
    assert client.list_endpoints()["Endpoints"] == [] and client.list_models()["Models"] == []
    assert sagemaker.endpoint_status(store, job_id) == f"Job {job_id} has no SageMaker endpoint."


def test_stop_and_resume_on_sagemaker(store, aws):
    """StopTrainingJob (Stubber: moto lacks it), the stopped state read back, then a resume: a new training job on
    the same checkpoint folder."""
    import boto3
    from botocore.stub import Stubber

    clear_cut_set(store)
    job_id = launch.launch(store, "dpo", {**SETTINGS, "max_steps": 2}, prompt_set="polite", where="sagemaker")
    first = sagemaker.start(
        store,
        job_id,
        prefix=PREFIX,
        role_arn=ROLE,
        instance_type="ml.g5.12xlarge",
        instance_count=2,
        region="us-east-1",
    )
    client = boto3.client("sagemaker")
    described = client.describe_training_job(TrainingJobName=first)
    stubbed = boto3.client("sagemaker")
    with Stubber(stubbed) as stub:
        stub.add_response("stop_training_job", {}, {"TrainingJobName": first})
        assert sagemaker.stop(store, job_id, sagemaker=stubbed).startswith(f"Stopping {first} on SageMaker")
        assert jobs.get(store, job_id)["status"] == "stopping"
        stopped = {
            k: described[k]
            for k in (
                "TrainingJobName",
                "TrainingJobArn",
                "ModelArtifacts",
                "AlgorithmSpecification",
                "ResourceConfig",
                "StoppingCondition",
                "CreationTime",
            )
        }
        stub.add_response(
            "describe_training_job",
            {**stopped, "TrainingJobStatus": "Stopped", "SecondaryStatus": "Stopped"},
            {"TrainingJobName": first},
        )
        assert sagemaker.follow(store, job_id, sagemaker=stubbed)["status"] == "stopped"
        stub.assert_no_pending_responses()
    with pytest.raises(sagemaker.SageMakerError, match="is stopped and has no adapter; deploy a finished job"):
        sagemaker.deploy(store, job_id, prefix=PREFIX, role_arn=ROLE)
    assert Manager(store, remote=sagemaker).resume(job_id).startswith("Resuming on SageMaker as align-studio-")
    second = sagemaker.remote_info(jobs.get(store, job_id))["name"]
    again = client.describe_training_job(TrainingJobName=second)
    assert second != first and again["CheckpointConfig"] == described["CheckpointConfig"]
    assert again["ResourceConfig"]["InstanceCount"] == 2


def test_launch_argv_joins_several_machines():
    """On a 2-instance training job every machine runs accelerate launch with its rank, meeting at the first."""
    import yaml

    folder = Path(os.environ["STUDIO_HOME"]) / "argv"
    folder.mkdir(exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"processes": 1}))
    argv = launch.launch_argv(folder / "recipe.yaml", hosts=["algo-1", "algo-2"], rank=1)
    assert argv[:2] == ["-m", "accelerate.commands.launch"]
    flags = dict(zip(argv[::1], argv[1:]))
    assert (flags["--num_machines"], flags["--machine_rank"], flags["--main_process_ip"], flags["--num_processes"]) == (
        "2",
        "1",
        "algo-1",
        "2",
    )


def test_the_job_manager_follows_sagemaker_jobs_only_through_the_runner_it_is_given(store):
    """launch.Manager does not import training/sagemaker.py (that closed an import cycle): the app passes it in.
    Without it, a SageMaker job is left alone by the queue and its stop and resume say why they cannot act."""
    clear_cut_set(store)
    job_id = launch.launch(store, "dpo", {**SETTINGS, "max_steps": 2}, prompt_set="polite", where="sagemaker")
    manager = Manager(store)
    manager.remote_every_s = 0
    manager.refresh()
    assert jobs.get(store, job_id)["status"] == "queued"
    with store.tx() as db:
        db.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (job_id,))
    manager.refresh()  # a running remote job is not followed without the runner, and nothing fails
    assert jobs.get(store, job_id)["status"] == "running"
    with pytest.raises(jobs.JobError, match="started without its runner"):
        manager.stop(job_id)
