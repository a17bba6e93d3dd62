"""The residual VQ while a codec trains: k-means initialisation, EMA codebooks, dead-code replacement,
the straight-through estimator, and `TrainableEncodec`, the EncodecModel with a training forward.

The buffers keep the released names (`quantizer.vq.layers.{i}._codebook.{inited, cluster_size, embed,
embed_avg}`), so a trained model's state dict is the inference layout. Differences from audiocraft's
`core_vq` (deliberate): dead codes are replaced after the EMA update, with a consistent EMA state; the
k-means initialisation stores embed_avg = centroid * count; no quantizer dropout; an optional quantizer
bypass and an autoencoder warm-up (see `TrainableEncodec`).
Shapes: B batch, C channels, L samples, D latent dimension, K codebooks, T frames, N vectors.
"""
from __future__ import annotations

import dataclasses
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from ...codec.encodec import EncodecModel
from ...codec.rvq import EuclideanCodebook, ResidualVectorQuantizer
from ...config import CodecConfig

# ------------------------------------------------------------------------------------------------
# Residual VQ in training: k-means init, EMA codebooks, dead-code replacement, straight-through
# ------------------------------------------------------------------------------------------------
def _sample_rows(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n rows of x [N, D] drawn without replacement when N >= n, else with replacement -> [n, D]."""
    if x.shape[0] >= n:
        return x[torch.randperm(x.shape[0], generator=generator)[:n]]
    return x[torch.randint(0, x.shape[0], (n,), generator=generator)]


def _nearest(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """x [N, D], means [k, D] -> index [N] of the nearest mean (squared L2)."""
    dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ means.t() + means.pow(2).sum(1)[None]
    return dist.argmin(-1)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on x [N, D] from k random rows -> (means [k, D], counts [k] of the last assignment).
    An empty cluster keeps its previous mean."""
    means = _sample_rows(x, k, generator)
    counts = torch.zeros(k, dtype=x.dtype)
    for _ in range(iters):
        buckets = _nearest(x, means)  # [N]
        counts = torch.bincount(buckets, minlength=k).to(x.dtype)
        new = torch.zeros_like(means).index_add_(0, buckets, x) / counts.clamp_min(1)[:, None]
        means = torch.where(counts[:, None] > 0, new, means)
    return means, counts


@torch.no_grad()
def init_codebook(cb: EuclideanCodebook, x: torch.Tensor, iters: int, generator: torch.Generator) -> None:
    """k-means the vectors x [N, D] into the codebook: embed = centroids, cluster_size = counts,
    embed_avg = centroids * counts (so embed_avg / cluster_size = embed), inited = 1."""
    means, counts = kmeans(x.float(), cb.bins, iters, generator)
    cb.embed.copy_(means)
    cb.cluster_size.copy_(counts)
    cb.embed_avg.copy_(means * counts[:, None])
    cb.inited.fill_(1)


@torch.no_grad()
def init_quantizer(quantizer: ResidualVectorQuantizer, z: torch.Tensor, iters: int, generator: torch.Generator,
                   vectors_per_step: int) -> None:
    """k-means every codebook in turn on a pool of latents z [N, D], each on what the earlier ones leave.
    Counts are rescaled to uses per step (x vectors_per_step / N), the unit of the EMA cluster sizes.
    With a pool of a few times `bins` vectors, this avoids what one small first batch does: codebook 0
    memorising it (N < bins) and leaving zero residuals to the others."""
    residual = z.float()
    for layer in quantizer.vq.layers:
        cb = layer._codebook
        init_codebook(cb, residual, iters, generator)
        scale = vectors_per_step / residual.shape[0]
        cb.cluster_size.mul_(scale)
        cb.embed_avg.mul_(scale)
        residual = residual - cb.decode(cb.encode(residual))


@torch.no_grad()
def ema_update(cb: EuclideanCodebook, x: torch.Tensor, indices: torch.Tensor) -> None:
    """One EMA step with decay d = cb.decay on vectors x [N, D] assigned to codes indices [N]:
    cluster_size <- d cluster_size + (1 - d) counts; embed_avg <- d embed_avg + (1 - d) sums;
    embed <- embed_avg / smoothed sizes, smoothed = (size + eps) / (n + bins eps) * n (Laplace), n = sum sizes."""
    onehot = F.one_hot(indices, cb.bins).to(x.dtype)  # [N, bins]
    d = cb.decay
    cb.cluster_size.mul_(d).add_(onehot.sum(0), alpha=1 - d)
    cb.embed_avg.mul_(d).add_(onehot.t() @ x, alpha=1 - d)
    n = cb.cluster_size.sum()
    smoothed = (cb.cluster_size + cb.epsilon) / (n + cb.bins * cb.epsilon) * n
    cb.embed.copy_(cb.embed_avg / smoothed[:, None])


@torch.no_grad()
def replace_dead_codes(cb: EuclideanCodebook, x: torch.Tensor, threshold: float,
                       generator: torch.Generator) -> int:
    """Re-draw the codes used fewer than `threshold` times over the EMA window of 1 / (1 - decay) steps,
    i.e. with cluster_size < tau = threshold * (1 - decay), from random vectors of x [N, D]. A new code gets
    cluster_size 2 tau and embed_avg = 2 tau vector: unused, it is re-drawn again after ~70 steps. Returns the count.

    (audiocraft compares cluster_size, a per-step count, with threshold directly; at batch 8 x 1 s,
    400 vectors for 2048 codes, that marks nearly every code dead at every step.)"""
    if threshold <= 0:
        return 0
    dead = cb.cluster_size < threshold * (1 - cb.decay)  # [bins]
    n_dead = int(dead.sum())
    if n_dead == 0:
        return 0
    picks = _sample_rows(x, n_dead, generator)
    size = 2 * threshold * (1 - cb.decay)
    cb.embed[dead] = picks
    cb.cluster_size[dead] = size
    cb.embed_avg[dead] = picks * size
    return n_dead


def train_quantize(quantizer: ResidualVectorQuantizer, z: torch.Tensor, generator: torch.Generator,
                   kmeans_iters: int = 50, dead_code_threshold: float = 2.0
                   ) -> tp.Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Residual VQ of z [B, D, T] with codebook training -> (quantized [B, D, T], codes [B, K, T],
    commitment loss, codes replaced).

    Each stage codes what the earlier ones left; its commitment loss is MSE(residual, code.detach()),
    the mean over stages is returned. The output is z + (sum of codes - z).detach(): the decoder's
    gradient reaches the encoder unchanged (straight-through)."""
    B, D, T = z.shape
    residual = z
    total = torch.zeros_like(z)
    codes, losses, replaced = [], [], 0
    for layer in quantizer.vq.layers:
        cb = layer._codebook
        flat = residual.detach().transpose(1, 2).reshape(B * T, D).float()  # [N, D]
        if not bool(cb.inited.item()):
            init_codebook(cb, flat, kmeans_iters, generator)
        indices = cb.encode(flat)  # [N]
        q = cb.decode(indices).view(B, T, D).transpose(1, 2)  # [B, D, T], before this step's update
        losses.append(F.mse_loss(residual, q.detach()))
        ema_update(cb, flat, indices)
        replaced += replace_dead_codes(cb, flat, dead_code_threshold, generator)
        residual = residual - q.detach()
        total = total + q.detach()
        codes.append(indices.view(B, T))
    return z + (total - z).detach(), torch.stack(codes, 1), torch.stack(losses).mean(), replaced


def batch_usage(codes: torch.Tensor, bins: int) -> float:
    """codes [B, K, T] -> mean over codebooks of (distinct codes used) / min(B * T, bins)."""
    B, K, T = codes.shape
    return sum(len(codes[:, k].unique()) for k in range(K)) / (K * min(B * T, bins))


@dataclasses.dataclass
class CodecOutput:
    wav: torch.Tensor      # [B, C, L] reconstruction, cut to the input length
    codes: torch.Tensor    # [B, K, T]
    commit: torch.Tensor   # scalar commitment loss (0 in eval mode)
    replaced: int = 0      # dead codes replaced during this forward


class TrainableEncodec(nn.Module):
    """`EncodecModel(cfg)` with a training forward. `self.model.state_dict()` is the released layout.
    A fresh model has `inited = 0` in every codebook: the first training batch k-means them."""

    def __init__(self, cfg: CodecConfig, kmeans_iters: int = 50, dead_code_threshold: float = 2.0,
                 bypass_p: float = 0.0):
        super().__init__()
        self.model = EncodecModel(cfg)
        self.kmeans_iters, self.dead_code_threshold = kmeans_iters, dead_code_threshold
        # Quantizer bypass (as Mimi trains its RVQ): for a random half of the examples the decoder sees
        # the latent itself, so the encoder keeps a direct reconstruction signal and its latents cannot
        # collapse onto a few codes while the codebooks are still poor. Inference is unchanged.
        self.bypass_p = bypass_p
        for layer in self.model.quantizer.vq.layers:
            layer._codebook.inited.zero_()

    def forward(self, wav: torch.Tensor, generator: tp.Optional[torch.Generator] = None,
                quantize: bool = True) -> CodecOutput:
        """wav [B, C, L] -> CodecOutput. Training mode trains the codebooks (k-means / EMA / dead codes,
        random draws from `generator`); eval mode is the inference encode + decode. quantize=False
        (training warm-up) decodes the latent itself and leaves the codebooks alone (codes are all 0)."""
        L = wav.shape[-1]
        z = self.model.encoder(wav)  # [B, D, T]
        if not quantize:
            codes = torch.zeros(z.shape[0], self.model.quantizer.n_q, z.shape[-1], dtype=torch.long, device=z.device)
            return CodecOutput(self.model.decoder(z)[..., :L], codes, z.new_zeros(()), 0)
        if self.training:
            generator = generator or torch.Generator()
            q, codes, commit, replaced = train_quantize(self.model.quantizer, z, generator,
                                                        self.kmeans_iters, self.dead_code_threshold)
            if self.bypass_p > 0:
                keep = torch.rand(z.shape[0], 1, 1, generator=generator) < self.bypass_p
                q = torch.where(keep.to(z.device), z, q)
        else:
            codes = self.model.quantizer.encode(z)
            q, commit, replaced = self.model.quantizer.decode(codes), z.new_zeros(()), 0
        return CodecOutput(self.model.decoder(q)[..., :L], codes, commit, replaced)
