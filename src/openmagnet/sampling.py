"""Token selection from a probability distribution: argmax, top-p, top-k, plain multinomial.

Randomness comes only from the `generator` argument (None: torch's global generator, as the
reference). All functions take the last axis as the vocabulary N and keep the other axes.
"""
from __future__ import annotations

import typing as tp

import torch


def multinomial(probs: torch.Tensor, generator: tp.Optional[torch.Generator] = None) -> torch.Tensor:
    """One draw per row: probs [..., N] -> tokens [..., 1]."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, num_samples=1, generator=generator).reshape(*probs.shape[:-1], 1)


def sample_top_p(probs: torch.Tensor, p: float, generator: tp.Optional[torch.Generator] = None) -> torch.Tensor:
    """Nucleus sampling: keep the most likely tokens up to and including the one whose cumulative
    probability crosses p, renormalise, draw. probs [..., N] -> tokens [..., 1]."""
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    sorted_probs = sorted_probs * (cumulative - sorted_probs <= p)
    sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
    return torch.gather(order, -1, multinomial(sorted_probs, generator))


def sample_top_k(probs: torch.Tensor, k: int, generator: tp.Optional[torch.Generator] = None) -> torch.Tensor:
    """Top-k sampling. Like the reference, this truncates and renormalises `probs` IN PLACE, which
    changes the confidence scores MAGNeT computes from them afterwards (SPEC §3.3 step 11)."""
    kth = torch.topk(probs, k, dim=-1).values[..., -1:]
    probs.mul_(probs >= kth)
    probs.div_(probs.sum(dim=-1, keepdim=True))
    return multinomial(probs, generator)


def select_tokens(logits: torch.Tensor, probs: torch.Tensor, use_sampling: bool, top_k: int, top_p: float,
                  generator: tp.Optional[torch.Generator] = None) -> torch.Tensor:
    """MAGNeT's rule: argmax of the (guided, untempered) logits when not sampling; otherwise top-p
    if top_p > 0, else top-k if top_k > 0, else the full distribution. Returns tokens [..., 1]."""
    if not use_sampling:
        return torch.argmax(logits, dim=-1, keepdim=True)
    if top_p > 0.0:
        return sample_top_p(probs, top_p, generator)
    if top_k > 0:
        return sample_top_k(probs, top_k, generator)
    return multinomial(probs, generator)
