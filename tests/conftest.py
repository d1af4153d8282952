import os
import socket

import pytest

from studio.core.store import Store


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
