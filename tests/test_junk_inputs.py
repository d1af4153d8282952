"""Generated junk thrown at every function that reads what a user uploads or imports: each must end in one of our
own errors (a message naming what to fix) or succeed, never in a bare exception, and a refusal stores nothing."""

import json
import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.core.store import Store
from studio.data import groundtruth, preferences, prompts, rubric
from tests.conftest import table_counts

OURS = (prompts.PromptError, preferences.PreferenceError, groundtruth.GroundTruthError, rubric.RubricError)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)
# Rows that look like what the readers expect, with junk where the values go.
PROMPT_KEYS = [
    "prompt",
    "question",
    "instruction",
    "system",
    "chosen",
    "rejected",
    "content",
    "role",
    "source",
    "studio-prompt-id",
    "studio-response-ids",
    "studio-ranking",
    "studio-ranking-metadata",
    "workers",
    "worker-response-ref",
    "answers",
    "workerId",
    "answerContent",
    "messages",
]
keyed = st.recursive(
    json_values,
    lambda inner: (
        st.dictionaries(st.sampled_from(PROMPT_KEYS) | st.text(max_size=8), inner, max_size=5)
        | st.lists(inner, max_size=3)
    ),
    max_leaves=30,
)
lines = st.lists(
    keyed.map(lambda v: json.dumps(v)) | st.text(max_size=60) | st.just("[" * 5000) | st.just('{"prompt": ' * 3000),
    min_size=1,
    max_size=6,
)


def _store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("junk") / "studio.db")


@SETTINGS
@given(rows=lines, suffix=st.sampled_from([".jsonl", ".csv"]))
def test_prompt_uploads(tmp_path_factory, rows, suffix):
    store = _store(tmp_path_factory)
    path = tmp_path_factory.mktemp("up") / f"upload{suffix}"
    path.write_text("\n".join(rows))
    before = table_counts(store)
    try:
        prompts.add_prompt_set(store, "junk", prompts.parse_prompt_file(path), "upload")
    except OURS:
        assert table_counts(store) == before
    else:
        for row in store.query("SELECT text, system FROM prompts"):
            assert isinstance(row["text"], str) and not row["text"].startswith(("{'", "["))


@SETTINGS
@given(rows=lines)
def test_preference_imports(tmp_path_factory, rows):
    store = _store(tmp_path_factory)
    path = tmp_path_factory.mktemp("up") / "prefs.jsonl"
    path.write_text("\n".join(rows))
    before = table_counts(store)
    try:
        preferences.import_file(store, path, "junk")
    except OURS:
        assert table_counts(store) == before


@SETTINGS
@given(rows=lines, response_file=keyed, zipped=st.booleans())
def test_ground_truth_imports(tmp_path_factory, rows, response_file, zipped):
    store = _store(tmp_path_factory)
    root = tmp_path_factory.mktemp("gt")
    (root / "job" / "manifests" / "output").mkdir(parents=True)
    (root / "job" / "manifests" / "output" / "output.manifest").write_text("\n".join(rows))
    responses = root / "job" / "annotations" / "worker-response" / "iteration-1" / "0"
    responses.mkdir(parents=True)
    (responses / "x.json").write_text(json.dumps(response_file))
    target = root
    if zipped:
        target = root.with_suffix(".zip")
        with zipfile.ZipFile(target, "w") as archive:
            for path in root.rglob("*"):
                archive.write(path, path.relative_to(root))
    before = table_counts(store)
    try:
        groundtruth.import_results(store, target)
    except OURS:
        assert table_counts(store) == before


@SETTINGS
@given(text=st.text(max_size=300) | keyed.map(lambda v: json.dumps(v)))
def test_rubrics(text):
    try:
        rubric.parse(text)
    except OURS:
        pass
