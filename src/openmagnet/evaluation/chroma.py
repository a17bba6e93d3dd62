"""Chroma cosine similarity (audiocraft's `metrics/chroma_cosinesim.py`, the melody metric): frame-wise cosine
between the chromagrams of generated and reference audio, averaged over frames.

Both clips are taken to 32 kHz mono; the chromagram is librosa's chroma filter bank (12 bins, tuning 0) over
the power spectrogram (n_fft = window = 2^14, hop 2^12, periodic Hann, centred with reflect padding,
normalised by the window's energy), each frame divided by its largest value (inf-norm, floor 1e-6) and, as
MAGNeT's evaluation sets it, replaced by a one-hot of its strongest pitch class. The first
ceil(reference samples / hop) frames count (audiocraft passes the reference sizes).
"""
from __future__ import annotations

import math
import typing as tp

import torch
from torch.nn import functional as F

SAMPLE_RATE = 32000
N_FFT = 2 ** 14
HOP = N_FFT // 4


class Chroma:
    def __init__(self, argmax: bool = True, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT):
        from .adherence import load_librosa

        librosa = load_librosa()

        self.argmax, self.sample_rate, self.n_fft, self.hop = argmax, sample_rate, n_fft, n_fft // 4
        self.filters = torch.from_numpy(librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0, n_chroma=12))
        self.window = torch.hann_window(n_fft)

    def __call__(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """wav [C, T] -> [frames, 12]."""
        from ..audio import convert_audio

        x = convert_audio(wav.float()[None], sample_rate, self.sample_rate, 1)[0, 0]
        if x.shape[-1] < self.n_fft:
            pad = self.n_fft - x.shape[-1]
            x = F.pad(x, (pad // 2, pad - pad // 2))
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True).abs().pow(2) / self.window.pow(2).sum()
        chroma = F.normalize(self.filters.to(spec.dtype) @ spec, p=math.inf, dim=0, eps=1e-6).T  # [frames, 12]
        if self.argmax:
            chroma = F.one_hot(chroma.argmax(-1), 12).to(chroma.dtype)
        return chroma

    def similarity(self, generated: torch.Tensor, reference: torch.Tensor, sample_rate: int,
                   reference_samples: tp.Optional[int] = None) -> tp.Tuple[float, int]:
        """(sum of frame cosines, frames) of one pair at one sample rate, as audiocraft accumulates them."""
        g, r = self(generated, sample_rate), self(reference, sample_rate)
        frames = math.ceil((reference_samples or reference.shape[-1]) / self.hop)
        n = min(frames, g.shape[0], r.shape[0])
        return float(F.cosine_similarity(r[:n], g[:n], dim=1, eps=1e-8).sum()), n
