import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_app_builds_without_loading_torch_or_a_model(tmp_path):
    # Start-up stays fast because nothing heavy is imported until a model is first used.
    code = ("import sys, app; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import at start-up'; "
            "print(type(app.demo).__name__)")
    env = dict(os.environ, STUDIO_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Blocks"
    assert (tmp_path / "studio.db").is_file()


def test_engine_never_imports_gradio():
    for path in (ROOT / "studio").glob("*.py"):
        text = path.read_text()
        assert "import gradio" not in text and "from gradio" not in text and "from pages" not in text, path
