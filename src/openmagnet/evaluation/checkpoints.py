"""The metrics' released weights files: read with weights_only=True, and loaded by the checkpoint package's one
strict loader (every tensor placed, every parameter filled), whose one-line errors name every missing, unexpected
or mis-shaped tensor."""
from __future__ import annotations

import os
import typing as tp

import torch
from torch import nn

from ..checkpoint import check_state_dict, name_list
from ..checkpoint import load_strict as load_state_strictly

PathLike = tp.Union[str, os.PathLike]
HINT = "; is it the right file?"  # what a metric's weights file that does not fit most likely is: another file


def read_state(path: PathLike, what: str) -> tp.Dict[str, tp.Any]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise ValueError(f"{what}: {path} is not a readable weights file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''}); download it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {path} holds a {type(data).__name__}, not a state dict; is it the right file?")
    return data


def check_state(model: nn.Module, state: tp.Mapping[str, tp.Any], path: PathLike, what: str) -> None:
    """A CheckpointError (a ValueError) '{what}: {path} does not match the model: ...; is it the right file?'
    naming every tensor that does not fit."""
    check_state_dict(model, state, f"{what}: {path}", hint=HINT)


def load_strict(model: nn.Module, path: PathLike, what: str,
                transform: tp.Optional[tp.Callable[[tp.Dict[str, tp.Any]], tp.Dict[str, tp.Any]]] = None) -> None:
    """Load `path` into `model` exactly: `transform` maps the file's dict onto the model's key names."""
    load_state_strictly(model, read_state(path, what), f"{what}: {path}", rename=transform, hint=HINT)


__all__ = ["read_state", "check_state", "load_strict", "name_list"]
