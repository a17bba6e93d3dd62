"""Where a model name points (a bundled model, a local path, a hub id), and whether the Hugging Face hub can be
reached. Standard library only, so that the command line can answer a mistyped --model before torch is imported.

Offline, huggingface_hub and transformers retry each request for about a minute before they fail. Every hub access
of openmagnet (the checkpoint package's downloads, the codec pointer, the text encoder through transformers) asks
`hub_unreachable()`, which sends one HEAD request to the hub's endpoint (HF_ENDPOINT, default huggingface.co,
through the usual proxy variables) and waits at most HUB_CHECK_SECONDS. When no answer comes, the cache alone is
used (as with HF_HUB_OFFLINE=1), so a model already downloaded still loads and a missing one is a one-line error
in seconds. The answer is kept for HUB_CHECK_KEEP seconds.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
import typing as tp
import urllib.error
import urllib.request
from pathlib import Path

# Models that ship inside the package (safetensors under src/openmagnet/assets/), by name.
BUNDLED_MODELS = {"openmagnet/demo": "demo"}
HUB_CHECK_SECONDS = 2.0  # an answering hub replies in well under a second; a firewall that drops packets never
HUB_CHECK_KEEP = 60.0  # seconds an answer is reused (one generation asks several times)
OFFLINE_HINT = "HF_HUB_OFFLINE=1 uses the Hugging Face cache without this check"
# what a hub repo of a MAGNeT model holds first: the audiocraft layout's LM, or a save_pretrained config
HUB_MODEL_FILES = ("state_dict.bin", "config.json")
_answers: tp.Dict[str, tp.Tuple[float, tp.Optional[str]]] = {}


def is_path_like(name: str) -> bool:
    """True for names that can only be local paths (never a hub id `owner/repo`)."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or \
        name.endswith((".bin", ".pt", ".safetensors"))


def missing_path(name: str) -> tp.Optional[str]:
    """The one-line error for a model name that is neither bundled, nor an existing path, nor shaped like a hub id
    (owner/name: every MAGNeT repo has an owner, so a bare word is a mistyped folder); None otherwise."""
    if name in BUNDLED_MODELS or Path(name).expanduser().exists():
        return None
    if is_path_like(name):
        return f"{name}: no such local folder or file"
    if "/" not in name:
        return f"{name}: no such local folder or file (a hub id reads owner/name, e.g. facebook/magnet-small-10secs)"
    return None


def hub_endpoint() -> str:
    """The hub's address, as huggingface_hub reads it (HF_ENDPOINT)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def offline_mode() -> bool:
    """HF_HUB_OFFLINE is set: the hub is never asked, only the cache is read."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off")


def hub_unreachable(timeout: float = HUB_CHECK_SECONDS) -> tp.Optional[str]:
    """None when the hub answers (any HTTP status counts), else why not, in a few words ('offline mode is on
    (HF_HUB_OFFLINE)', 'no answer from https://huggingface.co in 2 s', 'https://huggingface.co: Name or service
    not known'). At most `timeout` seconds (name lookup included), and one request per HUB_CHECK_KEEP seconds."""
    if offline_mode():
        return "offline mode is on (HF_HUB_OFFLINE)"
    endpoint = hub_endpoint()
    kept = _answers.get(endpoint)
    if kept is not None and time.monotonic() - kept[0] < HUB_CHECK_KEEP:
        return kept[1]
    answer: tp.List[tp.Optional[str]] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            answer.append(None)
        except urllib.error.HTTPError:  # the hub answered, with an error status: it is there
            answer.append(None)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            answer.append(f"{endpoint}: {getattr(reason, 'strerror', None) or reason}")

    thread = threading.Thread(target=ask, daemon=True)  # the name lookup has no timeout of its own
    thread.start()
    thread.join(timeout + 0.2)
    why = answer[0] if answer else f"no answer from {endpoint} in {timeout:g} s"
    _answers[endpoint] = (time.monotonic(), why)
    return why


def cache_only(name: str) -> bool:
    """Whether transformers should load `name` from the cache alone (local_files_only): a hub id while the hub
    cannot be reached. A local folder never needs the hub."""
    return not os.path.isdir(os.path.expanduser(name)) and hub_unreachable() is not None


def unreachable_message(repo_id: str, filename: str, reason: str, folder: str) -> str:
    """The one-line error for a hub model that cannot be fetched: `reason` why the hub cannot be reached, `folder`
    the local route ('a local model folder holding ...')."""
    then = "unset HF_HUB_OFFLINE to download it" if offline_mode() else \
        f"download it where the hub can be reached ({OFFLINE_HINT})"
    return (f"{repo_id} is not a local folder, the Hugging Face hub cannot be reached ({reason}) and its cache "
            f"does not hold {filename}: use {folder}, or {then}")


def model_name_problem(name: str, folder: str) -> tp.Optional[str]:
    """Why a model named `name` cannot be loaded here, found without loading anything (the command line asks before
    importing torch): no such local path, or a hub id while the hub cannot be reached and its cache holds none of
    the repo's files. None when it may load (the checkpoint package then finds the rest)."""
    problem = missing_path(name)
    if problem is not None or name in BUNDLED_MODELS or Path(name).expanduser().exists():
        return problem
    reason = hub_unreachable()
    if reason is None:
        return None
    from huggingface_hub import try_to_load_from_cache  # no torch; only once the hub is found unreachable

    try:
        cached = [try_to_load_from_cache(name, file) for file in HUB_MODEL_FILES]
    except Exception:  # noqa: BLE001 - a malformed id: the checkpoint package explains it
        return None
    return None if any(isinstance(path, str) for path in cached) else \
        unreachable_message(name, HUB_MODEL_FILES[0], reason, folder)


@contextlib.contextmanager
def quiet_progress_bars():
    """No transformers progress bar (loading an EnCodec or shards, saving) for the duration; the setting the
    user had comes back after. transformers is imported only when this is entered."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


__all__ = ["BUNDLED_MODELS", "HUB_CHECK_SECONDS", "OFFLINE_HINT", "cache_only", "hub_endpoint", "hub_unreachable",
           "is_path_like", "missing_path", "model_name_problem", "offline_mode", "quiet_progress_bars",
           "unreachable_message"]

