"""The tree passes ruff with pyproject.toml's rules (pycodestyle, pyflakes, sorted imports; lines up to 120) and is as
ruff's formatter writes it, and import-linter keeps its import contracts (the engine's layers)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]


def test_the_tree_is_formatted_by_ruff():
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]


def test_import_linter_contracts_are_kept():
    """pyproject.toml's import contracts: the engine's packages are layers (core <- inference <- data <- training <-
    evaluation <- shipping, each importing only those below it), the modules inside each package import one another
    without cycles, and no page or gradio import is in the engine."""
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    assert "3 kept, 0 broken" in out.stdout


def test_pages_only_lay_out_and_wire():
    """No function in pages/ is over 120 lines (a tab is built from sections, each laying out its components and
    wiring them), and no page decides a role: pages pass who is acting, the engine checks it."""
    import ast

    long = []
    for path in sorted((ROOT / "pages").glob("*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 120:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
        assert "check_lead" not in text and "require_lead" not in text, path.name
    assert not long, long
