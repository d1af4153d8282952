import importlib.util
import json
import shutil

import pytest

from studio import groundtruth
from studio.groundtruth import GroundTruthError, export_job, import_results
from studio.ranking import current_rankings, save_guidelines
from tests.conftest import table_counts
from tests.helpers import make_set


def lambda_module(folder, name):
    spec = importlib.util.spec_from_file_location(name, folder / "lambdas" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answer(line, ranks):
    """answerContent as the template's crowd-form submits it: our hidden ids plus the ranking element's output."""
    return {"studioPromptId": str(line["studio-prompt-id"]), "studioResponseIds": json.dumps(line["studio-response-ids"]),
            "ranking": {"ordinalRankingDimensions": [{"name": "Overall quality", "responseRankings": ranks}]}}


WORKER_RANKS = {"w1": [[1, 2, 3], [2, 1, 3]], "w2": [[1, 1, 2], [3, 2, 1]]}  # per worker, per prompt


@pytest.fixture
def job(store, tmp_path):
    make_set(store, prompts=2, candidates=3)
    save_guidelines(store, "s", "Prefer polite answers.\n\nNever <script>alert(1)</script> anything.")
    out = export_job(store, "s", tmp_path / "job", bucket="b", job_name="job1")
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
    task = lambda_module(folder, "pre_annotation").lambda_handler({"dataObject": lines[0]}, None)["taskInput"]
    assert task["studioPromptId"] == str(lines[0]["studio-prompt-id"])
    assert json.loads(task["studioResponseIds"]) == lines[0]["studio-response-ids"]


def expected_tiers(line, ranks):
    return [[rid for rid, r in zip(line["studio-response-ids"], ranks) if r == rank] for rank in sorted(set(ranks))]


def check_round_trip(store, lines):
    got = {(r["annotator"], r["prompt_id"]): r["tiers"] for r in current_rankings(store, "s")}
    assert got == {(f"gt:{w}", line["studio-prompt-id"]): expected_tiers(line, ranks[i])
                   for w, ranks in WORKER_RANKS.items() for i, line in enumerate(lines)}
    assert {r["source"] for r in current_rankings(store, "s")} == {"groundtruth"}


def test_round_trip_through_the_consolidated_output_manifest(store, job, tmp_path):
    out, lines = job
    consolidation = lambda_module(out["folder"], "consolidation")
    payload = [{"datasetObjectId": str(i), "dataObject": line,
                "annotations": [{"workerId": w, "annotationData": {"content": json.dumps(answer(line, ranks[i]))}}
                                for w, ranks in WORKER_RANKS.items()]} for i, line in enumerate(lines)]
    labels = consolidation.consolidate(payload, "studio-ranking")
    result = tmp_path / "result" / "job1" / "manifests" / "output"
    result.mkdir(parents=True)
    with open(result / "output.manifest", "w") as f:
        for line, label in reversed(list(zip(lines, labels))):  # a different order than exported: joined by ids
            content = label["consolidatedAnnotation"]["content"]
            f.write(json.dumps({**line, **content, "studio-ranking-metadata": {"type": "groundtruth/custom"}}) + "\n")
    shutil.make_archive(str(tmp_path / "result"), "zip", tmp_path / "result")
    assert import_results(store, tmp_path / "result.zip") == {"rankings": 4, "unchanged": 0, "workers": 2, "prompts": 2}
    check_round_trip(store, lines)
    # Importing the same results again changes nothing.
    assert import_results(store, tmp_path / "result")["unchanged"] == 4


def write_worker_responses(root, lines):
    refs = []
    for i, line in enumerate(lines):
        folder = root / "job1" / "annotations" / "worker-response" / "iteration-1" / str(i)
        folder.mkdir(parents=True)
        answers = [{"acceptanceTime": "2026-11-20T10:00:00.000Z", "submissionTime": "2026-11-20T10:01:00.000Z",
                    "timeSpentInSeconds": 60.0, "workerId": w, "workerMetadata": {"identityData": {"sub": w}},
                    "answerContent": answer(line, ranks[i])} for w, ranks in WORKER_RANKS.items()]
        (folder / "2026-11-20_10:01:00.json").write_text(json.dumps({"answers": answers}))
        refs.append(f"s3://b/job1/output/job1/annotations/worker-response/iteration-1/{i}/2026-11-20_10:01:00.json")
    return refs


def test_round_trip_through_worker_response_refs(store, job, tmp_path):
    out, lines = job
    root = tmp_path / "result"
    refs = write_worker_responses(root, lines)
    (root / "job1" / "manifests" / "output").mkdir(parents=True)
    (root / "job1" / "manifests" / "output" / "output.manifest").write_text("\n".join(
        json.dumps({**line, "studio-ranking": {}, "studio-ranking-metadata": {"worker-response-ref": ref}})
        for line, ref in zip(lines, refs)) + "\n")
    assert import_results(store, root)["rankings"] == 4
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
    good = {**lines[0], "studio-ranking": {"workers": [{"workerId": "w1", "answerContent": answer(lines[0], [1, 2, 3])}]}}
    bad_lines = [
        json.dumps(good),
        json.dumps({**good, "studio-prompt-id": 99999}),
        json.dumps({**lines[1], "studio-ranking": {"workers": [{"workerId": "w1", "answerContent": answer(lines[1], [1, 2])}]}}),
        json.dumps({**lines[1], "studio-ranking": {"workers": [{"workerId": "w2", "answerContent": answer(lines[1], [0, 2, 4])}]}}),
        '{"source": "broken',
        json.dumps({**lines[1], "studio-response-ids": [1, 2, 999999],
                    "studio-ranking": {"workers": [{"workerId": "w3", "answerContent": answer(lines[1], [1, 2, 3])}]}}),
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
    (root / "junk.json").write_text("{not json")
    with pytest.raises(GroundTruthError, match="junk.json: broken JSON"):
        import_results(store, root)
    with pytest.raises(GroundTruthError, match="is not a zip file"):
        import_results(store, root / "junk.json")
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
