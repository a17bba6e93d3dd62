"""Judging a codec: on random segments of a manifest, mel distance, SI-SDR and codebook usage (the
EnCodec paper's objective metrics, Défossez et al. 2022 §4.2; audiocraft `solvers/compression.py`),
and three numbers that hear pitch, which a mel distance cannot:

- chroma correlation: Pearson correlation of the pitch-class energy (12 x frames) of the reconstruction
  and the input (1: the same notes; about 0: unrelated);
- frame-rate energy: the share of the reconstruction's energy within 2 Hz of multiples of the codec's
  frame rate (a codec that buzzes at its frame rate puts most of its energy there; music about 5 %);
- pure tones: sines at a few pitches through the codec, the reconstructed peak's distance in cents.

Next to them, the same numbers for two reference signals give context: a 4 kHz low-pass and 8-bit
mu-law of the input. Shapes: B batch, C channels, L samples, N frames.
"""
from __future__ import annotations

import math
import typing as tp
from pathlib import Path

import torch

from ...checkpoint import resolve_codec
from ...data.dataset import SegmentDataset, make_loader
from ...data.manifest import read_manifest
from .losses import MultiScaleMelLoss, lowpass, mu_law, si_sdr


@torch.no_grad()
def evaluate_codec(codec: tp.Any, manifest_dir: tp.Union[str, Path], n_clips: int = 16, seconds: float = 5.0,
                   seed: int = 1234, batch_size: int = 4) -> dict:
    """Mel distance (L1 on log10 mels, lower is better), SI-SDR (dB) and codebook usage of `codec`
    (an EncodecModel, or a path / hub id for `checkpoint.resolve_codec`) on n_clips random segments of
    a manifest, with the same numbers for two reference signals: a 4 kHz low-pass (`lowpass4k_*`) and
    8-bit mu-law (`mulaw8_*`). Usage per codebook k: `used_k` (fraction of codes seen), `perplexity_k`."""
    if isinstance(codec, (str, Path)):
        codec, _ = resolve_codec(codec)
    if n_clips < 1 or seconds <= 0:
        raise ValueError(f"n_clips must be >= 1 and seconds > 0; got {n_clips}, {seconds}")
    sr = int(codec.sample_rate)
    dataset = SegmentDataset(read_manifest(manifest_dir), kind="music", segment_duration=seconds, sample_rate=sr,
                             channels=codec.channels, seed=seed)
    mel = MultiScaleMelLoss(sr)
    device = next(codec.parameters()).device
    sums: tp.Dict[str, float] = {}
    counts = torch.zeros(codec.num_codebooks, codec.cardinality, dtype=torch.float64)
    seen = 0
    frame_rate = float(codec.frame_rate)
    for batch in make_loader(dataset, min(batch_size, n_clips), 0):
        wav = batch["wav"][: n_clips - seen]  # [B, C, L]
        codes = codec.encode(wav.to(device))  # [B, K, T]
        rec = codec.decode(codes)[..., : wav.shape[-1]].cpu()
        for k in range(codes.shape[1]):
            counts[k] += torch.bincount(codes[:, k].reshape(-1).cpu(), minlength=codec.cardinality).double()
        for name, est in (("", rec), ("lowpass4k_", lowpass(wav, sr, 4000.0)), ("mulaw8_", mu_law(wav))):
            sums[name + "mel_distance"] = sums.get(name + "mel_distance", 0.0) + float(mel.distance(est, wav).sum())
            sums[name + "si_sdr"] = sums.get(name + "si_sdr", 0.0) + float(si_sdr(est, wav).mean(-1).sum())
            sums[name + "chroma_corr"] = sums.get(name + "chroma_corr", 0.0) + float(
                chroma_correlation(est, wav, sr).sum())
        for name, sig in (("", rec), ("input_", wav)):
            sums[name + "framerate_energy"] = sums.get(name + "framerate_energy", 0.0) + float(
                frame_rate_energy(sig, sr, frame_rate).mean(-1).sum())
        seen += wav.shape[0]
        if seen >= n_clips:
            break
    row = {k: v / seen for k, v in sums.items()}
    row.update(codebook_usage(counts))
    row.update(tone_probes(codec))
    row["clips"] = seen
    return row


# ------------------------------------------------------------------------------------------------
# Metrics that hear pitch
# ------------------------------------------------------------------------------------------------
TONES = (110.0, 220.0, 440.0, 880.0, 1760.0, 3520.0)  # A2 .. A7


def chroma(wav: torch.Tensor, sample_rate: int, n_fft: tp.Optional[int] = None, f_min: float = 55.0,
           f_max: float = 5000.0) -> torch.Tensor:
    """Pitch-class energy: wav [..., L] -> [..., 12, N] (class 0 = C), the STFT power (bins of at most
    4 Hz, hop a quarter) between f_min and f_max summed by nearest equal-tempered pitch class."""
    n_fft = n_fft or 2 ** math.ceil(math.log2(sample_rate / 4.0))
    shape = wav.shape[:-1]
    x = wav.reshape(-1, wav.shape[-1]).float()
    spec = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft, device=x.device), center=True,
                      pad_mode="constant", return_complex=True).abs().pow(2)  # [B', F, N]
    freqs = torch.fft.rfftfreq(n_fft, 1 / sample_rate).to(x.device)  # [F]
    keep = (freqs >= f_min) & (freqs <= f_max)
    classes = (torch.round(12 * torch.log2(freqs[keep] / 440.0)).long() + 9) % 12  # A = 9
    onehot = torch.nn.functional.one_hot(classes, 12).to(spec.dtype)  # [F', 12]
    out = torch.einsum("bfn,fc->bcn", spec[:, keep], onehot)  # [B', 12, N]
    return out.reshape(*shape, 12, out.shape[-1])


def chroma_correlation(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Pearson correlation of the chroma of estimate and reference [B, C, L] (channels summed) -> [B].
    Each frame's chroma is first divided by its maximum, so that loudness does not count, only pitch."""
    def normalised(wav: torch.Tensor) -> torch.Tensor:
        c = chroma(wav, sample_rate).sum(1)  # [B, 12, N]
        return (c / c.amax(dim=1, keepdim=True).clamp_min(1e-12)).flatten(1)

    x, y = normalised(estimate), normalised(reference)
    x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(1e-12)


def frame_rate_energy(wav: torch.Tensor, sample_rate: int, frame_rate: float, tolerance: float = 2.0) -> torch.Tensor:
    """The share of wav's energy [..., L] -> [...] at frequencies within `tolerance` Hz of a multiple of
    the frame rate (DC excluded)."""
    power = torch.fft.rfft(wav.float(), dim=-1).abs().pow(2)  # [..., F]
    freqs = torch.fft.rfftfreq(wav.shape[-1], 1 / sample_rate).to(wav.device)
    multiple = torch.round(freqs / frame_rate)
    near = ((freqs - multiple * frame_rate).abs() <= tolerance) & (multiple >= 1)
    total = power[..., freqs > tolerance].sum(-1)
    return power[..., near].sum(-1) / total.clamp_min(1e-20)


def peak_frequency(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """The frequency of the strongest spectral peak of wav [..., L] -> [...] in Hz (Hann window, quadratic
    interpolation of the log magnitude around the peak bin)."""
    L = wav.shape[-1]
    spec = torch.fft.rfft(wav.double() * torch.hann_window(L, dtype=torch.float64, device=wav.device), dim=-1)
    mag = spec.abs().clamp_min(1e-30).log()
    k = mag[..., 1:-1].argmax(-1, keepdim=True) + 1
    a, b, c = mag.gather(-1, k - 1), mag.gather(-1, k), mag.gather(-1, k + 1)
    offset = 0.5 * (a - c) / (a - 2 * b + c).where((a - 2 * b + c) != 0, torch.ones_like(b))
    return ((k + offset) * sample_rate / L).squeeze(-1)


@torch.no_grad()
def tone_probes(codec: tp.Any, freqs: tp.Sequence[float] = TONES, seconds: float = 2.0,
                amplitude: float = 0.3) -> dict:
    """Sines at `freqs` through the codec: `tone_<f>_cents`, the distance of the reconstruction's
    strongest peak from f in cents (the middle second, away from the edges), and `tone_max_cents`."""
    sr = int(codec.sample_rate)
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    wav = torch.stack([amplitude * torch.sin(2 * math.pi * f * t) for f in freqs]).float()  # [B, L]
    wav = wav[:, None].expand(-1, codec.channels, -1)  # [B, C, L]
    device = next(codec.parameters()).device
    rec = codec.decode(codec.encode(wav.to(device)))[..., : wav.shape[-1]].float().mean(1).cpu()  # [B, L]
    middle = rec[:, int(0.5 * sr): int(0.5 * sr) + sr]
    found = peak_frequency(middle, sr)
    cents = 1200 * torch.log2(found / torch.tensor(freqs, dtype=torch.float64))
    row = {f"tone_{int(f)}_cents": float(c) for f, c in zip(freqs, cents, strict=True)}
    row["tone_max_cents"] = float(cents.abs().max())
    return row


def codebook_usage(counts: torch.Tensor) -> dict:
    """counts [K, bins] code histogram -> {'used_k': fraction of codes used, 'perplexity_k': exp(entropy)}."""
    row = {}
    for k, c in enumerate(counts):
        p = c / c.sum().clamp_min(1)
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        row[f"used_{k}"] = float((c > 0).double().mean())
        row[f"perplexity_{k}"] = float(entropy.exp())
    return row


