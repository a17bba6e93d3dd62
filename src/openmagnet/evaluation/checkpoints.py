"""Strict loading of the metrics' released weights files (weights_only=True, every tensor placed, every
parameter filled), with one-line errors that name what is missing, unexpected or the wrong shape."""
from __future__ import annotations

import os
import typing as tp

import torch
from torch import nn

PathLike = tp.Union[str, os.PathLike]


def read_state(path: PathLike, what: str) -> tp.Dict[str, tp.Any]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise ValueError(f"{what}: {path} is not a readable weights file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''}); download it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {path} holds a {type(data).__name__}, not a state dict; is it the right file?")
    return data


def name_list(keys: tp.Iterable[str], limit: int = 5) -> str:
    """The first `limit` keys in sorted order, then how many more: 'a, b, c and 12 more'."""
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_state(model: nn.Module, state: tp.Mapping[str, tp.Any], path: PathLike, what: str) -> None:
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        parts = ([f"missing {name_list(missing)}"] if missing else []) + (
            [f"unexpected {name_list(unexpected)}"] if unexpected else [])
        raise ValueError(f"{what}: {path} does not fit the model ({'; '.join(parts)}); is it the right file?")
    wrong = [f"{k} {tuple(state[k].shape)} instead of {tuple(expected[k].shape)}" for k in sorted(expected)
             if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:  # every one of them: a file of another size differs in several, and the list tells which size
        raise ValueError(f"{what}: {path} does not fit the model ({len(wrong)} tensor{'s' if len(wrong) > 1 else ''} "
                         f"of another shape: {', '.join(wrong)}); is it the right file?")


def load_strict(model: nn.Module, path: PathLike, what: str,
                transform: tp.Optional[tp.Callable[[tp.Dict[str, tp.Any]], tp.Dict[str, tp.Any]]] = None) -> None:
    """Load `path` into `model` exactly: `transform` maps the file's dict onto the model's key names."""
    state = read_state(path, what)
    if transform is not None:
        state = transform(state)
    check_state(model, state, path, what)
    model.load_state_dict({k: v for k, v in state.items()}, strict=True)
