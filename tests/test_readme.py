"""What a new user runs: the README's two commands, CI running exactly the second, and every package the code
imports named in the requirements (a package that only comes through another one can vanish with its next release)."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), re.DOTALL)


def requirement_names(*files: str) -> set[str]:
    names = set()
    for name in files:
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                names.add(re.split(r"[\[=<>~! ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def imported_modules(folders: list[str]) -> set[str]:
    found = set()
    for folder in folders:
        paths = [ROOT / folder] if folder.endswith(".py") else (ROOT / folder).rglob("*.py")
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"studio", "pages", "tests", "bench", "app", "__future__"}


def distributions(modules: set[str]) -> dict[str, set[str]]:
    """module -> the installed distributions that provide it."""
    provided = importlib.metadata.packages_distributions()
    return {m: {d.lower().replace("_", "-") for d in provided.get(m, [])} for m in modules}


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_second_word_for_word():
    run, test = readme_commands()[:2]
    assert run.startswith("pip install -r requirements.txt") and run.endswith("python app.py")
    assert test.endswith("python -m pytest")
    script = (ROOT / ".ci" / "run").read_text()
    assert script.strip().splitlines()[-1] == test
    # ... in a virtual environment made for the run, outside the clone.
    assert 'python3 -m venv "$venv"' in script and 'source "$venv/bin/activate"' in script


def test_every_package_the_code_imports_is_a_requirement():
    needed = requirement_names("requirements.txt")
    for module, names in distributions(imported_modules(["studio", "pages", "app.py"])).items():
        assert names, f"{module} is imported but not installed"
        assert names & needed, f"{module} (from {', '.join(sorted(names))}) is imported but not in requirements.txt"
    needed |= requirement_names("requirements-dev.txt")
    for module, names in distributions(imported_modules(["tests", "bench"])).items():
        assert names & needed, f"{module} (from {', '.join(sorted(names))}) is imported but in no requirements file"
