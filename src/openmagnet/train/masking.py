"""Training masks of MAGNeT (SPEC §4.1): the cosine mask-rate schedule, the mean-mask-rate to
span-count lookup table, and the span masks of the codebook being trained.

All randomness comes from the `torch.Generator` passed in, so a training step is a pure function
of its seed (this is what makes resumed runs equal uninterrupted ones).
"""
from __future__ import annotations

import functools
import math
import typing as tp

import torch


@functools.lru_cache(maxsize=8)
def span_count_lut(seq_len: int, span_len: int) -> tp.Tuple[int, ...]:
    """LUT[m] for m = 0..100: the smallest number of spans u whose expected masked fraction
    1 - C(T - L, u) / C(T, u) reaches m / 100, for T = seq_len frames and spans of L frames
    (u spans start at distinct random frames, may overlap and are cut at the end).

    The expected fraction after u starts is 1 - prod_{j < u} (T - L - j) / (T - j); the table is
    the left insertion point of each m / 100 in that increasing sequence (u = 0 .. T - 1)."""
    if span_len < 1 or seq_len <= span_len:
        raise ValueError(f"span masks need 1 <= span_len < seq_len; got span_len={span_len}, seq_len={seq_len}")
    means = [0.0]
    unmasked = (seq_len - span_len) / seq_len  # probability a given frame stays unmasked after one start
    for u in range(1, seq_len):
        means.append(1.0 - unmasked)
        unmasked *= (seq_len - span_len - u) / (seq_len - u)
    means_t = torch.tensor(means, dtype=torch.float64)
    rates = torch.arange(101, dtype=torch.float64) / 100
    return tuple(int(i) for i in torch.searchsorted(means_t, rates, side="left"))


def cosine_mask_rate(num: int, generator: torch.Generator) -> torch.Tensor:
    """Per-sample mask rates p = cos(pi t / 2), t ~ U(0, 1): shape [num], float64."""
    t = torch.rand(num, generator=generator, dtype=torch.float64)
    return torch.cos(math.pi * t / 2)


def span_mask(rates: torch.Tensor, seq_len: int, span_len: int, generator: torch.Generator) -> torch.Tensor:
    """Boolean masks [B, T] for mask rates [B]: u = LUT[round(100 p)] (at least 1) distinct random
    start frames per row, each masking itself and the next span_len - 1 frames (cut at the end).
    span_len <= 1 masks round(T p) distinct random frames (at least 1) instead."""
    rows = []
    for rate in rates.tolist():
        order = torch.randperm(seq_len, generator=generator)
        mask = torch.zeros(seq_len, dtype=torch.bool)
        if span_len <= 1:
            mask[order[:max(1, round(seq_len * rate))]] = True
        else:
            count = max(1, span_count_lut(seq_len, span_len)[round(100 * rate)])
            starts = order[:count]
            for offset in range(span_len):
                mask[(starts + offset).clamp(max=seq_len - 1)] = True
        rows.append(mask)
    return torch.stack(rows)


def masked_inputs(codes: torch.Tensor, stage: int, mask: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The LM input for training codebook `stage` (SPEC §4.1.5): codebooks below the stage are the
    ground truth, the stage's codebook has its masked frames replaced by `mask_id`, codebooks above
    are all `mask_id`. codes [B, K, T] int64, mask [B, T] bool -> [B, K, T]."""
    inputs = codes.clone()
    inputs[:, stage] = torch.where(mask, torch.full_like(codes[:, stage], mask_id), codes[:, stage])
    inputs[:, stage + 1:] = mask_id
    return inputs
