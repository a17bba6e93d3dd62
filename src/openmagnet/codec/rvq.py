"""Residual vector quantizer of audiocraft's EnCodec (SPEC §6.2), inference side.

Mirrors audiocraft `quantization/vq.py` (`ResidualVectorQuantizer`) and `quantization/core_vq.py`
(`ResidualVectorQuantization`, `VectorQuantization`, `EuclideanCodebook`). The class nesting
reproduces the checkpoint keys `vq.layers.{i}._codebook.{inited, cluster_size, embed, embed_avg}`.

Only `embed` is used for encoding and decoding. The other buffers (`inited`, `cluster_size`,
`embed_avg`) and the `decay` / `epsilon` fields are what EMA codebook training updates; they are
kept so checkpoints round-trip and so that training can be added in `EuclideanCodebook` later.

Shapes: B batch, D latent dimension, K codebooks, T frames, N flattened vectors.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class EuclideanCodebook(nn.Module):
    """One codebook of `bins` vectors of size `dim`; nearest neighbour by squared L2 distance."""

    def __init__(self, dim: int, bins: int, decay: float = 0.99, epsilon: float = 1e-5):
        super().__init__()
        self.dim, self.bins = dim, bins
        self.decay, self.epsilon = decay, epsilon  # EMA training settings (unused at inference)
        embed = nn.init.kaiming_uniform_(torch.empty(bins, dim))
        self.register_buffer("inited", torch.ones(1))  # k-means initialisation done (training)
        self.register_buffer("cluster_size", torch.zeros(bins))  # EMA code counts (training)
        self.register_buffer("embed", embed)  # [bins, D], the codebook itself
        self.register_buffer("embed_avg", embed.clone())  # EMA code sums (training)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, D] -> indices [N] of the nearest code.

        ||x||^2 - 2 x.e + ||e||^2, evaluated in audiocraft's order so near-ties resolve alike."""
        dist = (x.pow(2).sum(1, keepdim=True)
                - 2 * x @ self.embed.t()
                + self.embed.pow(2).sum(1)[None])  # [N, bins]
        return dist.argmin(dim=-1)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [...] -> code vectors [..., D]."""
        return F.embedding(indices, self.embed)


class VectorQuantizer(nn.Module):
    """One quantization stage on channel-first latents: [B, D, T] <-> indices [B, T]."""

    def __init__(self, dim: int, bins: int):
        super().__init__()
        self._codebook = EuclideanCodebook(dim, bins)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, D, T] -> [B, T]
        B, D, T = x.shape
        flat = x.transpose(1, 2).reshape(B * T, D)
        return self._codebook.encode(flat).view(B, T)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, D, T]
        return self._codebook.decode(indices).transpose(1, 2)


class ResidualVQ(nn.Module):
    """Stack of quantizers, each coding what the previous ones left (SoundStream Algorithm 1)."""

    def __init__(self, dim: int, bins: int, n_q: int):
        super().__init__()
        self.layers = nn.ModuleList([VectorQuantizer(dim, bins) for _ in range(n_q)])

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, D, T] -> [K, B, T]
        residual = x
        codes = []
        for layer in self.layers:
            indices = layer.encode(residual)
            residual = residual - layer.decode(indices)
            codes.append(indices)
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # [K, B, T] -> [B, D, T]
        out = torch.zeros((), device=codes.device)
        for layer, indices in zip(self.layers, codes, strict=False):
            out = out + layer.decode(indices)
        return out


class ResidualVectorQuantizer(nn.Module):
    """The EnCodec quantizer: `n_q` codebooks of `bins` entries over `dim`-wide latents.
    Public layout is codes [B, K, T] (int64)."""

    def __init__(self, dim: int, n_q: int, bins: int):
        super().__init__()
        self.dim, self.n_q, self.bins = dim, n_q, bins
        self.vq = ResidualVQ(dim, bins, n_q)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, D, T] -> [B, K, T]
        return self.vq.encode(x).transpose(0, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # [B, K, T] -> [B, D, T]
        if codes.dim() != 3 or codes.shape[1] != self.n_q:
            raise ValueError(f"codes must be [B, K={self.n_q}, T]; got shape {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor; got dtype {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.bins):
            raise ValueError(f"codes must lie in [0, {self.bins}); got values in "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        return self.vq.decode(codes.long().transpose(0, 1))
