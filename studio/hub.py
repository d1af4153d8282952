"""The Hugging Face Hub: is it reachable from here."""

import socket
from urllib.parse import urlparse


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
