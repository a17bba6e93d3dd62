"""MAGNeT's training objective (SPEC §4.1): the forward that DDP / FSDP wrap (text states -> logits
of one codebook) and the cross-entropy on the span-masked frames of that codebook.

Shapes: B batch, K codebooks, T frames, S text tokens, N vocabulary (card).
"""
from __future__ import annotations

import contextlib
import typing as tp

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import LMConfig
from .masking import cosine_mask_rate, masked_inputs, span_mask


class TrainingForward(nn.Module):
    """What DDP / FSDP wrap: text states -> projected condition -> logits of one codebook."""

    def __init__(self, lm: nn.Module, touch_all_heads: bool = False):
        super().__init__()
        self.lm = lm
        # FSDP needs every parameter in every rank's graph (ranks train different codebooks): the
        # other heads then enter the loss with weight 0 and get exact zero gradients.
        self.touch_all_heads = touch_all_heads

    def forward(self, codes: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor,
                stage: int) -> torch.Tensor:
        """codes [B, K, T] (with mask tokens), text_states [B, S, d_text], text_mask [B, S]
        -> logits [B, T, N] of codebook `stage`."""
        lm = self.lm
        proj = lm.condition_provider.output_proj
        cond = proj(text_states.to(proj.weight.dtype)) * text_mask.to(proj.weight.dtype).unsqueeze(-1)
        logits = lm.stage_logits(codes, cond, stage)
        if self.touch_all_heads:
            logits = logits + 0.0 * sum(head.weight.sum() for k, head in enumerate(lm.linears) if k != stage)
        return logits


def autocast(precision: str, device: torch.device) -> tp.ContextManager:
    """The autocast context of a run's precision (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def masked_loss(model: nn.Module, codes: torch.Tensor, states: torch.Tensor, mask: torch.Tensor, stage: int,
                generator: torch.Generator, lm_cfg: LMConfig,
                precision: str = "fp32") -> tp.Tuple[torch.Tensor, int]:
    """Cross-entropy on the masked frames of codebook `stage` (mean over them), and their count.

    codes [B, K, T] ground truth; states [B, S, d_text] and mask [B, S] the text; `model` a
    TrainingForward (or its DDP / FSDP wrapper). One cosine mask rate per item, span masks of
    `lm_cfg.span_len` frames drawn from `generator`."""
    B = codes.shape[0]
    rates = cosine_mask_rate(B, generator)
    masked = span_mask(rates, lm_cfg.seq_len, lm_cfg.span_len, generator).to(codes.device)  # [B, T]
    inputs = masked_inputs(codes, stage, masked, lm_cfg.mask_id)
    with autocast(precision, codes.device):
        logits = model(inputs, states, mask, stage)  # [B, T, N]
    target = codes[:, stage]
    return F.cross_entropy(logits.float()[masked], target[masked]), int(masked.sum())
