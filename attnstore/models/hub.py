"""Where model weights come from: a local folder or the Hugging Face cache (no torch).

Nothing here downloads: with HF_HUB_OFFLINE set, transformers only looks in the cache.
The cache is always looked in first; the hub is asked only when the model is not cached and
a connection to it opens within HUB_PROBE_SECONDS, so a machine without network gets the
one-line error at once instead of the hub client's retries.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from attnstore.errors import ModelLoadError

# The seed scripts spell the hub id differently from the hub; both work.
MODEL_ALIASES = {
    "HuggingFaceTB/SmolVLM-Instruct-256M": "HuggingFaceTB/SmolVLM-256M-Instruct",
}
# Custom config key set by attnstore's own builders so every output can say so.
RANDOM_WEIGHTS_KEY = "attnstore_random_weights"


def canonical_model_id(model_id: str) -> str:
    """Map known alternative spellings to the hub id."""
    return MODEL_ALIASES.get(model_id, model_id)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


# Budget for finding out that the hub cannot be reached (name lookup and TCP connect).
HUB_PROBE_SECONDS = 1.5


def missing_weights_message(model_id: str, reason: str = "") -> str:
    """`reason` (e.g. why the hub was not asked) is added to the first sentence."""
    return (
        f"model '{model_id}' is neither a local directory nor in the Hugging Face cache{reason}. "
        f"On a machine with internet run `hf download {model_id}` (then copy the cache or the folder here), "
        "or give the path of a folder saved with save_pretrained. "
        "`attnstore demo` runs offline with its own small model."
    )


def hub_endpoint() -> str:
    """The hub URL the hub client uses (HF_ENDPOINT, else huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub (or to the proxy for its scheme) opens within `timeout` s.

    The name lookup runs in the probing thread too, so a machine without network answers
    within `timeout` even when DNS would hang.
    """
    url = urlsplit(hub_endpoint())
    proxy = urllib.request.getproxies().get(url.scheme)
    target = urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(url.hostname or "") else url
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    opened: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            opened.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="attnstore-hub-probe")
    thread.start()
    thread.join(timeout)
    return bool(opened and opened[0])


def cached_config(model_id: str) -> Path | None:
    """config.json of `model_id` in the Hugging Face cache, or None (never touches the network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model_id, "config.json")
    except ValueError:  # not a valid repo id: nothing cached under it
        return None
    return Path(found) if isinstance(found, str) else None


def hub_unavailable() -> str | None:
    """Why the hub cannot be asked (offline, or unreachable), or None when it can."""
    if hub_offline():
        return " (HF_HUB_OFFLINE is set)"
    if not hub_reachable():
        return f" and the Hugging Face hub ({hub_endpoint()}) cannot be reached"
    return None


def read_model_type(model_id: str) -> str:
    """The config's model_type, from a local folder or the HF cache (never downloads when offline)."""
    model_id = canonical_model_id(model_id)
    local = Path(model_id).expanduser()
    if local.is_dir():
        config_file = local / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"'{local}' has no config.json: not a saved model folder")
        return json.loads(config_file.read_text()).get("model_type", "")
    cached = cached_config(model_id)
    if cached is not None:
        return json.loads(cached.read_text()).get("model_type", "")
    reason = hub_unavailable()
    if reason is not None:
        raise ModelLoadError(missing_weights_message(model_id, reason), param="model")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_id).model_type
    except (OSError, ValueError) as err:
        raise ModelLoadError(missing_weights_message(model_id), param="model") from err
