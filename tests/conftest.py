import os

import pytest

from studio.store import Store


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
