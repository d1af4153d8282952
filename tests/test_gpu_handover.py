"""One owner of a GPU at a time: a training job started on the GPU takes it from the app (the app's model is released
first), in-app generation waits for the job to end and then goes on by itself; a job waits for an in-app generation to
finish rather than start beside it. On a CPU nothing of this happens. The GPU is faked (Manager.gpu), and so is the
training process (a real one would train on this CPU): what is tested is the hand-over."""

import json
import threading
from pathlib import Path

import pytest

from studio.core import jobs
from studio.inference import models
from studio.training import launch
from studio.training.launch import Manager
from tests.helpers import clear_cut_set, new_job


class FakeTraining:
    """A training process that runs until `finish` is set, then leaves a finished result as train.py would."""

    def __init__(self, folder: Path):
        self.folder, self.pid, self.finish = folder, 999_999, threading.Event()

    def poll(self):
        if not self.finish.is_set():
            return None
        (self.folder / "result.json").write_text(json.dumps({"status": "finished"}))
        return 0


@pytest.fixture
def started(monkeypatch):
    """The fake processes the Manager starts, in order; models' GPU state is put back afterwards."""
    made = []

    def popen(argv, cwd=None, **kwargs):
        made.append(FakeTraining(Path(argv[-1]).parent))
        return made[-1]

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    monkeypatch.setattr(models, "_loaded", "the app's model")
    yield made
    models.take_back()


def test_a_job_on_the_gpu_takes_it_from_the_app_and_gives_it_back(store, started):
    clear_cut_set(store)
    manager = Manager(store)
    manager.gpu = True
    job_id = new_job(store, 1)

    with models.in_use("generating answers"):  # the app generates: the job waits for it
        manager.refresh()
        assert jobs.get(store, job_id)["status"] == "queued" and not started
    manager.refresh()
    assert jobs.get(store, job_id)["status"] == "running" and len(started) == 1
    assert models._loaded is None  # released before the job started
    assert models.gpu_holder() == f"job {job_id} is training on it"
    assert manager.gpu_line() == f"The app's model was unloaded from the GPU: job {job_id} is training on it."

    entered = threading.Event()

    def generate():
        with models.in_use("answering a chat turn"):
            entered.set()

    waiting = threading.Thread(target=generate, daemon=True)
    waiting.start()
    assert not entered.wait(1.5)  # in-app generation waits while the job trains
    manager.refresh()
    assert not entered.is_set()
    started[0].finish.set()
    manager.refresh()  # the job is seen to end: the GPU goes back to the app
    assert jobs.get(store, job_id)["status"] == "finished"
    assert entered.wait(30) and models.gpu_holder() is None and manager.gpu_line() == ""
    waiting.join(30)


def test_on_a_cpu_a_job_starts_beside_the_app_and_takes_nothing(store, started):
    clear_cut_set(store)
    manager = Manager(store)
    manager.gpu = False
    job_id = new_job(store, 1)
    with models.in_use("generating answers"):
        manager.refresh()
        assert jobs.get(store, job_id)["status"] == "running"
    assert models._loaded == "the app's model" and models.gpu_holder() is None
    started[0].finish.set()
    manager.refresh()
    assert jobs.get(store, job_id)["status"] == "finished"
