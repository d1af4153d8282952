"""The SageMaker Ground Truth bridge: export a ranking job for a real workforce, import what the workers answered.

Export writes a folder (and a zip of it): the input manifest, the worker task template (crowd-text-ranking, ties
allowed), the pre-annotation and consolidation Lambda handlers, the CreateLabelingJob settings and a README with the
boto3 call. Import reads the output manifest (a consolidated label from our Lambda, or worker-response-ref) and/or
the worker response files, from a folder or a zip; it joins by our ids, keeps every worker as annotator
gt:<workerId> with ties, checks everything first and imports all or nothing.
"""

import html
import json
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from studio.paths import check_name, studio_home
from studio.ranking import MAX_SHOWN, get_guidelines, insert_ranking
from studio.store import Store

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "groundtruth"
LINE_LIMIT = 100_000  # characters per manifest line
ATTRIBUTE_LIMIT = 20_000  # characters per attribute
LABEL_ATTRIBUTE = "studio-ranking"
DIMENSION = "Overall quality"
MAX_IMPORT_BYTES = 500 * 1024 * 1024


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
        "WHERE s.name = ? ORDER BY p.position", (set_name,))
    lines = []
    for prompt in prompts:
        responses = store.query("SELECT id, text FROM responses WHERE prompt_id = ? ORDER BY id DESC LIMIT ?",
                                (prompt["id"], MAX_SHOWN))[::-1]
        if len(responses) < 2:
            continue
        line = {"source": prompt["text"], "responses": [r["text"] for r in responses],
                "studio-prompt-id": prompt["id"], "studio-response-ids": [r["id"] for r in responses]}
        if prompt["system"]:
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
                problems.append(f"{name}: attribute {key!r} has {size} characters; Ground Truth allows "
                                f"{ATTRIBUTE_LIMIT}")
    return problems


def worker_template(instructions: str, dimension: str = DIMENSION) -> str:
    """The task template with the guidelines as escaped HTML paragraphs and the dimension escaped for JSON + HTML."""
    paragraphs = [p.strip() for p in (instructions or "").split("\n\n") if p.strip()] or [
        "Rank the answers from best to worst for this prompt. Give two answers the same rank only when they are "
        "equally good."]
    body = "\n".join(f"      <p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    dimension_json = html.escape(json.dumps(dimension)[1:-1], quote=True)
    template = (ASSETS / "template.liquid.html").read_text()
    return template.replace("__INSTRUCTIONS__", body).replace("__DIMENSION__", dimension_json)


def job_settings(job_name: str, bucket: str, workers_per_object: int) -> dict:
    """The CreateLabelingJob request; ARNs the user fills in are marked <...>."""
    prefix = f"s3://{bucket}/{job_name}"
    return {
        "LabelingJobName": job_name,
        "LabelAttributeName": LABEL_ATTRIBUTE,
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": f"{prefix}/manifest.jsonl"}}},
        "OutputConfig": {"S3OutputPath": f"{prefix}/output/"},
        "RoleArn": "<arn:aws:iam::ACCOUNT:role/SageMakerGroundTruthRole>",
        "HumanTaskConfig": {
            "WorkteamArn": "<arn:aws:sagemaker:REGION:ACCOUNT:workteam/private-crowd/TEAM>",
            "UiConfig": {"UiTemplateS3Uri": f"{prefix}/template.liquid.html"},
            "PreHumanTaskLambdaArn": "<arn:aws:lambda:REGION:ACCOUNT:function:align-studio-pre-annotation>",
            "AnnotationConsolidationConfig": {
                "AnnotationConsolidationLambdaArn": "<arn:aws:lambda:REGION:ACCOUNT:function:align-studio-consolidation>"},
            "TaskTitle": "Rank the answers",
            "TaskDescription": "Rank an assistant's candidate answers from best to worst; ties allowed.",
            "TaskKeywords": ["ranking", "text", "LLM"],
            "NumberOfHumanWorkersPerDataObject": workers_per_object,
            "TaskTimeLimitInSeconds": 900,
            "TaskAvailabilityLifetimeInSeconds": 864000,
            "MaxConcurrentTaskCount": 1000,
        },
    }


README = """# Ground Truth job for the prompt set {set_name}

Made by Align Studio: {count} prompts, each with its candidate answers to rank (ties allowed).

1. Upload `manifest.jsonl` and `template.liquid.html` to s3://{bucket}/{job_name}/.
2. Create two Lambda functions (Python 3.12) from `lambdas/pre_annotation.py` and `lambdas/consolidation.py`
   (handler `lambda_handler`); names starting with `SageMaker` or granting Ground Truth access work with the
   managed policy. The consolidation keeps every worker's answer; Align Studio takes the majority itself.
3. Fill in the `<...>` ARNs in `settings.json` and create the job:

```python
import json, boto3
settings = json.load(open("settings.json"))
boto3.client("sagemaker").create_labeling_job(**settings)
```

4. When it is done, download `s3://{bucket}/{job_name}/output/` (the output manifest under
   `{job_name}/manifests/output/` and the worker responses under `{job_name}/annotations/worker-response/`), zip it or
   keep the folder, and import it on the Data tab (Ground Truth: import). Every worker becomes annotator gt:<workerId>.
"""


def export_job(store: Store, set_name: str, out_dir=None, *, bucket: str = "my-bucket", job_name: str | None = None,
               workers_per_object: int = 3) -> dict:
    """Write the job folder and its zip; GroundTruthError (naming the prompts) if anything is over the limits."""
    job_name = check_name(job_name or f"align-studio-{set_name}-{time.strftime('%Y%m%d-%H%M%S')}".replace("_", "-"),
                          "job name")
    lines = manifest_lines(store, set_name)
    if not lines:
        raise GroundTruthError(f"No prompt of {set_name!r} has two or more candidates: generate candidates first.")
    problems = check_limits(lines)
    if problems:
        raise GroundTruthError(_problems_message(f"Ground Truth export of {set_name!r}", problems))
    folder = Path(out_dir or studio_home() / "groundtruth" / job_name)
    (folder / "lambdas").mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    (folder / "template.liquid.html").write_text(worker_template(get_guidelines(store, set_name)), encoding="utf-8")
    for name in ("pre_annotation.py", "consolidation.py"):
        shutil.copy(ASSETS / name, folder / "lambdas" / name)
    settings = job_settings(job_name, bucket, workers_per_object)
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / "README.md").write_text(README.format(set_name=set_name, count=len(lines), bucket=bucket,
                                                    job_name=job_name))
    archive = shutil.make_archive(str(folder), "zip", folder)
    return {"folder": folder, "zip": Path(archive), "prompts": len(lines)}


@dataclass
class _Answer:
    where: str  # file:line, for messages
    worker: str
    prompt_id: int
    response_ids: list
    ranks: list


def _rankings_of(content: dict):
    """responseRankings of the first ranking dimension, at the top of answerContent or under the element's name."""
    for holder in [content, *[v for v in content.values() if isinstance(v, dict)]]:
        dimensions = holder.get("ordinalRankingDimensions")
        if isinstance(dimensions, list) and dimensions and isinstance(dimensions[0], dict):
            return dimensions[0].get("responseRankings")
    return None


def _answer(where: str, worker, content, prompt_id=None, response_ids=None) -> _Answer:
    if not isinstance(content, dict):
        raise GroundTruthError(f"{where}: answerContent is not a JSON object")
    if prompt_id is None:  # a worker response file on its own: our ids came back through the template
        try:
            prompt_id = int(content["studioPromptId"])
            response_ids = json.loads(content["studioResponseIds"])
        except (KeyError, TypeError, ValueError):
            raise GroundTruthError(f"{where}: no studio ids in the answer and no output manifest line refers to it; "
                                   "it cannot be joined") from None
    ranks = _rankings_of(content)
    if not worker:
        raise GroundTruthError(f"{where}: the answer has no workerId")
    if not isinstance(ranks, list):
        raise GroundTruthError(f"{where}: no ordinalRankingDimensions[].responseRankings in the answer")
    return _Answer(where, str(worker), prompt_id, response_ids, ranks)


def _worker_answers(data, path: Path, root: Path, problems: list[str]) -> list:
    """The answers list of a worker response file, or [] with the problem noted."""
    if not isinstance(data, dict) or not isinstance(data.get("answers"), list):
        problems.append(f"{path.relative_to(root)}: not a worker response file (no answers list)")
        return []
    return data["answers"]


def _add_answers(workers: list, label: str, answers: list, problems: list[str], prompt_id=None, response_ids=None):
    """Each worker's answer, checked; `label` (e.g. 'output.manifest:3 worker') says where, for the messages."""
    for i, worker in enumerate(workers):
        where = f"{label} {i + 1}"
        if not isinstance(worker, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        try:
            answers.append(_answer(where, worker.get("workerId"), worker.get("answerContent"), prompt_id,
                                   response_ids))
        except GroundTruthError as error:
            problems.append(str(error))


def _read_json(path: Path, root: Path, problems: list[str]):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        problems.append(f"{path.relative_to(root)}: broken JSON ({error})")
        return None


def _find_ref(root: Path, ref: str) -> Path | None:
    """A worker-response-ref (an s3:// URI) -> the downloaded file under root with the longest matching path end."""
    parts = ref.removeprefix("s3://").split("/")
    for start in range(1, len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    return None


def _collect(root: Path) -> tuple[list[_Answer], list[str]]:
    answers, problems, referenced = [], [], set()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        if path.suffix not in (".manifest", ".jsonl") and path.name != "output.manifest":
            continue
        for number, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not text.strip():
                continue
            where = f"{path.relative_to(root)}:{number}"
            try:
                line = json.loads(text)
                prompt_id, response_ids = int(line["studio-prompt-id"]), line["studio-response-ids"]
            except json.JSONDecodeError as error:
                problems.append(f"{where}: broken JSON ({error.msg})")
                continue
            except (KeyError, TypeError, ValueError):
                problems.append(f"{where}: no studio-prompt-id / studio-response-ids: not a line we exported")
                continue
            found = False
            for key, value in line.items():
                if isinstance(value, dict) and isinstance(value.get("workers"), list):  # our consolidation
                    found = True
                    _add_answers(value["workers"], f"{where} worker", answers, problems, prompt_id, response_ids)
                elif key.endswith("-metadata") and isinstance(value, dict) and value.get("worker-response-ref"):
                    found = True
                    ref = _find_ref(root, value["worker-response-ref"])
                    if ref is None:
                        problems.append(f"{where}: worker-response-ref {value['worker-response-ref']} is not in the "
                                        "folder; download the annotations/worker-response folder too")
                        continue
                    referenced.add(ref)
                    data = _read_json(ref, root, problems)
                    if data is not None:
                        _add_answers(_worker_answers(data, ref, root, problems), f"{ref.relative_to(root)} answer",
                                     answers, problems, prompt_id, response_ids)
            if not found:
                problems.append(f"{where}: no label with workers and no worker-response-ref")
    for path in files:
        if path.suffix != ".json" or path in referenced or path.name == "settings.json":
            continue
        data = _read_json(path, root, problems)
        if data is not None:
            _add_answers(_worker_answers(data, path, root, problems), f"{path.relative_to(root)} answer", answers,
                         problems)
    return answers, problems


def _tiers(answer: _Answer, known: dict[int, set[int]], problems: list[str]):
    ids, ranks = answer.response_ids, answer.ranks
    if answer.prompt_id not in known:
        problems.append(f"{answer.where}: unknown prompt id {answer.prompt_id}")
        return None
    if not isinstance(ids, list) or not set(ids) <= known[answer.prompt_id] or len(set(ids)) != len(ids) or len(ids) < 2:
        problems.append(f"{answer.where}: response ids {ids} are not candidates of prompt {answer.prompt_id}")
        return None
    if len(ranks) != len(ids):
        problems.append(f"{answer.where}: {len(ranks)} ranks for {len(ids)} responses")
        return None
    if not all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= len(ids) for r in ranks):
        problems.append(f"{answer.where}: ranks {ranks} are not all whole numbers from 1 to {len(ids)}")
        return None
    return [[rid for rid, r in zip(ids, ranks) if r == rank] for rank in sorted(set(ranks))]


def import_results(store: Store, path) -> dict:
    """Import a Ground Truth output folder or zip; all or nothing."""
    path = Path(path)
    if not path.exists():
        raise GroundTruthError(f"{path} does not exist.")
    with tempfile.TemporaryDirectory() as tmp:
        root = path
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise GroundTruthError(f"{path.name} is not a zip file; upload a zip or point at a folder.")
            with zipfile.ZipFile(path) as archive:
                if sum(i.file_size for i in archive.infolist()) > MAX_IMPORT_BYTES:
                    raise GroundTruthError(f"{path.name} unpacks to more than {MAX_IMPORT_BYTES // 2**20} MB.")
                for info in archive.infolist():  # never write outside the temporary folder
                    target = (Path(tmp) / info.filename).resolve()
                    if not target.is_relative_to(Path(tmp).resolve()):
                        raise GroundTruthError(f"{path.name} holds an unsafe path: {info.filename}")
                archive.extractall(tmp)
            root = Path(tmp)
        answers, problems = _collect(root)
        known: dict[int, set[int]] = {}
        for row in store.query("SELECT prompt_id, id FROM responses"):
            known.setdefault(row["prompt_id"], set()).add(row["id"])
        chosen: dict[tuple[str, int], tuple[list, str]] = {}
        for answer in answers:
            tiers = _tiers(answer, known, problems)
            if tiers is None:
                continue
            key = (answer.worker, answer.prompt_id)
            if key in chosen and chosen[key][0] != tiers:
                problems.append(f"{answer.where}: worker {answer.worker} ranked prompt {answer.prompt_id} "
                                f"differently in {chosen[key][1]}")
            chosen.setdefault(key, (tiers, answer.where))
        if problems:
            raise GroundTruthError(_problems_message(f"Ground Truth import from {path.name}", problems))
        if not chosen:
            raise GroundTruthError(f"{path.name} holds no worker answers.")
        added = unchanged = 0
        with store.tx() as db:
            for (worker, prompt_id), (tiers, _) in chosen.items():
                if insert_ranking(db, f"gt:{worker}", prompt_id, tiers, source="groundtruth", kind="groundtruth"):
                    added += 1
                else:
                    unchanged += 1
    return {"rankings": added, "unchanged": unchanged, "workers": len({w for w, _ in chosen}),
            "prompts": len({p for _, p in chosen})}
