"""The Hugging Face Hub: is it reachable, which token, is a repository id well formed."""

import os
import re
import socket
from urllib.parse import urlparse

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint (HF_ENDPOINT or huggingface.co) answers a TCP connection within `timeout` seconds.

    Without this, an offline load waits through huggingface_hub's retries (about a minute) before failing.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def in_cache(repo_id: str) -> bool:
    """Whether a model repository is in the local Hugging Face cache (its config.json is), so it loads offline."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # a malformed id
        return False


def check_available(repo_id: str, what: str) -> None:
    """Raise ValueError at once when the Hub model `repo_id` can be neither downloaded (the Hub is out of reach)
    nor loaded from the local cache, instead of letting the load fail after a minute of retries."""
    if not reachable() and not in_cache(repo_id):
        raise ValueError(
            f"The Hugging Face Hub is out of reach (no network?) and {what} {repo_id!r} is not in the "
            "local cache. Use 'embedded' or a local folder, or connect and try again."
        )


def get_token(token: str | None = None) -> str | None:
    """The Hub token: given (the Space login), HF_TOKEN, or the user's own `hf auth login`. Never stored by us."""
    from huggingface_hub import get_token as saved_login

    return token or os.environ.get("HF_TOKEN") or saved_login()


def check_repo_id(repo_id: str, example: str) -> str:
    repo_id = (repo_id or "").strip()
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hub repository id; use owner/name, e.g. {example!r}.")
    return repo_id
