"""Where the studio keeps its files, and the check for names that become parts of paths."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout (or the image's /app): assets/, requirements.txt

# A name typed by a user that may end up in a path: letters, digits, '.', '_', '-'; no leading dot, no '..'.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# Where a Hugging Face Space mounts its persistent storage, when the Space has some (a paid option); everything else
# on a Space is lost when it restarts.
SPACE_STORAGE = Path("/data")


def on_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def _space_storage() -> Path | None:
    return SPACE_STORAGE if SPACE_STORAGE.is_dir() and os.access(SPACE_STORAGE, os.W_OK) else None


def studio_home() -> Path:
    """STUDIO_HOME if set; on a Space with persistent storage, /data/align-studio; else ~/.cache/align-studio.
    Created on first use."""
    configured = os.environ.get("STUDIO_HOME")
    if configured:
        home = Path(configured).expanduser()
    elif on_space() and _space_storage():
        home = _space_storage() / "align-studio"
    else:
        home = Path.home() / ".cache" / "align-studio"
    home.mkdir(parents=True, exist_ok=True)
    return home


def use_space_storage_for_hub_cache() -> None:
    """On a Space with persistent storage, keep the Hub's downloads there too (HF_HOME), unless the user chose a
    place: a restart then does not download the models again. Call before huggingface_hub is imported."""
    if on_space() and _space_storage() and not os.environ.get("HF_HOME"):
        os.environ["HF_HOME"] = str(_space_storage() / ".huggingface")


def persistence_warning() -> str | None:
    """What the page should say when the studio's data will not survive a restart (a Space without persistent
    storage), else None."""
    if not on_space():
        return None
    storage = _space_storage()
    home = studio_home().resolve()
    if storage and home.is_relative_to(storage.resolve()):
        return None
    return (
        f"This Space keeps the studio's data in {home}, which is lost when the Space restarts (rankings, jobs, "
        "adapters). Turn on persistent storage in the Space's settings (it is mounted at /data and used "
        "automatically), or push what you need to the Hub before a restart."
    )


def db_path() -> Path:
    return studio_home() / "studio.db"


def models_dir() -> Path:
    path = studio_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_name(name: str, what: str = "name") -> str:
    """Return `name` stripped if it is safe to use inside a path; raise ValueError naming the rule otherwise."""
    name = (name or "").strip()
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(
            f"The {what} {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name
