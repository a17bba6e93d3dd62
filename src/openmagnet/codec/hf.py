"""The Hugging Face EnCodec behind a `{'pretrained': name}` compression checkpoint (SPEC §6.3, §7.2).

Mirrors audiocraft `models/encodec.py` `HFEncodecCompressionModel`: wraps
`transformers.EncodecModel` behind the same interface as `openmagnet.codec.EncodecModel`
(encode / decode / decode_latent and the sample_rate, frame_rate, channels, num_codebooks,
cardinality properties). `transformers` is imported only when a model is loaded, never at import.

Shapes: B batch, C audio channels, L audio samples, D latent dimension, K codebooks, T frames.
"""
from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn


def _codebooks_per_bandwidth(bandwidths: tp.Sequence[float], frame_rate: float,
                             cardinality: int) -> tp.List[int]:
    """K = bandwidth[kbps] * 1000 / (frame_rate * log2(cardinality)), which must be an integer."""
    counts = []
    for bw in bandwidths:
        k = bw * 1000 / (frame_rate * math.log2(cardinality))
        if abs(k - round(k)) > 1e-3:
            raise ValueError(f"target bandwidth {bw} kbps does not give a whole number of codebooks "
                             f"at {frame_rate} Hz x {cardinality} bins (got {k:.4f})")
        counts.append(int(round(k)))
    return counts


class HFEncodec(nn.Module):
    """A `transformers.EncodecModel` in float32 eval mode, used at its highest target bandwidth
    (the one audiocraft picks: for facebook/encodec_32khz 2.2 kbps, i.e. 4 codebooks)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        possible = _codebooks_per_bandwidth(cfg.target_bandwidths, self.frame_rate, self.cardinality)
        self._num_codebooks = max(possible)
        self._bandwidth = cfg.target_bandwidths[possible.index(self._num_codebooks)]

    @classmethod
    def from_pretrained(cls, name: str, device: tp.Union[str, torch.device, None] = None,
                        local_files_only: bool = False) -> "HFEncodec":
        """Load `name` (hub id or local directory) with transformers, honouring HF_HUB_CACHE and
        HF_HUB_OFFLINE as set by the caller; local_files_only: from the cache alone (checkpoint/ passes it
        when the hub cannot be reached)."""
        import transformers  # deferred: `import openmagnet` must not import transformers

        model = transformers.EncodecModel.from_pretrained(name, local_files_only=local_files_only).float().eval()
        return cls(model).to(device or "cpu").eval()

    # -- properties ------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        return math.prod(self.model.config.upsampling_ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def channels(self) -> int:
        return int(self.model.config.audio_channels)

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    @property
    def cardinality(self) -> int:
        return int(self.model.config.codebook_size)

    # -- coding ----------------------------------------------------------------------------------
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, C, L] float -> codes [B, K, ceil(L / hop)] int64."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"wav must be [B, C={self.channels}, L]; got shape {tuple(wav.shape)}")
        out = self.model.encode(wav, None, self._bandwidth, return_dict=True)
        if len(out.audio_codes) != 1:
            raise ValueError("chunked HF EnCodec models (config.chunk_length_s set) are not supported")
        return out.audio_codes[0]  # [1 chunk, B, K, T] -> [B, K, T]

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] integer -> latent [B, D, T]."""
        return self.model.quantizer.decode(codes.long().transpose(0, 1))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] integer -> wav [B, C, T * hop] float."""
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise ValueError(f"codes must be [B, K={self.num_codebooks}, T]; got shape {tuple(codes.shape)}")
        return self.model.decode(codes.long()[None], [None], return_dict=True).audio_values
