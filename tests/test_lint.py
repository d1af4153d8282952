"""The tree passes ruff with pyproject.toml's rules (pycodestyle, pyflakes, sorted imports; lines up to 120), and
import-linter with its import contracts."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]


def test_import_linter_contracts_are_kept():
    """pyproject.toml's import contracts: no cycles among the engine's modules (jobs gets the SageMaker runner passed
    in instead of importing it), and no page or gradio import in the engine."""
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout
