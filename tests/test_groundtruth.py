import importlib.util
import json
import shutil
from html.parser import HTMLParser

import pytest

from studio.data import groundtruth
from studio.data.groundtruth import GroundTruthError, export_job, import_results
from studio.data.ranking import current_rankings, save_guidelines
from tests.conftest import table_counts
from tests.helpers import make_set


def lambda_module(folder, name):
    spec = importlib.util.spec_from_file_location(name, folder / "lambdas" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answer(line, ranks):
    """answerContent as the template's crowd-form submits it: our hidden ids plus the ranking element's output."""
    return {
        "studioPromptId": str(line["studio-prompt-id"]),
        "studioResponseIds": json.dumps(line["studio-response-ids"]),
        "ranking": {"ordinalRankingDimensions": [{"name": "Overall quality", "responseRankings": ranks}]},
    }


WORKER_RANKS = {"w1": [[1, 2, 3], [2, 1, 3]], "w2": [[1, 1, 2], [3, 2, 1]]}  # per worker, per prompt


@pytest.fixture
def job(store, tmp_path):
    make_set(store, prompts=2, candidates=3)
    save_guidelines(store, "s", "Prefer polite answers.\n\nNever <script>alert(1)</script> anything.")
    out = export_job(store, "s", tmp_path / "job", bucket="b", name="job1")
    lines = [json.loads(x) for x in (out["folder"] / "manifest.jsonl").read_text().splitlines()]
    return out, lines


def test_export_writes_a_complete_job(job):
    out, lines = job
    folder = out["folder"]
    assert out["zip"].is_file() and out["prompts"] == 2
    assert lines[0]["source"] == "question 0" and lines[0]["system"] == "Be kind."
    assert len(lines[0]["responses"]) == len(lines[0]["studio-response-ids"]) == 3
    template = (folder / "template.liquid.html").read_text()
    assert "<crowd-text-ranking" in template and '"allowTie":true' in template
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in template and "<script>alert" not in template
    assert "<p>Prefer polite answers.</p>" in template
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"] == "s3://b/job1/template.liquid.html"
    assert "create_labeling_job(**settings)" in (folder / "README.md").read_text()
    response = lambda_module(folder, "pre_annotation").lambda_handler(
        {
            "version": "2018-10-16",
            "labelingJobArn": "arn:aws:sagemaker:us-east-1:111122223333:labeling-job/job1",
            "dataObject": lines[0],
        },
        None,
    )
    assert response["isHumanAnnotationRequired"] is True  # AWS documents a boolean, not the string "true"


def render(template_text: str, task_input: dict) -> str:
    """The worker template as Ground Truth renders it: Liquid with HTML autoescaping (an explicit escape is not
    escaped twice), plus AWS's to_json filter."""
    from liquid import Environment

    env = Environment(autoescape=True)
    env.filters["to_json"] = lambda value: json.dumps(value)
    return env.from_string(template_text).render(task={"input": task_input})


class FormReader(HTMLParser):
    """What the browser reads from the rendered page: the form's hidden inputs and the attributes of the ranking
    element (a ranking job) or of the text area (a demonstrations job), entities decoded."""

    def __init__(self):
        super().__init__()
        self.hidden, self.ranking, self.area = {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "hidden":
            self.hidden[attrs["name"]] = attrs["value"]
        if tag == "crowd-text-ranking":
            self.ranking = attrs
        if tag == "crowd-text-area":
            self.area = attrs


def test_the_rendered_template_submits_ids_the_import_joins(store, job, tmp_path):
    """Render the template with the pre-annotation Lambda's real output as task.input, read back what a worker's
    form submits (the hidden inputs as strings, the ranking under the element's name), and import it alone."""
    out, lines = job
    template = (out["folder"] / "template.liquid.html").read_text()
    pre = lambda_module(out["folder"], "pre_annotation")
    folder = tmp_path / "result" / "job1" / "annotations" / "worker-response" / "iteration-1"
    for i, line in enumerate(lines):
        form = FormReader()
        form.feed(render(template, pre.lambda_handler({"dataObject": line}, None)["taskInput"]))
        assert json.loads(form.ranking["responses"]) == line["responses"]
        assert form.ranking["text"] == line["source"]
        assert json.loads(form.ranking["ordinal-ranking-dimensions"])[0]["allowTie"] is True
        answers = [
            {
                "workerId": w,
                "answerContent": {
                    **form.hidden,
                    "ranking": {
                        "ordinalRankingDimensions": [{"name": "Overall quality", "responseRankings": ranks[i]}]
                    },
                },
            }
            for w, ranks in WORKER_RANKS.items()
        ]
        (folder / str(i)).mkdir(parents=True)
        (folder / str(i) / "2026-11-20_10:01:00.json").write_text(json.dumps({"answers": answers}))
    assert import_results(store, tmp_path / "result")["rankings"] == 4
    check_round_trip(store, lines)


def expected_tiers(line, ranks):
    return [[rid for rid, r in zip(line["studio-response-ids"], ranks) if r == rank] for rank in sorted(set(ranks))]


def check_round_trip(store, lines):
    got = {(r["annotator"], r["prompt_id"]): r["tiers"] for r in current_rankings(store, "s")}
    assert got == {
        (f"gt:{w}", line["studio-prompt-id"]): expected_tiers(line, ranks[i])
        for w, ranks in WORKER_RANKS.items()
        for i, line in enumerate(lines)
    }
    assert {r["source"] for r in current_rankings(store, "s")} == {"groundtruth"}


def test_round_trip_through_the_consolidation_lambda_and_the_output_manifest(store, job, tmp_path, monkeypatch):
    """The consolidation Lambda fed the event AWS documents, on a real (moto) S3: the annotation file lists each
    worker's answer as a JSON string in annotationData.content, or (the second worker) at annotationData.s3Uri."""
    import boto3
    from moto import mock_aws

    out, lines = job
    consolidation = lambda_module(out["folder"], "consolidation")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="gt-results")
        payload = []
        for i, line in enumerate(lines):
            annotations = []
            for w, ranks in WORKER_RANKS.items():
                text = json.dumps(answer(line, ranks[i]))
                if w == "w2":
                    key = f"job1/annotations/worker-response/iteration-1/{i}/{w}.json"
                    s3.put_object(Bucket="gt-results", Key=key, Body=text.encode())
                    annotations.append({"workerId": w, "annotationData": {"s3Uri": f"s3://gt-results/{key}"}})
                else:
                    annotations.append({"workerId": w, "annotationData": {"content": text}})
            payload.append(
                {"datasetObjectId": str(i), "dataObject": {"content": json.dumps(line)}, "annotations": annotations}
            )
        s3.put_object(
            Bucket="gt-results",
            Key="job1/annotations/consolidation-request/iteration-1/x.json",
            Body=json.dumps(payload).encode(),
        )
        event = {
            "version": "2018-10-16",
            "labelingJobArn": "arn:aws:sagemaker:us-east-1:111122223333:labeling-job/job1",
            "labelCategories": [],
            "labelAttributeName": "studio-ranking",
            "roleArn": "arn:aws:iam::111122223333:role/r",
            "payload": {"s3Uri": "s3://gt-results/job1/annotations/consolidation-request/iteration-1/x.json"},
        }
        labels = consolidation.lambda_handler(event, None)
    result = tmp_path / "result" / "job1" / "manifests" / "output"
    result.mkdir(parents=True)
    with open(result / "output.manifest", "w") as f:
        for line, label in reversed(list(zip(lines, labels))):  # a different order than exported: joined by ids
            content = label["consolidatedAnnotation"]["content"]
            f.write(json.dumps({**line, **content, "studio-ranking-metadata": {"type": "groundtruth/custom"}}) + "\n")
    shutil.make_archive(str(tmp_path / "result"), "zip", tmp_path / "result")
    assert import_results(store, tmp_path / "result.zip") == {
        "rankings": 4,
        "demonstrations": 0,
        "unchanged": 0,
        "workers": 2,
        "prompts": 2,
        "unlabelled": {},
    }
    check_round_trip(store, lines)
    # Importing the same results again changes nothing.
    assert import_results(store, tmp_path / "result")["unchanged"] == 4


def write_worker_responses(root, lines):
    refs = []
    for i, line in enumerate(lines):
        folder = root / "job1" / "annotations" / "worker-response" / "iteration-1" / str(i)
        folder.mkdir(parents=True)
        answers = [
            {
                "acceptanceTime": "2026-11-20T10:00:00.000Z",
                "submissionTime": "2026-11-20T10:01:00.000Z",
                "timeSpentInSeconds": 60.0,
                "workerId": w,
                "workerMetadata": {"identityData": {"sub": w}},
                "answerContent": answer(line, ranks[i]),
            }
            for w, ranks in WORKER_RANKS.items()
        ]
        (folder / "2026-11-20_10:01:00.json").write_text(json.dumps({"answers": answers}))
        refs.append(f"s3://b/job1/output/job1/annotations/worker-response/iteration-1/{i}/2026-11-20_10:01:00.json")
    return refs


def write_job_output(root, lines):
    """What Ground Truth writes under S3OutputPath: the worker responses and an output manifest that refers to them."""
    refs = write_worker_responses(root, lines)
    (root / "job1" / "manifests" / "output").mkdir(parents=True)
    (root / "job1" / "manifests" / "output" / "output.manifest").write_text(
        "\n".join(
            json.dumps({**line, "studio-ranking": {}, "studio-ranking-metadata": {"worker-response-ref": ref}})
            for line, ref in zip(lines, refs)
        )
        + "\n"
    )


def test_round_trip_through_worker_response_refs(store, job, tmp_path):
    out, lines = job
    write_job_output(tmp_path / "result", lines)
    assert import_results(store, tmp_path / "result")["rankings"] == 4
    check_round_trip(store, lines)


def test_round_trip_through_worker_response_files_alone(store, job, tmp_path):
    out, lines = job
    write_worker_responses(tmp_path / "result", lines)
    assert import_results(store, tmp_path / "result")["workers"] == 2
    check_round_trip(store, lines)


def test_every_bad_line_is_reported_and_nothing_imported(store, job, tmp_path):
    out, lines = job
    before = table_counts(store)
    root = tmp_path / "bad"
    root.mkdir()
    good = {
        **lines[0],
        "studio-ranking": {"workers": [{"workerId": "w1", "answerContent": answer(lines[0], [1, 2, 3])}]},
    }
    bad_lines = [
        json.dumps(good),
        json.dumps({**good, "studio-prompt-id": 99999}),
        json.dumps(
            {**lines[1], "studio-ranking": {"workers": [{"workerId": "w1", "answerContent": answer(lines[1], [1, 2])}]}}
        ),
        json.dumps(
            {
                **lines[1],
                "studio-ranking": {"workers": [{"workerId": "w2", "answerContent": answer(lines[1], [0, 2, 4])}]},
            }
        ),
        '{"source": "broken',
        json.dumps(
            {
                **lines[1],
                "studio-response-ids": [1, 2, 999999],
                "studio-ranking": {"workers": [{"workerId": "w3", "answerContent": answer(lines[1], [1, 2, 3])}]},
            }
        ),
    ]
    (root / "output.manifest").write_text("\n".join(bad_lines) + "\n")
    with pytest.raises(GroundTruthError) as error:
        import_results(store, root)
    text = str(error.value)
    assert "5 problem(s), nothing was done" in text
    assert "output.manifest:2 worker 1: unknown prompt id 99999" in text
    assert "output.manifest:3 worker 1: 2 ranks for 3 responses" in text
    assert "output.manifest:4 worker 1: ranks [0, 2, 4] are not all whole numbers from 1 to 3" in text
    assert "output.manifest:5: broken JSON" in text
    assert "output.manifest:6 worker 1: response ids [1, 2, 999999] are not candidates" in text
    assert table_counts(store) == before
    (root / "output.manifest").unlink()
    (root / "annotations" / "worker-response").mkdir(parents=True)
    (root / "annotations" / "worker-response" / "junk.json").write_text("{not json")
    with pytest.raises(GroundTruthError, match="junk.json: broken JSON"):
        import_results(store, root)
    with pytest.raises(GroundTruthError, match="is not a zip file"):
        import_results(store, root / "annotations" / "worker-response" / "junk.json")
    assert table_counts(store) == before


def test_export_refuses_lines_over_the_limits_naming_the_prompt(store, tmp_path, monkeypatch):
    made = make_set(store, prompts=2, candidates=2)
    with store.tx() as db:
        db.execute("UPDATE responses SET text = ? WHERE id = ?", ("x" * 20_001, made[1][1][0]))
    with pytest.raises(GroundTruthError) as error:
        export_job(store, "s", tmp_path / "job")
    assert f"prompt {made[1][0]} ('question 1'): attribute 'responses' has" in str(error.value)
    assert "Ground Truth allows 20000" in str(error.value)
    monkeypatch.setattr(groundtruth, "LINE_LIMIT", 100)
    with pytest.raises(GroundTruthError, match=r"prompt \d+ \('question 0'\): the manifest line has \d+ characters"):
        export_job(store, "s", tmp_path / "job")
    assert not (tmp_path / "job").exists()


def test_job_settings_pass_botocores_own_model_of_create_labeling_job(job):
    """The request checked against botocore's service model (types, required fields, lengths, ranges) and the
    patterns it documents; the placeholders filled as a user would."""
    import re

    import botocore.session
    from botocore.validate import ParamValidator

    out, _ = job
    folder = out["folder"]
    model = botocore.session.get_session().get_service_model("sagemaker").operation_model("CreateLabelingJob")
    for workforce in groundtruth.WORKFORCES:
        settings = json.loads(
            json.dumps(groundtruth.job_settings("job1", "b", 3, workforce))
            .replace("REGION", "us-east-1")
            .replace("ACCOUNT", "111122223333")
            .replace("<", "")
            .replace(">", "")
        )
        report = ParamValidator().validate(settings, model.input_shape)
        assert not report.has_errors(), report.generate_report()
        shapes = model.input_shape.members
        assert re.fullmatch(shapes["LabelingJobName"].metadata["pattern"], settings["LabelingJobName"])
        task = settings["HumanTaskConfig"]
        for keyword in task["TaskKeywords"]:
            assert re.fullmatch(shapes["HumanTaskConfig"].members["TaskKeywords"].member.metadata["pattern"], keyword)
        for arn in (
            task["PreHumanTaskLambdaArn"],
            task["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"],
        ):
            assert re.fullmatch(shapes["HumanTaskConfig"].members["PreHumanTaskLambdaArn"].metadata["pattern"], arn)
            # AWS's managed labeling policy lets a job call only functions whose names contain one of these.
            assert any(
                word in arn.rsplit(":", 1)[1]
                for word in ("SageMaker", "Sagemaker", "sagemaker", "GtRecipe", "LabelingFunction")
            )
    public = groundtruth.job_settings("job1", "b", 3, "public")["HumanTaskConfig"]
    assert public["TaskAvailabilityLifetimeInSeconds"] <= 43200  # Mechanical Turk's ceiling
    policy = json.loads((folder / "lambda-role-policy.json").read_text())
    assert policy["Statement"][0]["Action"] == ["s3:GetObject"]
    assert policy["Statement"][0]["Resource"] == ["arn:aws:s3:::b/*"]
    assert groundtruth.PRE_LAMBDA in (folder / "README.md").read_text()


@pytest.mark.parametrize("set_name", ["my.set", "x" * 40, "a_b c", "---", "ünïcode"])
def test_derived_job_names_always_match_aws_pattern(set_name):
    name = groundtruth.job_name(set_name)
    assert groundtruth.JOB_NAME.fullmatch(name) and len(name) <= 63


@pytest.mark.parametrize("typed", ["my_job", "my.job", "-job", "job-", "x" * 64])
def test_typed_job_names_are_checked_with_aws_rule(typed):
    with pytest.raises(GroundTruthError, match="not one AWS accepts"):
        groundtruth.job_name("s", typed)
    assert groundtruth.job_name("s", "my--job-2") == "my--job-2"


def test_a_partly_done_job_imports_what_is_labelled_and_lists_the_rest(store, job, tmp_path):
    out, lines = job
    root = tmp_path / "result"
    refs = write_worker_responses(root, lines[:1])
    manifest = root / "job1" / "manifests" / "output"
    manifest.mkdir(parents=True)
    (manifest / "output.manifest").write_text(
        json.dumps({**lines[0], "studio-ranking": {}, "studio-ranking-metadata": {"worker-response-ref": refs[0]}})
        + "\n"
        + json.dumps(
            {
                **lines[1],
                "studio-ranking-metadata": {
                    "failure-reason": "ClientError: The data object expired before a worker labelled it",
                    "human-annotated": "no",
                },
            }
        )
        + "\n"
    )
    # Files Ground Truth writes beside them do not stop the import.
    for other in (
        "annotations/consolidated-annotation/consolidation-request/iteration-1/x.json",
        "annotations/consolidated-annotation/consolidation-response/iteration-1/x.json",
        "annotations/intermediate/1/annotations.manifest",
        "manifests/intermediate/1/output.manifest",
    ):
        (root / "job1" / other).parent.mkdir(parents=True, exist_ok=True)
        (root / "job1" / other).write_text('[{"datasetObjectId": "0", "consolidatedAnnotation": {}}]')
    result = import_results(store, root)
    assert result["rankings"] == 2 and result["prompts"] == 1
    assert list(result["unlabelled"]) == [lines[1]["studio-prompt-id"]]
    assert "expired" in result["unlabelled"][lines[1]["studio-prompt-id"]]


def test_a_worker_response_ref_never_reads_outside_the_upload(store, job, tmp_path):
    out, lines = job
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"answers": []}))
    messages = []
    for ref in ("s3://b/../../secret.json", "s3://b/../../no-such-file.json", "s3://b//etc/passwd", {"a": 1}):
        root = tmp_path / f"r{len(messages)}"
        root.mkdir()
        (root / "output.manifest").write_text(
            json.dumps({**lines[0], "studio-ranking-metadata": {"worker-response-ref": ref}}) + "\n"
        )
        with pytest.raises(GroundTruthError) as error:
            import_results(store, root)
        messages.append(str(error.value).split(":", 2)[-1])
    assert len(set(messages)) == 1 and "not in the uploaded folder" in messages[0]  # existence is not revealed


def test_a_folder_import_never_follows_a_symbolic_link(store, job, tmp_path):
    """A worker-response file (or a folder of them, or the manifest) that is a link to a file elsewhere is refused,
    named, and nothing is imported; the same answers as plain files import."""
    out, lines = job
    elsewhere = tmp_path / "elsewhere"
    write_worker_responses(elsewhere, lines)
    outside = sorted(elsewhere.rglob("*.json"))
    for case in ("file", "folder", "ref"):
        root = tmp_path / f"links-{case}"
        if case == "folder":
            (root / "job1" / "annotations").mkdir(parents=True)
            (root / "job1" / "annotations" / "worker-response").symlink_to(
                elsewhere / "job1" / "annotations" / "worker-response"
            )
        else:
            refs = write_worker_responses(root, lines)
            inside = sorted(root.rglob("*.json"))
            inside[0].unlink()
            inside[0].symlink_to(outside[0])
            if case == "ref":
                (root / "output.manifest").write_text(
                    json.dumps({**lines[0], "studio-ranking-metadata": {"worker-response-ref": refs[0]}}) + "\n"
                )
        before = table_counts(store)
        with pytest.raises(GroundTruthError, match="a symbolic link, which is not followed"):
            import_results(store, root)
        assert table_counts(store) == before, case
    # The manifest itself as a link.
    root = tmp_path / "linked-manifest"
    root.mkdir()
    (tmp_path / "real.manifest").write_text(json.dumps(lines[0]) + "\n")
    (root / "output.manifest").symlink_to(tmp_path / "real.manifest")
    with pytest.raises(GroundTruthError, match="output.manifest: a symbolic link"):
        import_results(store, root)
    assert import_results(store, elsewhere)["rankings"] == 4


def test_a_line_from_another_studio_is_refused_naming_it(store, job, tmp_path):
    out, lines = job
    root = tmp_path / "foreign"
    root.mkdir()
    workers = {"workers": [{"workerId": "w1", "answerContent": answer(lines[0], [1, 2, 3])}]}
    (root / "output.manifest").write_text(
        json.dumps({**lines[0], "studio-ranking": workers})
        + "\n"
        + json.dumps({**lines[1], "source": "What is my balance?", "studio-ranking": workers})
        + "\n"
    )
    before = table_counts(store)
    with pytest.raises(GroundTruthError, match=r"output.manifest:2: its source text is not the text of prompt"):
        import_results(store, root)
    assert table_counts(store) == before


def test_the_check_writes_each_ranking_out_and_saves_nothing(store, job, tmp_path):
    out, lines = job
    write_worker_responses(tmp_path / "result", lines)
    before = table_counts(store)
    results = groundtruth.read_results(store, tmp_path / "result")
    text = groundtruth.preview(store, results)
    assert table_counts(store) == before
    # w1 ranked the first prompt's answers 1, 2, 3: A > B > C, as the Rank tab writes an order.
    assert f"gt:w1 on prompt {lines[0]['studio-prompt-id']} ('question 0'): A > B > C" in text
    assert f"gt:w2 on prompt {lines[0]['studio-prompt-id']} ('question 0'): A = B > C" in text
    assert "    A: 'question 0 answer 0'" in text


@pytest.mark.parametrize(
    "line_change, expected",
    [
        ({"studio-prompt-id": float("inf")}, "no whole-number studio-prompt-id"),
        ({"studio-prompt-id": True}, "no whole-number studio-prompt-id"),
        ({"studio-response-ids": [[1, 2], [3]]}, "no whole-number studio-prompt-id"),
        ({"studio-ranking-metadata": {"worker-response-ref": {"s3": "x"}}}, "not in the uploaded folder"),
        ({"studio-ranking": {"workers": "everyone"}}, "the workers' answers are not a list"),
    ],
)
def test_malformed_lines_are_reported_not_crashed_on(store, job, tmp_path, line_change, expected):
    out, lines = job
    root = tmp_path / "m"
    root.mkdir()
    (root / "output.manifest").write_text(json.dumps({**lines[0], **line_change}) + "\n")
    with pytest.raises(GroundTruthError, match=expected):
        import_results(store, root)


def test_a_zip_with_forged_member_sizes_is_refused_with_a_message(store, tmp_path):
    import zipfile

    path = tmp_path / "forged.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("output.manifest", "x" * 5000)
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")  # the directory claims 10 bytes
    path.write_bytes(bytes(data))
    with pytest.raises(GroundTruthError, match="not a readable zip file"):
        import_results(store, path)


def test_a_zip_that_unpacks_too_large_or_out_of_its_folder_is_refused_saying_which(store, tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setattr(groundtruth, "MAX_IMPORT_BYTES", 2 * 2**20)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("output.manifest", b"\n" * (3 * 2**20))  # 3 MB of nothing, a few kB packed
    with pytest.raises(GroundTruthError, match=r"bomb.zip unpacks to more than 2 MB"):
        import_results(store, bomb)
    unsafe = tmp_path / "unsafe.zip"
    with zipfile.ZipFile(unsafe, "w") as archive:
        archive.writestr("../../outside.json", "{}")
    with pytest.raises(GroundTruthError, match=r"unsafe.zip holds an unsafe path: ../../outside.json"):
        import_results(store, unsafe)
    assert not (tmp_path.parent / "outside.json").exists()


def test_a_job_is_started_on_ground_truth_and_its_output_fetched_and_imported(store, job, tmp_path):
    """The AWS calls: S3 in moto's stand-in; SageMaker's labeling-job calls (which moto does not have) through
    botocore's Stubber, which checks each request and each answer against botocore's own model of the API."""
    import datetime

    import boto3
    from botocore.stub import Stubber
    from moto import mock_aws

    out, lines = job
    folder = export_job(store, "s", tmp_path / "aws-job", bucket="gt-bucket", name="job1")["folder"]  # a real name
    account = "arn:aws:{}:us-east-1:123456789012:{}"
    arns = {
        "role_arn": "arn:aws:iam::123456789012:role/SageMakerGroundTruthRole",
        "pre_lambda_arn": account.format("lambda", "function:SageMaker-align-studio-pre-annotation"),
        "post_lambda_arn": account.format("lambda", "function:SageMaker-align-studio-consolidation"),
        "workteam_arn": account.format("sagemaker", "workteam/private-crowd/bank-team"),
    }
    job_arn = account.format("sagemaker", "labeling-job/job1")
    settings = json.loads((folder / "settings.json").read_text())
    settings["RoleArn"] = arns["role_arn"]
    settings["HumanTaskConfig"].update(PreHumanTaskLambdaArn=arns["pre_lambda_arn"], WorkteamArn=arns["workteam_arn"])
    settings["HumanTaskConfig"]["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"] = arns[
        "post_lambda_arn"
    ]

    def described(status, labeled):
        now = datetime.datetime(2026, 11, 22, tzinfo=datetime.timezone.utc)
        return {
            **settings,
            "LabelingJobArn": job_arn,
            "LabelingJobStatus": status,
            "CreationTime": now,
            "LastModifiedTime": now,
            "JobReferenceCode": "ref1",
            "LabelCounters": {"TotalLabeled": labeled, "HumanLabeled": labeled, "Unlabeled": 2 - labeled},
            **(
                {
                    "LabelingJobOutput": {
                        "OutputDatasetS3Uri": "s3://gt-bucket/job1/output/job1/manifests/output/output.manifest"
                    }
                }
                if labeled
                else {}
            ),
        }

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="gt-bucket")
        sagemaker = boto3.client("sagemaker", region_name="us-east-1")
        with pytest.raises(GroundTruthError, match="Give the ARN of the job's role"):
            groundtruth.launch_job(
                folder, **{**arns, "role_arn": "<arn:aws:iam::ACCOUNT:role/R>"}, s3=s3, sagemaker=sagemaker
            )
        with pytest.raises(GroundTruthError, match="was not started on Ground Truth from the studio"):
            groundtruth.fetch_results(folder, s3=s3, sagemaker=sagemaker)
        stub = Stubber(sagemaker)
        stub.add_response("create_labeling_job", {"LabelingJobArn": job_arn}, settings)
        stub.add_response("describe_labeling_job", described("InProgress", 0), {"LabelingJobName": "job1"})
        stub.add_client_error("describe_labeling_job", "AccessDeniedException", "not authorized to describe")
        stub.add_response("describe_labeling_job", described("Completed", 2), {"LabelingJobName": "job1"})
        with stub:
            assert groundtruth.launch_job(folder, **arns, s3=s3, sagemaker=sagemaker) == job_arn
            for name in ("manifest.jsonl", "template.liquid.html"):  # where settings.json points the job
                assert (
                    s3.get_object(Bucket="gt-bucket", Key=f"job1/{name}")["Body"].read() == (folder / name).read_bytes()
                )
            assert groundtruth.fetch_results(folder, s3=s3, sagemaker=sagemaker)["status"] == "InProgress"
            with pytest.raises(GroundTruthError, match="AWS refused to describe the labeling job job1: .*not auth"):
                groundtruth.fetch_results(folder, s3=s3, sagemaker=sagemaker)
            # The workers answer: Ground Truth writes under S3OutputPath/<job name>/ (manifests, worker responses).
            written = tmp_path / "written"
            write_job_output(written, lines)
            for file in written.rglob("*"):
                if file.is_file():
                    s3.upload_file(str(file), "gt-bucket", f"job1/output/{file.relative_to(written).as_posix()}")
            state = groundtruth.fetch_results(folder, s3=s3, sagemaker=sagemaker)
        stub.assert_no_pending_responses()
    assert state["status"] == "Completed" and state["counters"]["TotalLabeled"] == 2
    assert import_results(store, state["output"])["rankings"] == 4
    check_round_trip(store, lines)
