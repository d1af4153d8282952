import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_app_builds_without_loading_torch_or_a_model(tmp_path):
    # Start-up stays fast because nothing heavy is imported until a model is first used.
    code = (
        "import sys, app; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import at start-up'; "
        "print(type(app.demo).__name__)"
    )
    env = dict(os.environ, STUDIO_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Blocks"
    assert (tmp_path / "studio.db").is_file()


def test_engine_never_imports_gradio():
    for path in (ROOT / "studio").glob("*.py"):
        text = path.read_text()
        assert "import gradio" not in text and "from gradio" not in text and "from pages" not in text, path


def test_the_app_listens_where_gradio_environment_says_and_sends_no_analytics(tmp_path):
    """A Space sets GRADIO_SERVER_NAME=0.0.0.0; with no --host flag the app must listen there, and Gradio's usage
    analytics stay off unless the user turns them on."""
    import socket
    import time

    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, STUDIO_HOME=str(tmp_path), GRADIO_SERVER_NAME="0.0.0.0", GRADIO_SERVER_PORT=str(port))
    env.pop("GRADIO_ANALYTICS_ENABLED", None)
    process = subprocess.Popen(
        [sys.executable, "app.py", "--no-browser"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        listening = []
        while not listening and time.monotonic() < deadline and process.poll() is None:
            listening = [
                c.laddr
                for c in psutil.Process(process.pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
            ]
            time.sleep(0.3)
        assert ("0.0.0.0", port) in [(a.ip, a.port) for a in listening], listening
        # Listening beyond the loopback address, the OpenAI-compatible endpoint asks for a key (no --auth given).
        import urllib.error
        import urllib.request

        for _ in range(200):  # the routes are added just after Gradio starts listening
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30)
                raise AssertionError("/v1/models answered without a key on 0.0.0.0")
            except urllib.error.HTTPError as refused:
                if refused.code == 401:
                    assert "needs an API key" in refused.read().decode()
                    break
            time.sleep(0.3)
        else:
            raise AssertionError("/v1/models never asked for a key")
        code = "import os, app; print(os.environ['GRADIO_ANALYTICS_ENABLED'])"
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in env.items() if k != "GRADIO_ANALYTICS_ENABLED"},
        )
        assert out.stdout.strip().splitlines()[-1] == "False"
    finally:
        process.terminate()
        process.wait(20)


def test_on_a_space_the_studio_keeps_its_data_on_persistent_storage_or_says_it_will_not(tmp_path, monkeypatch):
    from studio.core import paths

    monkeypatch.delenv("STUDIO_HOME", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setattr(paths.Path, "home", lambda: tmp_path / "user")
    monkeypatch.setattr(paths, "SPACE_STORAGE", tmp_path / "data")
    assert paths.persistence_warning() is None  # not a Space: nothing to say
    monkeypatch.setenv("SPACE_ID", "me/align-studio")
    # A Space without persistent storage: the default home, and a warning that names what to do.
    assert paths.studio_home() == tmp_path / "user" / ".cache" / "align-studio"
    assert "lost when the Space restarts" in paths.persistence_warning()
    assert "persistent storage" in paths.persistence_warning()
    paths.use_space_storage_for_hub_cache()
    assert "HF_HOME" not in os.environ
    # With persistent storage mounted at /data: everything goes there, the Hub's downloads included.
    (tmp_path / "data").mkdir()
    assert paths.studio_home() == tmp_path / "data" / "align-studio"
    assert paths.persistence_warning() is None
    paths.use_space_storage_for_hub_cache()
    assert os.environ["HF_HOME"] == str(tmp_path / "data" / ".huggingface")
    # A home the user chose wins, and is warned about when it is not on the persistent disk.
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "elsewhere"))
    assert paths.studio_home() == tmp_path / "elsewhere"
    assert "lost when the Space restarts" in paths.persistence_warning()


def test_leads_need_a_login_to_tell_people_apart(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SPACE_ID"}
    env["STUDIO_HOME"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "app.py", "--no-browser", "--leads", "anna"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "--leads needs a login to tell people apart: add --auth" in out.stderr
