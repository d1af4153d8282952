"""Where the studio keeps its files, and the check for names that become parts of paths."""

import os
import re
from pathlib import Path

# A name typed by a user that may end up in a path: letters, digits, '.', '_', '-'; no leading dot, no '..'.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def studio_home() -> Path:
    """STUDIO_HOME, default ~/.cache/align-studio; created on first use."""
    home = Path(os.environ.get("STUDIO_HOME") or Path.home() / ".cache" / "align-studio").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


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
