"""`python -m studio <command>`: one entry for the studio's command lines."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def studio(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "studio", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )


def test_the_commands_are_listed_and_an_unknown_one_is_refused():
    listed = studio("--help")
    assert listed.returncode == 0
    for command in ("train", "generate", "prompts", "groundtruth", "sagemaker", "publish", "api"):
        assert f"\n{command} " in listed.stdout
    unknown = studio("trian")
    assert unknown.returncode == 2 and "unknown command 'trian'" in unknown.stderr and "train " in unknown.stderr


def test_a_command_runs_its_module_with_its_own_help_and_errors(tmp_path):
    import os

    env = {**os.environ, "STUDIO_HOME": str(tmp_path)}
    helped = studio("api", "--help", env=env)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: python -m studio api ")
    created = studio("api", "create-key", "ci", env=env)
    assert created.returncode == 0, created.stderr
    listed = studio("api", "list-keys", env=env)
    assert listed.returncode == 0 and "ci" in listed.stdout
    missing = studio("train", str(tmp_path / "no-recipe.yaml"), env=env)
    assert missing.returncode != 0 and "no-recipe.yaml" in missing.stderr
