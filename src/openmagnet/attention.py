"""The one attention call site of the MAGNeT transformer, and the stage masks.

MAGNeT restricts the self-attention of codebooks 1..3 to a window |i - j| <= subcodes_context
frames (SPEC §2.4, pitfall 1). audiocraft encodes that as an additive bias for xformers; its torch
backend silently replaces the bias by a causal mask. Here the window is always explicit: an
additive mask given to `scaled_dot_product_attention` (`is_causal` is always False), or, for long
sequences, `banded_attention`, which computes the same thing over the window only.
"""
from __future__ import annotations

import functools
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


BAND_BLOCK = 16  # query block of banded_attention; measured best at 500 and 1500 frames (2 Zen 4 cores)


def self_attention_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          context: tp.Optional[int], banded: bool = False) -> torch.Tensor:
    """Self-attention of a decoding stage: full when context is None (codebook 0) or negative,
    else restricted to |query - key| <= context: through the dense [T, T] mask (bit-identical to
    the reference), or, with `banded` and a sequence long enough to pay, `banded_attention`."""
    if context is None or context < 0:
        return attention(q, k, v, None)
    seq_len = q.shape[2]
    if not banded or seq_len <= 4 * BAND_BLOCK:
        return attention(q, k, v, _cached_restricted_mask(seq_len, context, q.device, q.dtype))
    return banded_attention(q, k, v, context, BAND_BLOCK)


@functools.lru_cache(maxsize=16)
def _cached_restricted_mask(seq_len: int, context: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False):  # cached: must stay a plain tensor, usable in training too
        return restricted_attn_mask(seq_len, context, device=device, dtype=dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v.

    q [B, H, T, d], k / v [B, H, S, d], mask additive and broadcastable to [B, H, T, S].
    Returns [B, H, T, d].
    """
    if mask is not None and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    q, k, v = _sdpa_inputs(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)


def _sdpa_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 device_type: tp.Optional[str] = None) -> tp.Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as SDPA should get them on `device_type` (default: q's): contiguous on MPS, whose SDPA
    has returned silently wrong results for strided inputs (head_dim 64) in several torch releases;
    as they are elsewhere (the CPU and CUDA kernels take strides, and exact mode stays bit-identical)."""
    if (device_type or q.device.type) != "mps":
        return q, k, v
    return q.contiguous(), k.contiguous(), v.contiguous()


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: int,
                     block: int = 16) -> torch.Tensor:
    """Self-attention restricted to |query - key| <= context, without the [T, T] scores.

    The same maths as `attention(q, k, v, restricted_attn_mask(T, context))`: queries are cut into
    blocks of `block` frames and each block attends only to its own frames plus `context` frames
    either side (block + 2 * context keys instead of T), through the same SDPA kernel. Keys out of
    the window get -inf exactly as in the dense mask; only the order of the softmax sums differs,
    so results agree with the dense form to float rounding (about 1e-7 in float32).

    q, k, v [B, H, T, d] -> [B, H, T, d].
    """
    B, H, T, d = q.shape
    blocks = -(-T // block)
    padded = blocks * block
    width = block + 2 * context
    q = F.pad(q, (0, 0, 0, padded - T)).reshape(B * H, blocks, block, d)
    # keys of block b: padded positions b * block .. b * block + width - 1, i.e. frames b*block - context ...
    k = F.pad(k, (0, 0, context, padded - T + context)).unfold(2, width, block).transpose(-1, -2)
    v = F.pad(v, (0, 0, context, padded - T + context)).unfold(2, width, block).transpose(-1, -2)
    k = k.reshape(B * H, blocks, width, d)
    v = v.reshape(B * H, blocks, width, d)
    q, k, v = _sdpa_inputs(q, k, v)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=band_mask(T, context, block, q.device, q.dtype),
                                         dropout_p=0.0, is_causal=False)
    return out.reshape(B, H, padded, d)[:, :, :T]


@functools.lru_cache(maxsize=16)
def band_mask(seq_len: int, context: int, block: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask [blocks, block, block + 2 * context] of `banded_attention`. A key is visible when
    it is a real frame within the window; the padding queries past the end see their window's
    padding keys too, so that no row is empty (their outputs are dropped)."""
    with torch.inference_mode(False):  # cached: must stay a plain tensor, usable in training too
        return _band_mask(seq_len, context, block, device, dtype)


def _band_mask(seq_len: int, context: int, block: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    blocks = -(-seq_len // block)
    query = torch.arange(blocks * block, device=device).view(blocks, block, 1)
    key = (torch.arange(blocks, device=device).view(blocks, 1, 1) * block - context
           + torch.arange(block + 2 * context, device=device).view(1, 1, -1))
    valid = ((query - key).abs() <= context) & (key >= 0) & ((key < seq_len) | (query >= seq_len))
    zero = torch.zeros([], device=device, dtype=dtype)
    return torch.where(valid, zero, torch.full([], float("-inf"), device=device, dtype=dtype))


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """The same maths written out, in float64: the yardstick the kernel is tested against."""
    scores = (q.double() @ k.double().transpose(-1, -2)) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores + mask.double()
    return (scores.softmax(dim=-1) @ v.double()).to(q.dtype)
