"""The SageMaker Ground Truth bridge: export a ranking job for a real workforce, import what the workers answered.
A job can instead ask for demonstrations (`rule`): for each prompt where every candidate fails a rule of the rubric,
the worker edits the best candidate (crowd-text-area, starting from it) into the answer the rule asks for; the import
keeps each as a demonstration by gt:<workerId> (studio/data/demonstrations.py).

Export writes a folder (and a zip of it): the input manifest, the worker task template (crowd-text-ranking, ties
allowed), the pre-annotation and consolidation Lambda handlers, the CreateLabelingJob settings and a README with the
boto3 call. Import reads the output manifest (a consolidated label from our Lambda, or worker-response-ref) and/or
the worker response files, from a folder or a zip; it joins by our ids, keeps every worker as annotator
gt:<workerId> with ties, checks everything first and imports all or nothing. With the user's AWS credentials, an
exported job can also be started on Ground Truth (launch_job) and its output fetched when it ends (fetch_results).
"""

import argparse
import html
import json
import re
import shutil
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from studio.core import access
from studio.core.paths import studio_home
from studio.core.store import Store
from studio.data import demonstrations, rubric
from studio.data.demonstrations import DemonstrationError
from studio.data.ranking import LETTERS, MAX_SHOWN, get_guidelines, insert_ranking

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "groundtruth"
LINE_LIMIT = 100_000  # characters per manifest line
ATTRIBUTE_LIMIT = 20_000  # characters per attribute
LABEL_ATTRIBUTE = "studio-ranking"
DEMO_LABEL = "studio-demonstration"  # the label attribute of a demonstrations job
DEMO_TASK = "demonstration"  # a manifest line's studio-task in a demonstrations job
DEMO_PROMPTS = 200  # prompts per demonstrations job at most
DIMENSION = "Overall quality"
MAX_IMPORT_BYTES = 500 * 1024 * 1024
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # AWS's LabelingJobName pattern
PRE_LAMBDA = "SageMaker-align-studio-pre-annotation"
POST_LAMBDA = "SageMaker-align-studio-consolidation"
# How long a task waits for workers: Mechanical Turk allows at most 12 hours; private and vendor teams 10 days.
WORKFORCES = {
    "private": {
        "workteam": "<arn:aws:sagemaker:REGION:ACCOUNT:workteam/private-crowd/TEAM>",
        "lifetime": 864000,
        "note": " (10 days, the most a private team allows)",
    },
    "public": {
        "workteam": "<arn:aws:sagemaker:REGION:394669845002:workteam/public-crowd/default>",
        "lifetime": 43200,
        "note": " (12 hours, the most Mechanical Turk allows); choose the task price in "
        "settings.json (PublicWorkforceTaskPrice)",
    },
}


class GroundTruthError(ValueError):
    """An export or import that cannot be done; the message names every problem."""


def _problems_message(what: str, problems: list[str]) -> str:
    shown = problems[:50]
    more = f"\n(and {len(problems) - 50} more)" if len(problems) > 50 else ""
    return f"{what}: {len(problems)} problem(s), nothing was done:\n" + "\n".join(shown) + more


def manifest_lines(store: Store, set_name: str) -> list[dict]:
    """One manifest line per prompt with 2+ candidates (the newest MAX_SHOWN, oldest first)."""
    prompts = store.query(
        "SELECT p.id, p.text, p.system FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id "
        "WHERE s.name = ? ORDER BY p.position",
        (set_name,),
    )
    lines = []
    for prompt in prompts:
        responses = store.query(
            "SELECT id, text FROM responses WHERE prompt_id = ? ORDER BY id DESC LIMIT ?", (prompt["id"], MAX_SHOWN)
        )[::-1]
        if len(responses) < 2:
            continue
        line = {
            "source": prompt["text"],
            "responses": [r["text"] for r in responses],
            "studio-prompt-id": prompt["id"],
            "studio-response-ids": [r["id"] for r in responses],
        }
        if prompt["system"]:
            line["system"] = prompt["system"]
        lines.append(line)
    return lines


def demonstration_lines(store: Store, set_name: str, rule: str, limit: int = DEMO_PROMPTS) -> list[dict]:
    """One manifest line per prompt where every candidate fails `rule` and nobody has written a demonstration of it
    yet (demonstrations.to_write), with the best candidate to start the edit from."""
    try:
        found = demonstrations.to_write(store, set_name, rule, limit)
    except DemonstrationError as error:
        raise GroundTruthError(str(error)) from None
    lines = []
    for prompt in found:
        line = {
            "source": prompt["text"],
            "rule": rule,
            "candidate": prompt["best"]["text"] if prompt["best"] else "",
            "studio-task": DEMO_TASK,
            "studio-prompt-id": prompt["id"],
            "studio-edited-from": prompt["best"]["id"] if prompt["best"] else None,
        }
        if prompt.get("system"):
            line["system"] = prompt["system"]
        lines.append(line)
    return lines


def check_limits(lines: list[dict]) -> list[str]:
    """Every line or attribute over Ground Truth's limits, naming its prompt."""
    problems = []
    for line in lines:
        name = f"prompt {line['studio-prompt-id']} ({line['source'][:60]!r})"
        text = json.dumps(line, ensure_ascii=False)
        if len(text) > LINE_LIMIT:
            problems.append(f"{name}: the manifest line has {len(text)} characters; Ground Truth allows {LINE_LIMIT}")
        for key, value in line.items():
            size = len(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
            if size > ATTRIBUTE_LIMIT:
                problems.append(
                    f"{name}: attribute {key!r} has {size} characters; Ground Truth allows {ATTRIBUTE_LIMIT}"
                )
    return problems


def worker_template(instructions: str, dimension: str = DIMENSION) -> str:
    """The task template with the guidelines as escaped HTML paragraphs and the dimension escaped for JSON + HTML."""
    paragraphs = [p.strip() for p in (instructions or "").split("\n\n") if p.strip()] or [
        "Rank the answers from best to worst for this prompt. Give two answers the same rank only when they are "
        "equally good."
    ]
    body = "\n".join(f"      <p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    dimension_json = html.escape(json.dumps(dimension)[1:-1], quote=True)
    template = (ASSETS / "template.liquid.html").read_text()
    return template.replace("__INSTRUCTIONS__", body).replace("__DIMENSION__", dimension_json)


def demonstration_template(instructions: str) -> str:
    """The demonstrations task template, with the guidelines as escaped HTML paragraphs."""
    paragraphs = [p.strip() for p in (instructions or "").split("\n\n") if p.strip()] or [
        "Write the answer a good assistant would give, following the rule shown."
    ]
    body = "\n".join(f"    <p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return (ASSETS / "demonstration.liquid.html").read_text().replace("__INSTRUCTIONS__", body)


def job_settings(
    job_name: str, bucket: str, workers_per_object: int, workforce: str = "private", demonstrations: bool = False
) -> dict:
    """The CreateLabelingJob request; ARNs the user fills in are marked <...>. Lambda names contain "SageMaker", as
    AWS's managed labeling policy (AmazonSageMakerGroundTruthExecution) requires of the functions a job may call."""
    if workforce not in WORKFORCES:
        raise GroundTruthError(f"Workforce {workforce!r}: choose one of {', '.join(WORKFORCES)}.")
    prefix = f"s3://{bucket}/{job_name}"
    settings = {
        "LabelingJobName": job_name,
        "LabelAttributeName": DEMO_LABEL if demonstrations else LABEL_ATTRIBUTE,
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": f"{prefix}/manifest.jsonl"}}},
        "OutputConfig": {"S3OutputPath": f"{prefix}/output/"},
        "RoleArn": "<arn:aws:iam::ACCOUNT:role/SageMakerGroundTruthRole>",
        "HumanTaskConfig": {
            "WorkteamArn": WORKFORCES[workforce]["workteam"],
            "UiConfig": {"UiTemplateS3Uri": f"{prefix}/template.liquid.html"},
            "PreHumanTaskLambdaArn": f"<arn:aws:lambda:REGION:ACCOUNT:function:{PRE_LAMBDA}>",
            "AnnotationConsolidationConfig": {
                "AnnotationConsolidationLambdaArn": f"<arn:aws:lambda:REGION:ACCOUNT:function:{POST_LAMBDA}>"
            },
            "TaskTitle": "Write the answer the guidelines ask for" if demonstrations else "Rank the answers",
            "TaskDescription": (
                "Edit an assistant's answer until it follows the rule shown."
                if demonstrations
                else "Rank an assistant's candidate answers from best to worst; ties allowed."
            ),
            "TaskKeywords": ["writing", "text", "LLM"] if demonstrations else ["ranking", "text", "LLM"],
            "NumberOfHumanWorkersPerDataObject": workers_per_object,
            "TaskTimeLimitInSeconds": 900,
            "TaskAvailabilityLifetimeInSeconds": WORKFORCES[workforce]["lifetime"],
            "MaxConcurrentTaskCount": 1000,
        },
    }
    if workforce == "public":  # Mechanical Turk workers are paid per task; 3.6 cents is one of AWS's price tiers
        settings["HumanTaskConfig"]["PublicWorkforceTaskPrice"] = {
            "AmountInUsd": {"Dollars": 0, "Cents": 3, "TenthFractionsOfACent": 6}
        }
    return settings


def lambda_role_policy(bucket: str) -> dict:
    """What the consolidation Lambda's execution role needs: read the annotation files Ground Truth writes under the
    job's output path (the event's payload s3Uri)."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}/*"]}],
    }


README = """# Ground Truth job for the prompt set {set_name}

Made by Align Studio: {count} prompts, {what}.

1. Upload `manifest.jsonl` and `template.liquid.html` to s3://{bucket}/{job_name}/.
2. Create two Lambda functions (Python 3.12, handler `lambda_handler`) from `lambdas/pre_annotation.py` and
   `lambdas/consolidation.py`, named `{pre}` and `{post}`: AWS's managed policy for labeling jobs
   (AmazonSageMakerGroundTruthExecution) lets a job call only functions whose names contain SageMaker, Sagemaker,
   sagemaker, GtRecipe or LabelingFunction. The consolidation function reads the workers' answers from S3: give its
   execution role the policy in `lambda-role-policy.json` (s3:GetObject on s3://{bucket}/). It keeps every worker's
   answer; Align Studio takes the majority itself.
3. Fill in the `<...>` ARNs in `settings.json` (the job's role, your work team, the two functions) and create the job:

```python
import json, boto3
settings = json.load(open("settings.json"))
boto3.client("sagemaker").create_labeling_job(**settings)
```

   The workforce is {workforce}: tasks stay available for {lifetime} seconds{lifetime_note}.
4. When it is done (or stopped: a partly done job imports what was labelled and lists the rest), download
   `s3://{bucket}/{job_name}/output/` (the output manifest under `{job_name}/manifests/output/` and the worker
   responses under `{job_name}/annotations/worker-response/`), zip it or keep the folder, and on the Data tab press
   Check (Ground Truth import) first: it shows each worker's ranking written out as the Rank tab would. Compare the
   first few with what the workers saw, once per template, then Import. Every worker becomes annotator gt:<workerId>.
"""


def job_name(set_name: str, typed: str | None = None) -> str:
    """A labeling job name that AWS accepts ([a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}): the typed one, checked, or one made
    from the set's name and the time."""
    if typed and typed.strip():
        typed = typed.strip()
        if not JOB_NAME.fullmatch(typed):
            raise GroundTruthError(
                f"The job name {typed!r} is not one AWS accepts: 1-63 letters, digits and hyphens, "
                "starting and ending with a letter or digit (no '_' or '.')."
            )
        return typed
    stamp = time.strftime("%Y%m%d-%H%M%S")
    middle = re.sub(r"[^A-Za-z0-9]+", "-", set_name).strip("-")[: 63 - len("align-studio--") - len(stamp)]
    return re.sub(r"-+", "-", f"align-studio-{middle}-{stamp}")


def export_job(
    store: Store,
    set_name: str,
    out_dir=None,
    *,
    bucket: str = "my-bucket",
    name: str | None = None,
    workers_per_object: int = 3,
    workforce: str = "private",
    rule: str | None = None,
    by: str | None = None,
) -> dict:
    """Write the job folder and its zip; GroundTruthError (naming the prompts) if anything is over the limits.
    `rule`: a demonstrations job for that rule of the set's rubric instead of a ranking job."""
    access.check_lead(by, "export a labeling job")
    name = job_name(set_name, name)
    lines = demonstration_lines(store, set_name, rule) if rule else manifest_lines(store, set_name)
    if not lines and rule:
        raise GroundTruthError(
            f"No prompt of {set_name!r} needs a demonstration of {rule!r}: it has no prompt the rule applies to where "
            "every candidate fails it (and none written yet). Generate candidates first, or choose another rule."
        )
    if not lines:
        raise GroundTruthError(f"No prompt of {set_name!r} has two or more candidates: generate candidates first.")
    problems = check_limits(lines)
    if problems:
        raise GroundTruthError(_problems_message(f"Ground Truth export of {set_name!r}", problems))
    settings = job_settings(name, bucket, workers_per_object, workforce, demonstrations=bool(rule))
    folder = Path(out_dir or studio_home() / "groundtruth" / name)
    (folder / "lambdas").mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    guidelines = get_guidelines(store, set_name)
    template = demonstration_template(guidelines) if rule else worker_template(guidelines)
    (folder / "template.liquid.html").write_text(template, encoding="utf-8")
    for file_name in ("pre_annotation.py", "consolidation.py"):
        shutil.copy(ASSETS / file_name, folder / "lambdas" / file_name)
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / "lambda-role-policy.json").write_text(json.dumps(lambda_role_policy(bucket), indent=2))
    lifetime = WORKFORCES[workforce]["lifetime"]
    (folder / "README.md").write_text(
        README.format(
            set_name=set_name,
            count=len(lines),
            what=(
                f"each with the best candidate to edit into an answer that follows the rule {rule!r}"
                if rule
                else "each with its candidate answers to rank (ties allowed)"
            ),
            bucket=bucket,
            job_name=name,
            pre=PRE_LAMBDA,
            post=POST_LAMBDA,
            workforce=workforce,
            lifetime=lifetime,
            lifetime_note=WORKFORCES[workforce]["note"],
        )
    )
    archive = shutil.make_archive(str(folder), "zip", folder)
    return {"folder": folder, "zip": Path(archive), "prompts": len(lines), "job_name": name, "rule": rule}


# --- Run on AWS -----------------------------------------------------------------------------------------------------
# With the user's own AWS credentials (boto3's chain: environment, ~/.aws, an instance or Space role); the studio
# stores none of them. The Lambdas are deployed by the user (README step 2): their ARNs are taken here.

ARN = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{0,12}:\S+")
LAUNCHED = "launched.json"  # in the export folder once the job is created: its name, ARN, region and output path


@contextmanager
def aws_refusals(what: str, error_class=None):
    """AWS's refusals (no credentials, access denied, a bad name) as an error of ours (GroundTruthError unless told)
    that says what failed, in AWS's words. Shared with studio/training/sagemaker.py."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise (error_class or GroundTruthError)(f"AWS refused to {what}: {error}") from None


def _clients(region: str | None, s3=None, sagemaker=None):
    """boto3's S3 and SageMaker clients (the given ones, in tests) with the user's own credentials."""
    import boto3

    with aws_refusals("connect (say the region, or set AWS_REGION)"):
        return s3 or boto3.client("s3", region_name=region), sagemaker or boto3.client("sagemaker", region_name=region)


def s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def exported_jobs() -> list[str]:
    """The jobs exported into $STUDIO_HOME/groundtruth, newest first (each a folder with its settings.json)."""
    root = studio_home() / "groundtruth"
    folders = [p for p in root.glob("*/settings.json")] if root.is_dir() else []
    return [p.parent.name for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]


def exported_folder(name: str) -> Path:
    """The export folder of job `name` (checked: a job name, never a path)."""
    if not JOB_NAME.fullmatch(name or "") or not (studio_home() / "groundtruth" / name / "settings.json").is_file():
        raise GroundTruthError(f"There is no exported Ground Truth job {name!r}; export one first.")
    return studio_home() / "groundtruth" / name


def launch_job(
    folder,
    *,
    role_arn: str,
    pre_lambda_arn: str,
    post_lambda_arn: str,
    workteam_arn: str = "",
    region: str | None = None,
    s3=None,
    sagemaker=None,
    by: str | None = None,
) -> str:
    """Start an exported job on Ground Truth: upload its manifest and worker template where settings.json says, fill
    in the ARNs, CreateLabelingJob. Returns the job's ARN (kept in the folder's launched.json)."""
    access.check_lead(by, "start a labeling job")
    folder = Path(folder)
    settings = json.loads((folder / "settings.json").read_text())
    task = settings["HumanTaskConfig"]
    given = {
        "the job's role": role_arn,
        "the pre-annotation Lambda": pre_lambda_arn,
        "the consolidation Lambda": post_lambda_arn,
        "the work team": workteam_arn or ("" if task["WorkteamArn"].startswith("<") else task["WorkteamArn"]),
    }
    for what, arn in given.items():
        if not ARN.fullmatch((arn or "").strip()):
            raise GroundTruthError(f"Give the ARN of {what} (arn:aws:...); got {arn!r}.")
    settings["RoleArn"] = role_arn.strip()
    task["PreHumanTaskLambdaArn"] = pre_lambda_arn.strip()
    task["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"] = post_lambda_arn.strip()
    task["WorkteamArn"] = given["the work team"].strip()
    s3, sagemaker = _clients(region, s3, sagemaker)
    for local, uri in (
        ("manifest.jsonl", settings["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]),
        ("template.liquid.html", task["UiConfig"]["UiTemplateS3Uri"]),
    ):
        with aws_refusals(f"take {local} into {uri}"):
            s3.upload_file(str(folder / local), *s3_parts(uri))
    with aws_refusals("create the labeling job"):
        arn = sagemaker.create_labeling_job(**settings)["LabelingJobArn"]
    (folder / LAUNCHED).write_text(
        json.dumps(
            {
                "name": settings["LabelingJobName"],
                "arn": arn,
                "region": sagemaker.meta.region_name,
                "output": settings["OutputConfig"]["S3OutputPath"],
            },
            indent=2,
        )
    )
    return arn


def fetch_results(folder, *, region: str | None = None, s3=None, sagemaker=None) -> dict:
    """The launched job's state; once it has ended (completed, or stopped with some objects labelled), its output
    (manifests and worker responses) downloaded into the folder's `output/`, ready for import_results."""
    folder = Path(folder)
    if not (folder / LAUNCHED).is_file():
        raise GroundTruthError(f"{folder.name} was not started on Ground Truth from the studio; start it first.")
    launched = json.loads((folder / LAUNCHED).read_text())
    region = region or launched.get("region")  # the job's own region unless told otherwise
    s3, sagemaker = _clients(region, s3, sagemaker)
    with aws_refusals(f"describe the labeling job {launched['name']}"):
        job = sagemaker.describe_labeling_job(LabelingJobName=launched["name"])
    state = {
        "status": job["LabelingJobStatus"],
        "counters": job.get("LabelCounters", {}),
        "failure": job.get("FailureReason", ""),
    }
    if state["status"] not in ("Completed", "Stopped") or not state["counters"].get("TotalLabeled"):
        return state
    bucket, prefix = s3_parts(launched["output"].rstrip("/") + "/" + launched["name"] + "/")
    out = folder / "output"
    with aws_refusals(f"read the job's output under s3://{bucket}/{prefix}"):
        items = [
            item
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]
    for item in items:
        # the job's output as Ground Truth lays it out under S3OutputPath: <job name>/manifests/..., annotations/...
        target = (out / launched["name"] / item["Key"][len(prefix) :]).resolve()
        if not target.is_relative_to(out.resolve()):
            raise GroundTruthError(f"S3 key {item['Key']!r} would be written outside {out}.")
        target.parent.mkdir(parents=True, exist_ok=True)
        with aws_refusals(f"download s3://{bucket}/{item['Key']}"):
            s3.download_file(bucket, item["Key"], str(target))
    return {**state, "output": out}


def fetch_and_import(
    store: Store, folder, *, region: str | None = None, by: str | None = None, s3=None, sagemaker=None
) -> dict:
    """fetch_results, then, once the job has ended, import_results of its output (under "imported")."""
    access.check_lead(by, "import Ground Truth results")
    state = fetch_results(folder, region=region, s3=s3, sagemaker=sagemaker)
    if "output" in state:
        state["imported"] = import_results(store, state["output"], by)
    return state


# --- Import ------------------------------------------------------------------------------------------------------


def read_answer(content) -> tuple[int, list[int] | None, list]:
    """What the worker template submits, read in one place: (prompt id, response ids, ranks).

    AWS does not document the JSON that crowd-text-ranking submits. The form sends our two hidden inputs as strings
    (studioPromptId, studioResponseIds: a JSON list) and the element's output under its name: here, what we read is
    {"ordinalRankingDimensions": [{"name": ..., "responseRankings": [rank of response 1, ...]}]}, at the top of
    answerContent or under the element's name. Check the first imported results against the worker UI once per
    template (the Data tab's Check shows them written out)."""
    if not isinstance(content, dict):
        raise GroundTruthError("answerContent is not a JSON object")
    prompt_id = _whole_number(content.get("studioPromptId"))
    ids = content.get("studioResponseIds")
    try:
        ids = json.loads(ids) if isinstance(ids, str) else ids
    except ValueError:
        ids = None
    ranks = None
    for holder in [content, *[v for v in content.values() if isinstance(v, dict)]]:
        dimensions = holder.get("ordinalRankingDimensions")
        if isinstance(dimensions, list) and dimensions and isinstance(dimensions[0], dict):
            ranks = dimensions[0].get("responseRankings")
            break
    if not isinstance(ranks, list):
        raise GroundTruthError("no ordinalRankingDimensions[].responseRankings in the answer")
    return prompt_id, _id_list(ids), ranks


def _whole_number(value) -> int | None:
    """An id as JSON gives it (a number, or the string a form field submits); None for anything else (true,
    3.5, Infinity, objects)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 19:
        return int(value.strip())
    return None


def _id_list(value) -> list[int] | None:
    if not isinstance(value, list):
        return None
    ids = [_whole_number(v) for v in value]
    return None if any(i is None for i in ids) else ids


@dataclass
class _Answer:
    where: str  # file:line, for messages
    worker: str
    prompt_id: int
    response_ids: list | None
    ranks: list | None
    text: str | None = None  # a demonstration's answer (then ranks is None)
    rule: str | None = None
    edited_from: int | None = None


def _demonstration(content: dict, line: dict | None) -> tuple[str | None, int | None, object]:
    """(rule, candidate edited from, text) of a demonstration answer: crowd-text-area's output under its name
    ("demonstration": the text), our hidden inputs as strings; the manifest line's own, when there is one, win."""
    source = line if line is not None else {}
    rule = source.get("rule", content.get("studioRule"))
    edited = source["studio-edited-from"] if "studio-edited-from" in source else content.get("studioEditedFrom")
    return (rule if isinstance(rule, str) and rule.strip() else None), _whole_number(edited), content["demonstration"]


@dataclass
class Found:
    answers: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    unlabelled: dict = field(default_factory=dict)  # prompt id -> why (where, failure reason)


def _add_answers(workers, label: str, found: Found, prompt_id=None, response_ids=None, line=None):
    """Each worker's answer (a ranking, or a demonstration), checked; `label` (e.g. 'output.manifest:3 worker') says
    where, for the messages. The manifest `line`'s ids, when there is one, win over those that came back through the
    form."""
    if not isinstance(workers, list):
        found.problems.append(f"{label}: the workers' answers are not a list")
        return
    for i, worker in enumerate(workers):
        where = f"{label} {i + 1}"
        if not isinstance(worker, dict):
            found.problems.append(f"{where}: not a JSON object")
            continue
        content = worker.get("answerContent")
        if isinstance(content, dict) and "demonstration" in content:
            rule, edited_from, text = _demonstration(content, line)
            prompt = prompt_id if prompt_id is not None else _whole_number(content.get("studioPromptId"))
            who = worker.get("workerId")
            if prompt is None or rule is None:
                found.problems.append(f"{where}: a demonstration without its studio prompt id or rule")
            elif not isinstance(text, str):
                found.problems.append(f"{where}: the demonstration is not text")
            elif not isinstance(who, str) or not who.strip() or len(who) > 200:
                found.problems.append(f"{where}: the answer has no workerId")
            else:
                found.answers.append(_Answer(where, who.strip(), prompt, None, None, text, rule, edited_from))
            continue
        try:
            form_prompt, form_ids, ranks = read_answer(worker.get("answerContent"))
        except GroundTruthError as error:
            found.problems.append(f"{where}: {error}")
            continue
        prompt = prompt_id if prompt_id is not None else form_prompt
        ids = response_ids if response_ids is not None else form_ids
        if prompt is None or ids is None:
            found.problems.append(
                f"{where}: no studio ids in the answer and no output manifest line refers to it; it cannot be joined"
            )
            continue
        who = worker.get("workerId")
        if not isinstance(who, str) or not who.strip() or len(who) > 200:
            found.problems.append(f"{where}: the answer has no workerId")
            continue
        found.answers.append(_Answer(where, who.strip(), prompt, ids, ranks))


def _read_json(path: Path, root: Path, found: Found):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        found.problems.append(f"{path.relative_to(root)}: broken JSON ({type(error).__name__})")
        return None


def _find_ref(root: Path, ref, files: set[Path]) -> Path | None:
    """A worker-response-ref (an s3:// URI) -> the file among `files` (the folder's own, _files) whose path is the
    longest end of the URI's key."""
    if not isinstance(ref, str) or not ref.startswith("s3://"):
        return None
    parts = ref.removeprefix("s3://").split("/")[1:]
    if any(part in ("", ".", "..") or "\\" in part for part in parts):
        return None
    for start in range(len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate in files:
            return candidate
    return None


def _files(root: Path, found: Found) -> list[Path]:
    """The folder's regular files. A symbolic link is never read, whatever it points to (a link could bring in any
    file of this machine): each one is listed as a problem, and so is anything that resolves outside the folder."""
    base, files = root.resolve(), []
    for path in sorted(root.rglob("*")):
        where = path.relative_to(root)
        if path.is_symlink():
            found.problems.append(
                f"{where}: a symbolic link, which is not followed; copy the file itself into the folder"
            )
        elif path.is_file():
            if path.resolve().is_relative_to(base):
                files.append(path)
            else:
                found.problems.append(f"{where}: resolves outside the uploaded folder")
    return files


def _is_worker_response(path: Path, root: Path) -> bool:
    return "worker-response" in path.relative_to(root).parts


def _manifest_files(root: Path, files: list[Path]) -> list[Path]:
    """Output manifests (and JSON-lines files we exported), not Ground Truth's intermediate copies."""
    return [
        p
        for p in files
        if (p.suffix in (".manifest", ".jsonl") or p.name == "output.manifest")
        and "intermediate" not in p.relative_to(root).parts
    ]


def _collect(root: Path, prompts: dict[int, str]) -> Found:
    """Every worker answer in the folder: from output manifest lines (our consolidation's label, or a
    worker-response-ref) and from worker response files no line refers to. Lines without a label are unlabelled
    objects (a job stopped or expired part-way), listed, not errors."""
    found, referenced = Found(), set()
    files = _files(root, found)
    inside = set(files)
    for path in _manifest_files(root, files):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            found.problems.append(f"{path.relative_to(root)}: not UTF-8 text")
            continue
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            where = f"{path.relative_to(root)}:{number}"
            try:
                line = json.loads(raw)
            except (ValueError, RecursionError) as error:
                found.problems.append(f"{where}: broken JSON ({getattr(error, 'msg', type(error).__name__)})")
                continue
            prompt_id = _whole_number(line.get("studio-prompt-id")) if isinstance(line, dict) else None
            response_ids = _id_list(line.get("studio-response-ids")) if isinstance(line, dict) else None
            demo = isinstance(line, dict) and line.get("studio-task") == DEMO_TASK
            if prompt_id is None or (response_ids is None and not demo):
                found.problems.append(
                    f"{where}: no whole-number studio-prompt-id / studio-response-ids: not a line we exported"
                )
                continue
            if prompt_id in prompts and line.get("source") != prompts[prompt_id]:
                found.problems.append(
                    f"{where}: its source text is not the text of prompt {prompt_id} in this "
                    "studio: the line comes from another studio's export"
                )
                continue
            labelled = False
            for key, value in line.items():
                if key in (LABEL_ATTRIBUTE, DEMO_LABEL) and isinstance(value, dict) and "workers" in value:
                    labelled = True  # our consolidation's label
                    _add_answers(
                        value["workers"], f"{where} worker", found, prompt_id, response_ids, line if demo else None
                    )
                elif key.endswith("-metadata") and isinstance(value, dict) and "worker-response-ref" in value:
                    labelled = True
                    ref = _find_ref(root, value["worker-response-ref"], inside)
                    if ref is None:
                        found.problems.append(
                            f"{where}: its worker-response-ref is not in the uploaded folder; "
                            "download the annotations/worker-response folder too"
                        )
                        continue
                    referenced.add(ref)
                    data = _read_json(ref, root, found)
                    if data is not None:
                        answers = data.get("answers") if isinstance(data, dict) else None
                        _add_answers(
                            answers,
                            f"{ref.relative_to(root)} answer",
                            found,
                            prompt_id,
                            response_ids,
                            line if demo else None,
                        )
            if not labelled:
                reason = next(
                    (
                        v.get("failure-reason")
                        for k, v in line.items()
                        if k.endswith("-metadata") and isinstance(v, dict) and v.get("failure-reason")
                    ),
                    None,
                )
                found.unlabelled.setdefault(prompt_id, f"{where}" + (f" ({str(reason)[:200]})" if reason else ""))
    for path in files:
        if path.suffix != ".json" or path in referenced or not _is_worker_response(path, root):
            continue
        data = _read_json(path, root, found)
        if data is not None:
            answers = data.get("answers") if isinstance(data, dict) else None
            _add_answers(answers, f"{path.relative_to(root)} answer", found)
    labelled_prompts = {a.prompt_id for a in found.answers}
    found.unlabelled = {p: w for p, w in found.unlabelled.items() if p not in labelled_prompts}
    return found


def _tiers(answer: _Answer, known: dict[int, set[int]], problems: list[str]):
    ids, ranks = answer.response_ids, answer.ranks
    if answer.prompt_id not in known:
        problems.append(f"{answer.where}: unknown prompt id {answer.prompt_id}")
        return None
    if not set(ids) <= known[answer.prompt_id] or len(set(ids)) != len(ids) or len(ids) < 2:
        problems.append(f"{answer.where}: response ids {ids} are not candidates of prompt {answer.prompt_id}")
        return None
    if len(ranks) != len(ids):
        problems.append(f"{answer.where}: {len(ranks)} ranks for {len(ids)} responses")
        return None
    if not all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= len(ids) for r in ranks):
        problems.append(f"{answer.where}: ranks {ranks} are not all whole numbers from 1 to {len(ids)}")
        return None
    return [[rid for rid, r in zip(ids, ranks) if r == rank] for rank in sorted(set(ranks))]


def _extract(path: Path, into: Path) -> None:
    """Unzip `path` into `into`, member by member, counting the bytes actually written (a forged size in the zip's
    directory changes nothing) and never writing outside `into`."""
    try:
        with zipfile.ZipFile(path) as archive:
            written = 0
            for info in archive.infolist():
                target = (into / info.filename).resolve()
                if not target.is_relative_to(into.resolve()):
                    raise GroundTruthError(f"{path.name} holds an unsafe path: {info.filename[:200]}")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, "wb") as out:
                    while chunk := source.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_IMPORT_BYTES:
                            raise GroundTruthError(f"{path.name} unpacks to more than {MAX_IMPORT_BYTES // 2**20} MB.")
                        out.write(chunk)
    except GroundTruthError:  # what was refused (its size, an unsafe path) says so itself
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError, OSError) as error:
        raise GroundTruthError(
            f"{path.name} is not a readable zip file ({type(error).__name__}); zip the output folder again."
        ) from None


@dataclass
class Results:
    rankings: dict  # (worker, prompt id) -> (tiers, where)
    unlabelled: dict  # prompt id -> where
    source: str
    demonstrations: dict = field(default_factory=dict)  # (worker, prompt id, rule) -> (text, edited from, where, set)

    def summary(self) -> dict:
        keys = [*self.rankings, *((w, p) for w, p, _ in self.demonstrations)]
        return {
            "workers": len({w for w, _ in keys}),
            "prompts": len({p for _, p in keys}),
            "answers": len(self.rankings),
            "demonstrations": len(self.demonstrations),
            "unlabelled": len(self.unlabelled),
        }


def _check_demonstration(answer: _Answer, known: dict, set_of: dict, rules_of, problems: list[str]):
    """A worker's demonstration, checked against this studio: its prompt, the rule in the prompt set's rubric, the
    candidate it was edited from; (text, edited from, set) or None."""
    text = answer.text.strip()
    if answer.prompt_id not in set_of:
        problems.append(f"{answer.where}: unknown prompt id {answer.prompt_id}")
    elif answer.rule not in rules_of(set_of[answer.prompt_id]):
        problems.append(
            f"{answer.where}: the rubric of {set_of[answer.prompt_id]!r} has no rule named {answer.rule!r} (any more)"
        )
    elif answer.edited_from is not None and answer.edited_from not in known.get(answer.prompt_id, set()):
        problems.append(f"{answer.where}: candidate {answer.edited_from} is not an answer to prompt {answer.prompt_id}")
    elif not text or len(text) > demonstrations.MAX_CHARS:
        problems.append(
            f"{answer.where}: the demonstration is empty or over {demonstrations.MAX_CHARS} characters ({len(text)})"
        )
    else:
        return text, answer.edited_from, set_of[answer.prompt_id]
    return None


def read_results(store: Store, path) -> Results:
    """Read and check a Ground Truth output folder or zip without writing anything; GroundTruthError lists every
    problem."""
    path = Path(path)
    if not path.exists():
        raise GroundTruthError(f"{path.name} does not exist.")
    with tempfile.TemporaryDirectory() as tmp:
        root = path
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise GroundTruthError(f"{path.name} is not a zip file; upload a zip or point at a folder.")
            _extract(path, Path(tmp))
            root = Path(tmp)
        prompts = store.query("SELECT p.id, p.text, s.name FROM prompts p JOIN prompt_sets s ON s.id = p.prompt_set_id")
        found = _collect(root, {r["id"]: r["text"] for r in prompts})
    known: dict[int, set[int]] = {}
    for row in store.query("SELECT prompt_id, id FROM responses"):
        known.setdefault(row["prompt_id"], set()).add(row["id"])
    set_of = {r["id"]: r["name"] for r in prompts}
    rubrics: dict[str, list[str]] = {}

    def rules_of(set_name: str) -> list[str]:
        if set_name not in rubrics:
            checks = rubric.for_set(store, set_name)
            rubrics[set_name] = demonstrations.rules(checks) if checks else []
        return rubrics[set_name]

    chosen: dict[tuple[str, int], tuple[list, str]] = {}
    written: dict[tuple[str, int, str], tuple] = {}
    for answer in found.answers:
        if answer.text is not None:
            demo = _check_demonstration(answer, known, set_of, rules_of, found.problems)
            key = (answer.worker, answer.prompt_id, answer.rule)
            if demo is not None and key in written and written[key][0] != demo[0]:
                found.problems.append(
                    f"{answer.where}: worker {answer.worker} wrote another demonstration of this rule for prompt "
                    f"{answer.prompt_id} in {written[key][2]}"
                )
            elif demo is not None:
                written.setdefault(key, (demo[0], demo[1], answer.where, demo[2]))
            continue
        tiers = _tiers(answer, known, found.problems)
        if tiers is None:
            continue
        key = (answer.worker, answer.prompt_id)
        if key in chosen and chosen[key][0] != tiers:
            found.problems.append(
                f"{answer.where}: worker {answer.worker} ranked prompt {answer.prompt_id} "
                f"differently in {chosen[key][1]}"
            )
        chosen.setdefault(key, (tiers, answer.where))
    if found.problems:
        raise GroundTruthError(_problems_message(f"Ground Truth import from {path.name}", found.problems))
    if not chosen and not written:
        listed = f" ({len(found.unlabelled)} objects were not labelled)" if found.unlabelled else ""
        raise GroundTruthError(f"{path.name} holds no worker answers{listed}.")
    return Results(chosen, found.unlabelled, path.name, written)


def preview(store: Store, results: Results, limit: int = 20) -> str:
    """Each worker's ranking written out as the Rank tab shows one (A = the first answer the worker saw), next to
    the candidates, to compare with the worker UI before importing."""
    out = []
    for (worker, prompt_id), (tiers, where) in list(sorted(results.rankings.items()))[:limit]:
        prompt = store.query("SELECT text FROM prompts WHERE id = ?", (prompt_id,))[0]["text"]
        responses = store.query(
            "SELECT id, text FROM responses WHERE prompt_id = ? ORDER BY id DESC LIMIT ?", (prompt_id, MAX_SHOWN)
        )[::-1]
        letters = {r["id"]: LETTERS[i] for i, r in enumerate(responses)}
        order = " > ".join(" = ".join(letters.get(rid, f"#{rid}") for rid in tier) for tier in tiers)
        out.append(f"gt:{worker} on prompt {prompt_id} ({prompt[:80]!r}): {order}   [{where}]")
        out += [f"    {letters[r['id']]}: {r['text'][:120]!r}" for r in responses]
    more = len(results.rankings) - limit
    if more > 0:
        out.append(f"... and {more} more rankings")
    for (worker, prompt_id, rule), (text, edited_from, where, _) in list(sorted(results.demonstrations.items()))[
        :limit
    ]:
        start = f", edited from candidate {edited_from}" if edited_from is not None else ""
        out.append(f"gt:{worker} on prompt {prompt_id}, a demonstration of {rule!r}{start}   [{where}]")
        out.append(f"    {text[:300]!r}")
    if results.unlabelled:
        out.append(
            f"Not labelled ({len(results.unlabelled)} prompts): "
            + "; ".join(f"prompt {p} at {w}" for p, w in list(results.unlabelled.items())[:20])
        )
    return "\n".join(out)


def import_results(store: Store, path, by: str | None = None) -> dict:
    """Import a Ground Truth output folder or zip: every labelled object (the rankings in one transaction, then the
    demonstrations), all checked first; unlabelled ones are listed in the result. A lead's action: it adds rankings
    and demonstrations under the workers' names."""
    access.check_lead(by, "import Ground Truth results")
    results = read_results(store, path)
    added = unchanged = 0
    with store.tx() as db:
        for (worker, prompt_id), (tiers, _) in results.rankings.items():
            if insert_ranking(db, f"gt:{worker}", prompt_id, tiers, source="groundtruth", kind="groundtruth"):
                added += 1
            else:
                unchanged += 1
    demos = 0
    for (worker, prompt_id, rule), (text, edited_from, _, set_name) in results.demonstrations.items():
        if store.query(
            "SELECT 1 FROM demonstrations d JOIN annotators a ON a.id = d.annotator_id "
            "WHERE a.name = ? AND d.prompt_id = ? AND d.rule = ? AND d.text = ?",
            (f"gt:{worker}", prompt_id, rule, text),
        ):
            unchanged += 1
            continue
        demonstrations.save(store, f"gt:{worker}", set_name, prompt_id, text, rule, edited_from, "groundtruth")
        demos += 1
    summary = results.summary()
    return {
        "rankings": added,
        "demonstrations": demos,
        "unchanged": unchanged,
        "workers": summary["workers"],
        "prompts": summary["prompts"],
        "unlabelled": dict(results.unlabelled),
    }


def main(argv=None) -> int:
    from studio.core.paths import db_path

    parser = argparse.ArgumentParser(
        prog="python -m studio groundtruth",
        description="Run an exported job on Ground Truth with your AWS credentials.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="upload the manifest and template, create the labeling job")
    start.add_argument("folder", help="the export folder ($STUDIO_HOME/groundtruth/<job name>)")
    for flag in ("--role", "--pre-lambda", "--post-lambda"):
        start.add_argument(flag, required=True, help="an ARN")
    start.add_argument("--workteam", default="", help="the work team's ARN (else the one in settings.json)")
    fetch = commands.add_parser("fetch", help="the job's state; when it has ended, download and import its output")
    fetch.add_argument("folder")
    for command in (start, fetch):
        command.add_argument("--region", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(
                launch_job(
                    args.folder,
                    role_arn=args.role,
                    pre_lambda_arn=args.pre_lambda,
                    post_lambda_arn=args.post_lambda,
                    workteam_arn=args.workteam,
                    region=args.region,
                    by=access.TERMINAL,
                )
            )
            return 0
        state = fetch_and_import(Store(db_path()), args.folder, region=args.region, by=access.TERMINAL)
        print(f"{state['status']}: {state['counters']} {state['failure']}".strip())
        if "imported" in state:
            print(json.dumps(state["imported"], default=str))
    except (GroundTruthError, access.TeamError) as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
