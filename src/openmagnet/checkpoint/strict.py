"""The one strict loader: every tensor of a state dict lands in a parameter or buffer, every one of those comes from
the state dict, with its shape; otherwise one error names every missing, unexpected, mis-shaped or mistyped tensor.
Used for the models (build.py), for what an export writes (write.py) and for the metrics' weights (evaluation),
whose files name their tensors otherwise: `rename` maps a file's dict onto the module's key names."""
from __future__ import annotations

import typing as tp

import torch
import torch.nn as nn

from ..config import show
from .layout import CheckpointError

State = tp.Mapping[str, tp.Any]
Rename = tp.Callable[[tp.Dict[str, tp.Any]], tp.Dict[str, tp.Any]]


def name_list(keys: tp.Iterable[tp.Any], limit: int = 40) -> str:
    """Sorted keys for a message, each cut short, at most `limit` of them: 'a, b, c and 12 more'."""
    names = sorted(k if isinstance(k, str) and len(k) <= 200 else show(k) for k in keys)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def state_problems(module: nn.Module, state: State) -> tp.List[str]:
    """Every way `state` fails to be exactly `module`'s state dict, one phrase each (empty: it fits)."""
    expected = module.state_dict()
    problems = []
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    if missing:
        problems.append("missing: " + name_list(missing))
    if unexpected:
        problems.append("unexpected: " + name_list(unexpected))
    for k in sorted(set(expected) & set(state)):
        v, want = state[k], expected[k]
        if not isinstance(v, torch.Tensor):
            problems.append(f"{k} is a {type(v).__name__}, not a tensor")
        elif tuple(v.shape) != tuple(want.shape):
            problems.append(f"{k} has shape {list(v.shape)}, expected {list(want.shape)}")
        elif v.is_meta:
            problems.append(f"{k} holds no data (a meta tensor)")
        elif v.is_floating_point() != want.is_floating_point() or v.is_complex() or v.is_quantized or \
                v.layout != torch.strided:
            problems.append(f"{k} is {v.dtype}{'' if v.layout == torch.strided else f' ({v.layout})'}, "
                            f"expected {want.dtype}")
    return problems


def check_state_dict(module: nn.Module, state: State, source: str, hint: str = "") -> None:
    """Raise CheckpointError naming every missing, unexpected, mis-shaped or mistyped tensor:
    '{source} does not match the model: missing: ...; unexpected: ...; k has shape [..], expected [..]{hint}'."""
    problems = state_problems(module, state)
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems) + hint)


def load_strict(module: nn.Module, state: State, source: str, device: tp.Optional[torch.device] = None,
                dtype: tp.Union[None, torch.dtype, tp.Callable[[str], torch.dtype]] = None,
                rename: tp.Optional[Rename] = None, hint: str = "") -> nn.Module:
    """Load `state` (after `rename`, which maps a file's dict onto the module's key names) into `module`, strictly
    (check_state_dict). Into a module built on the meta device (MagnetLM.empty, the codec), each tensor is assigned,
    converted once to `device` and, if floating, to `dtype` (one dtype, or a function of the key), so the converted
    copy is what the module keeps; tensors holding NaN or inf (bit rot in a download) are refused. Into a module
    that holds its tensors already, they are copied in (cast to the module's own dtypes), as
    nn.Module.load_state_dict(strict=True) does."""
    if rename is not None:
        state = rename(dict(state))
    check_state_dict(module, state, source, hint)
    if not any(t.is_meta for t in module.state_dict().values()):
        module.load_state_dict(dict(state), strict=True)
        return module
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{source}: {name_list(broken, 5)} hold NaN or inf values: the file is corrupt; "
                              f"delete it and download it again")
    converted = {}
    for k, v in state.items():
        wanted = dtype(k) if callable(dtype) else dtype
        target = wanted if (wanted is not None and v.is_floating_point()) else v.dtype
        converted[k] = v.to(device=device, dtype=target)
    module.load_state_dict(converted, strict=True, assign=True)
    for sub in module.modules():  # assigned LSTM weights are separate tensors: pack them for cuDNN once,
        if isinstance(sub, nn.RNNBase):  # not on every call (a no-op off CUDA)
            sub.flatten_parameters()
    return module


__all__ = ["name_list", "state_problems", "check_state_dict", "load_strict"]
