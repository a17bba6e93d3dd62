"""Losses and metrics for training and judging EnCodec codecs (used by `train/codec/trainer.py` only).

Mirrors audiocraft `losses/specloss.py` (`MultiScaleMelSpectrogramLoss`), `adversarial/discriminators/msstftd.py`
(`MultiScaleSTFTDiscriminator`), `adversarial/losses.py` (hinge and feature-matching losses) and
`losses/sisnr.py`, written from their papers rather than their code:
- the mel filterbank is our own (HTK mel scale, triangles of peak 1 as torchaudio's default), so no librosa /
  torchaudio; a mel bin is then a sum of STFT magnitudes, on their scale (area-normalised filters divide by
  the bandwidth in Hz and made linear-mel terms thousands of times weaker than the log-mel term);
- the multi-resolution STFT loss (linear and log magnitudes, up to 4 Hz bins) carries pitch and phase, which
  mel bands a few semitones wide cannot hear;
- the discriminator reads the complex STFT (real and imaginary parts as two channels) with 2-D convolutions
  strided along frequency, as in EnCodec (Défossez et al. 2022, §3.4).

Shapes: B batch, C audio channels, L samples, F frequency bins, M mel bins, N frames.
"""
from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

MEL_SCALES = tuple(range(5, 12))  # STFT sizes 2^5 .. 2^11, hop a quarter of the size
LOG_FLOOR = 1e-5  # log terms floor magnitudes at this fraction of the reference's peak (-100 dB)


# ------------------------------------------------------------------------------------------------
# Mel spectrograms
# ------------------------------------------------------------------------------------------------
def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: tp.Optional[float] = None) -> torch.Tensor:
    """Triangular filters -> [M, n_fft // 2 + 1], each rising to 1 at its centre frequency (no area
    normalisation: torchaudio's `norm=None`). At small n_fft some filters fall between FFT bins and are
    all zero."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # [F]
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))),
                                     n_mels + 2, dtype=torch.float64))  # [M + 2]
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [M, 1] each
    rising = (freqs[None] - lo) / (mid - lo)
    falling = (hi - freqs[None]) / (hi - mid)
    bank = torch.clamp(torch.minimum(rising, falling), min=0.0)  # [M, F]
    return bank.float()


class MelSpectrogram(nn.Module):
    """Magnitude mel spectrogram at one STFT size: wav [B, C, L] -> [B * C, M, N], N = L // hop + 1."""

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int = 64):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("bank", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.reshape(-1, wav.shape[-1])  # [B * C, L]
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=True, pad_mode="constant",
                          return_complex=True).abs()  # [B * C, F, N]
        return self.bank @ spec  # [B * C, M, N]


class MultiScaleMelLoss(nn.Module):
    """Mean over STFT sizes 2^5..2^11 of L1(mel) + MSE(log10 mel): the reconstruction loss of EnCodec §3.4."""

    def __init__(self, sample_rate: int, n_mels: int = 64, scales: tp.Sequence[int] = MEL_SCALES):
        super().__init__()
        self.mels = nn.ModuleList([MelSpectrogram(sample_rate, 2 ** s, n_mels) for s in scales])

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """estimate, reference [B, C, L] -> scalar."""
        total = estimate.new_zeros(())
        for mel in self.mels:
            x, y = mel(estimate), mel(reference)
            floor = _floor(y)
            total = total + F.l1_loss(x, y) + F.mse_loss(_log(x, floor), _log(y, floor))
        return total / len(self.mels)

    def distance(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Mel distance metric: mean over STFT sizes of L1 between log10 mels, per item -> [B]."""
        B = estimate.shape[0]
        total = estimate.new_zeros(B)
        for mel in self.mels:
            x, y = mel(estimate), mel(reference)
            floor = _floor(y)
            diff = (_log(x, floor) - _log(y, floor)).abs()  # [B * C, M, N]
            total = total + diff.reshape(B, -1).mean(-1)
        return total / len(self.mels)


def _floor(reference: torch.Tensor) -> torch.Tensor:
    """Per item of a [B', M, N] magnitude reference: LOG_FLOOR times its peak ([B', 1, 1]), so that log
    terms ignore what lies 100 dB below the signal, whatever the filters' or the STFT's scale."""
    return (LOG_FLOOR * reference.detach().amax(dim=(-2, -1), keepdim=True)).clamp_min(LOG_FLOOR ** 2)


def _log(magnitude: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    return torch.log10(torch.maximum(magnitude, floor))


# ------------------------------------------------------------------------------------------------
# Multi-resolution STFT magnitudes
# ------------------------------------------------------------------------------------------------
def stft_sizes(sample_rate: int, finest_hz: float = 4.0, coarsest: int = 256) -> tp.Tuple[int, ...]:
    """STFT sizes from `coarsest` up to the first power of two whose bins are at most `finest_hz` wide
    (32 kHz: 256 .. 8192; 16 kHz: 256 .. 4096): semitones apart down to about 70 Hz."""
    sizes = [coarsest]
    while sample_rate / sizes[-1] > finest_hz:
        sizes.append(sizes[-1] * 2)
    return tuple(sizes)


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over STFT sizes (hop a quarter, Hann window) of the L1 distance between magnitudes:
    `linear` on |STFT| (loud partials, their exact frequency), `log` on log10 |STFT| (quiet detail).

    forward(estimate, reference [B, C, L]) -> {'stft': linear term, 'log_stft': log term}, two scalars
    for the balancer."""

    def __init__(self, sample_rate: int, sizes: tp.Optional[tp.Sequence[int]] = None):
        super().__init__()
        self.sizes = tuple(sizes or stft_sizes(sample_rate))
        for n in self.sizes:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def magnitudes(self, wav: torch.Tensor, n_fft: int) -> torch.Tensor:
        """wav [B, C, L] -> |STFT| [B * C, F, N]."""
        x = wav.reshape(-1, wav.shape[-1])
        return torch.stft(x, n_fft, n_fft // 4, window=getattr(self, f"window_{n_fft}"), center=True,
                          pad_mode="constant", return_complex=True).abs()

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> tp.Dict[str, torch.Tensor]:
        linear = estimate.new_zeros(())
        log = estimate.new_zeros(())
        for n in self.sizes:
            x, y = self.magnitudes(estimate, n), self.magnitudes(reference, n)
            linear = linear + F.l1_loss(x, y)
            floor = _floor(y)
            log = log + F.l1_loss(_log(x, floor), _log(y, floor))
        return {"stft": linear / len(self.sizes), "log_stft": log / len(self.sizes)}


# ------------------------------------------------------------------------------------------------
# Scale-invariant SDR
# ------------------------------------------------------------------------------------------------
def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), zero-mean signals.
    estimate, reference [..., L] -> [...]."""
    reference = reference - reference.mean(-1, keepdim=True)
    estimate = estimate - estimate.mean(-1, keepdim=True)
    alpha = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


# ------------------------------------------------------------------------------------------------
# Multi-scale STFT discriminator
# ------------------------------------------------------------------------------------------------
def _wn_conv2d(c_in: int, c_out: int, kernel: tp.Tuple[int, int], stride: tp.Tuple[int, int] = (1, 1),
               dilation: tp.Tuple[int, int] = (1, 1)) -> nn.Module:
    padding = ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, dilation=dilation, padding=padding)
    return nn.utils.parametrizations.weight_norm(conv)


class STFTDiscriminator(nn.Module):
    """One STFT resolution: wav [B, C, L] -> (logits [B, 1, N, F'], feature maps).

    Input: complex STFT (normalised, not centred) as 2C channels over (time N, frequency F); then a
    (3, 9) conv, three (3, 9) convs dilated 1, 2, 4 in time and strided 2 in frequency, a (3, 3) conv,
    each followed by LeakyReLU(0.2), and a (3, 3) conv to one logit channel."""

    def __init__(self, n_fft: int, hop: int, channels: int = 1, filters: int = 32,
                 dilations: tp.Sequence[int] = (1, 2, 4)):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [_wn_conv2d(2 * channels, filters, (3, 9))]
        convs += [_wn_conv2d(filters, filters, (3, 9), stride=(1, 2), dilation=(d, 1)) for d in dilations]
        convs.append(_wn_conv2d(filters, filters, (3, 3)))
        self.convs = nn.ModuleList(convs)
        self.post = _wn_conv2d(filters, 1, (3, 3))

    def forward(self, wav: torch.Tensor) -> tp.Tuple[torch.Tensor, tp.List[torch.Tensor]]:
        B, C, L = wav.shape
        spec = torch.stft(wav.reshape(B * C, L), self.n_fft, self.hop, window=self.window, center=False,
                          normalized=True, return_complex=True)  # [B * C, F, N]
        x = torch.view_as_real(spec).reshape(B, C, *spec.shape[1:], 2)  # [B, C, F, N, 2]
        x = x.permute(0, 1, 4, 3, 2).reshape(B, 2 * C, spec.shape[-1], spec.shape[-2])  # [B, 2C, N, F]
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        return self.post(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's MS-STFTD: STFT sizes 1024, 2048, 512 with hops of a quarter."""

    def __init__(self, channels: int = 1, filters: int = 32, n_ffts: tp.Sequence[int] = (1024, 2048, 512)):
        super().__init__()
        self.discriminators = nn.ModuleList([STFTDiscriminator(n, n // 4, channels, filters) for n in n_ffts])

    def forward(self, wav: torch.Tensor) -> tp.List[tp.Tuple[torch.Tensor, tp.List[torch.Tensor]]]:
        """wav [B, C, L] -> one (logits, feature maps) pair per resolution."""
        return [d(wav) for d in self.discriminators]


def discriminator_loss(real: tp.Sequence[tp.Tuple[torch.Tensor, tp.Any]],
                       fake: tp.Sequence[tp.Tuple[torch.Tensor, tp.Any]]) -> torch.Tensor:
    """Hinge loss of the discriminator, mean over resolutions: relu(1 - D(x)) + relu(1 + D(G(x)))."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake, strict=True)]
    return sum(terms) / len(terms)


def generator_losses(real: tp.Sequence[tp.Tuple[torch.Tensor, tp.List[torch.Tensor]]],
                     fake: tp.Sequence[tp.Tuple[torch.Tensor, tp.List[torch.Tensor]]]
                     ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, feature matching) losses of the generator, means over resolutions (and layers).

    adversarial: hinge relu(1 - D(G(x))); feature matching: L1 between the feature maps of G(x) and x,
    each divided by the mean magnitude of x's map (EnCodec §3.4)."""
    adv, feat, n_feat = 0.0, 0.0, 0
    for (_, real_maps), (fake_logits, fake_maps) in zip(real, fake, strict=True):
        adv = adv + F.relu(1 - fake_logits).mean()
        for r, f in zip(real_maps, fake_maps, strict=True):
            r = r.detach()
            feat = feat + F.l1_loss(f, r) / r.abs().mean().clamp_min(1e-8)
            n_feat += 1
    return adv / len(fake), feat / max(n_feat, 1)


# ------------------------------------------------------------------------------------------------
# Baselines for the evaluation numbers
# ------------------------------------------------------------------------------------------------
def lowpass(wav: torch.Tensor, sample_rate: int, cutoff: float) -> torch.Tensor:
    """Brick-wall low-pass by zeroing FFT bins above cutoff Hz: [..., L] -> [..., L]."""
    spec = torch.fft.rfft(wav, dim=-1)
    freqs = torch.fft.rfftfreq(wav.shape[-1], 1 / sample_rate)
    return torch.fft.irfft(spec * (freqs <= cutoff), n=wav.shape[-1], dim=-1)


def mu_law(wav: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Mu-law companding to 2^bits levels and back (G.711-like): [...] -> [...], input clipped to [-1, 1]."""
    mu = 2 ** bits - 1
    x = wav.clamp(-1, 1)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    q = torch.round((y + 1) / 2 * mu) / mu * 2 - 1
    return torch.sign(q) * ((1 + mu) ** q.abs() - 1) / mu
