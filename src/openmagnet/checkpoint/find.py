"""Finding a model's files: a file path, a folder holding them (either layout), a bundled model name
(`openmagnet/demo`), or a Hugging Face hub repo id (downloaded into the standard Hugging Face cache, only the files
in HUB_FILES). The naming rules that need no torch (what is a path, what is bundled, whether the hub answers) are
locate.py's, which the command line asks before importing torch."""
from __future__ import annotations

import os
import re
import typing as tp
from pathlib import Path

from ..config import show
from ..locate import BUNDLED_MODELS, hub_unreachable, missing_path, unreachable_message
from .layout import (CODEC_FILE, HUB_FILES, LM_FILE, LM_SAFETENSORS_FILE, LOCAL_FOLDER, CODEC_HF_FILE,
                     SAFETENSORS_FORMS, CheckpointError, first_line)

# A hub repo id: `name` or `owner/name`, letters, digits, '-', '_', '.' (huggingface_hub's rule), so that it
# can only ever name a repo, never a path (no '..', no '/' beyond the owner's, no '?', '#', '@' or spaces).
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
PathLike = tp.Union[str, os.PathLike]


def bundled_model_dir(name: str) -> tp.Optional[Path]:
    """The folder of a bundled model when this install has it, else None."""
    folder = Path(__file__).resolve().parent.parent / "assets" / BUNDLED_MODELS[name]
    return folder if (folder / LM_SAFETENSORS_FILE).is_file() else None


def resolve_file(name_or_path: PathLike, filename: str) -> Path:
    """A checkpoint file from a file path, a directory holding `filename` (or its safetensors form),
    a bundled model name (`openmagnet/demo`), or a hub repo id."""
    if not str(name_or_path).strip():
        raise CheckpointError(f"no model named (got {str(name_or_path)!r}): pass a directory holding {LM_FILE} and "
                              f"{CODEC_FILE}, or a hub id such as facebook/magnet-small-10secs")
    if str(name_or_path) in BUNDLED_MODELS:
        folder = bundled_model_dir(str(name_or_path))
        if folder is None:
            raise CheckpointError(f"the bundled model {name_or_path} is not in this copy of openmagnet "
                                  f"(src/openmagnet/assets/{BUNDLED_MODELS[str(name_or_path)]}); rebuild it with "
                                  f"recipes/demo/build.sh, or name another model")
        name_or_path = folder
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (filename, *SAFETENSORS_FORMS.get(filename, ())):
            if (path / candidate).is_file():
                return path / candidate
        raise CheckpointError(f"{path} has no {filename}: a MAGNeT model directory holds {LM_FILE} and {CODEC_FILE} "
                              f"(audiocraft's layout), or config.json, {LM_SAFETENSORS_FILE} and {CODEC_HF_FILE} "
                              f"(MAGNeT.save_pretrained)")
    name = str(name_or_path)
    problem = missing_path(name)  # a path, or a bare word (every MAGNeT repo has an owner): a mistyped folder
    if problem is not None:
        raise CheckpointError(problem)
    return hub_download(name, filename)


def hub_reason(exc: BaseException) -> str:
    """Why a hub access failed, in a few words: the hub's unreachability, else the exception's first line."""
    return hub_unreachable() or f"{type(exc).__name__}: {first_line(exc)}"


def check_hub_id(name: str) -> str:
    """`name` when it can only name a Hugging Face hub repo (`owner/name`); otherwise a CheckpointError."""
    if not isinstance(name, str) or not _HUB_ID.fullmatch(name) or ".." in name or "--" in name \
            or name.endswith((".", "-")):
        raise CheckpointError(
            f"{show(name)} is not a local file or directory, nor a Hugging Face hub id (owner/name: letters, digits, "
            f"'-', '_', '.'; no '..' or '--'): pass a directory holding {LM_FILE} and {CODEC_FILE}, or a hub id "
            f"such as facebook/magnet-small-10secs")
    return name


def hub_file(repo_id: str, filename: str) -> Path:
    """hf_hub_download of one of HUB_FILES from a checked repo id, raising the hub's own exception on failure
    (`hub_download` turns it into a one-line CheckpointError)."""
    from huggingface_hub import hf_hub_download  # imported on first download only

    check_hub_id(repo_id)
    if filename not in HUB_FILES:
        raise CheckpointError(f"openmagnet fetches only {', '.join(HUB_FILES[:-1])} and {HUB_FILES[-1]} from the hub, "
                              f"not {show(filename)}")
    # one quick check first: an unreachable hub makes hf_hub_download retry for a minute; then the cache alone
    path = Path(hf_hub_download(repo_id=repo_id, filename=filename, library_name="openmagnet",
                                local_files_only=hub_unreachable() is not None))
    if path.name != filename:
        raise CheckpointError(f"the hub cache gave {path} for {filename} of {repo_id}: clear that cache entry")
    return path


def hub_download(repo_id: str, filename: str) -> Path:
    """`hub_file`, with every failure (offline, no such repo or file, network, auth) as one CheckpointError that
    says what to do."""
    check_hub_id(repo_id)
    try:
        return hub_file(repo_id, filename)
    except Exception as exc:  # the hub raises many types: offline, missing repo, network, auth
        unreachable = hub_unreachable()
        if unreachable is None:
            raise CheckpointError(f"cannot get {filename} of {repo_id} from the Hugging Face hub "
                                  f"({type(exc).__name__}: {first_line(exc)}): check the id, or use "
                                  f"{LOCAL_FOLDER}") from None
        raise CheckpointError(unreachable_message(repo_id, filename, unreachable, LOCAL_FOLDER)) from None


__all__ = ["bundled_model_dir", "resolve_file", "check_hub_id", "hub_file", "hub_download", "hub_reason"]
