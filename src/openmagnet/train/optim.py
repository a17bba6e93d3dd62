"""Optimiser pieces of the MAGNeT solver (SPEC §4.1-4.2): AdamW, the learning-rate schedules of
the released setups (cosine with linear warm-up; inverse square root for the sound preset) and
the unbiased exponential moving average of the weights whose best state is exported.
"""
from __future__ import annotations

import math
import typing as tp

import torch
import torch.nn as nn

SCHEDULES = ("cosine", "inverse_sqrt", "constant")


def lr_factor(step: int, schedule: str, warmup: int, total: int, lr_min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based).

    cosine: linear warm-up from 0 over `warmup` steps, then half a cosine from 1 down to
    lr_min_ratio at `total`. inverse_sqrt: linear warm-up, then sqrt(warmup / step).
    constant: linear warm-up, then 1."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    if warmup > 0 and step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / max(step, 1))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_min_ratio + 0.5 * (1.0 - lr_min_ratio) * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup: int, total: int,
                   lr_min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, schedule, warmup, total, lr_min_ratio)  # validates the name early
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, schedule, warmup, total, lr_min_ratio))


def make_optimizer(params: tp.Iterable[nn.Parameter], lr: float, betas: tp.Tuple[float, float],
                   weight_decay: float, eps: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (the released runs: lr 1e-4 music / 5e-4 sound,
    betas (0.9, 0.95), weight decay 0.1, eps 1e-8)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: nothing to optimise")
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)


class EMA:
    """Unbiased exponential moving average of a module's floating-point state.

    Each `update` folds the current weights in with weight w = 1 / count, where
    count <- count * decay + 1: the first update copies the weights, later ones tend to
    w = 1 - decay. The solver updates it every `ema_every` optimiser steps (SPEC §4.1.8).

    The averages are float32 copies on the device of the weights they follow (the GPU in training:
    no round trip through host memory), updated in place by one fused lerp."""

    def __init__(self, state: tp.Mapping[str, torch.Tensor], decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1); got {decay}")
        self.decay = decay
        self.count = 0.0
        self.state = {k: v.detach().to(torch.float32, copy=True) for k, v in state.items()
                      if v.is_floating_point()}

    @torch.no_grad()
    def update(self, state: tp.Mapping[str, torch.Tensor]) -> None:
        """Fold in the current weights (a state dict with every averaged key, e.g. `module.state_dict()`)."""
        self.count = self.count * self.decay + 1.0
        w = 1.0 / self.count
        averages = list(self.state.values())
        current = [state[k].detach().to(v.device, torch.float32) for k, v in self.state.items()]
        torch._foreach_lerp_(averages, current, w)  # w = 1 gives the new weights exactly

    def state_dict(self) -> dict:
        return {"decay": self.decay, "count": self.count, "state": self.state}

    def load_state_dict(self, saved: dict) -> None:
        missing = set(self.state) - set(saved["state"])
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} tensors (e.g. {sorted(missing)[0]}): "
                             "the checkpoint is from another model")
        self.decay, self.count = float(saved["decay"]), float(saved["count"])
        for k in self.state:
            self.state[k].copy_(saved["state"][k])

    def weights(self, state: tp.Mapping[str, torch.Tensor]) -> tp.Dict[str, torch.Tensor]:
        """`state` (a full state dict) with its floating-point tensors replaced by the averages."""
        return {k: self.state.get(k, v) for k, v in state.items()}
