"""audiocraft's EnCodec compression model: SEANet encoder, residual VQ, SEANet decoder (SPEC §6).

Mirrors audiocraft `models/encodec.py` `EncodecModel` for the released MAGNeT codecs (non-causal,
no renormalisation), inference only. `state_dict()` keys and shapes equal audiocraft's, so the
`best_state` of a `compression_state_dict.bin` loads with `strict=True`.

Shapes: B batch, C audio channels, L audio samples, D latent dimension, K codebooks, T frames.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import CodecConfig
from .rvq import ResidualVectorQuantizer
from .seanet import SEANetDecoder, SEANetEncoder


class EncodecModel(nn.Module):
    """Waveform <-> discrete codes. L samples encode to T = ceil(L / hop) frames; T frames decode
    to exactly T * hop samples (no trimming: callers cut to the length they want)."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = SEANetEncoder(cfg)
        self.decoder = SEANetDecoder(cfg)
        self.quantizer = ResidualVectorQuantizer(cfg.dimension, cfg.n_q, cfg.bins)

    # -- properties the LM and the generation code rely on ---------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    @property
    def channels(self) -> int:
        return self.cfg.channels

    @property
    def num_codebooks(self) -> int:
        return self.cfg.n_q

    @property
    def cardinality(self) -> int:
        return self.cfg.bins

    # -- coding ----------------------------------------------------------------------------------
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, C, L] float -> codes [B, K, ceil(L / hop)] int64."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"wav must be [B, C={self.channels}, L]; got shape {tuple(wav.shape)}")
        return self.quantizer.encode(self.encoder(wav))

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] integer -> latent [B, D, T]: the sum of the K codebook vectors."""
        return self.quantizer.decode(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] integer -> wav [B, C, T * hop] float."""
        return self.decoder(self.decode_latent(codes))
