"""The one attention call site of the MAGNeT transformer, and the stage masks.

MAGNeT restricts the self-attention of codebooks 1..3 to a window |i - j| <= subcodes_context
frames (SPEC §2.4, pitfall 1). audiocraft encodes that as an additive bias for xformers; its torch
backend silently replaces the bias by a causal mask. Here the window is always an explicit additive
mask given to `scaled_dot_product_attention`, and `is_causal` is always False.
"""
from __future__ import annotations

import typing as tp

import torch
import torch.nn.functional as F


def restricted_attn_mask(seq_len: int, context: int, device: tp.Optional[torch.device] = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask [T, T]: 0 where |query - key| <= context, -inf elsewhere."""
    pos = torch.arange(seq_len, device=device)
    valid = (pos[:, None] - pos[None, :]).abs() <= context
    zero = torch.zeros([], device=device, dtype=dtype)
    return torch.where(valid, zero, torch.full([], float("-inf"), device=device, dtype=dtype))


def stage_attn_mask(stage: int, seq_len: int, context: int, device: tp.Optional[torch.device] = None,
                    dtype: torch.dtype = torch.float32) -> tp.Optional[torch.Tensor]:
    """Self-attention mask for a decoding stage: None (full attention) for codebook 0 or when the
    context is unrestricted (context < 0), else the restricted window [T, T]."""
    if stage <= 0 or context < 0:
        return None
    return restricted_attn_mask(seq_len, context, device=device, dtype=dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v.

    q [B, H, T, d], k / v [B, H, S, d], mask additive and broadcastable to [B, H, T, S].
    Returns [B, H, T, d].
    """
    if mask is not None and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """The same maths written out, in float64: the yardstick the kernel is tested against."""
    scores = (q.double() @ k.double().transpose(-1, -2)) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores + mask.double()
    return (scores.softmax(dim=-1) @ v.double()).to(q.dtype)
