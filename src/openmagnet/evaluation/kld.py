"""KL divergence between a classifier's label distributions on generated and reference audio, as audiocraft
computes it (`metrics/kld.py`, PaSST over the 527 AudioSet classes).

    segs = passt_segments(wav, sample_rate, window_seconds=20)   # [1, L] pieces, 32 kHz mono
    acc = KLDAccumulator()
    acc.update(gen_probs, ref_probs)        # [S, classes] per segment, the same segments of both
    acc.compute()                           # {'kld': KL(ref || gen), 'kld_pq', 'kld_qp', 'kld_both', 'n_segments'}

audiocraft's rules, which change the numbers: both clips are cut at the reference length, taken to 32 kHz
mono and split into windows of the model's length (20 s for music, 10 s for sound); a remainder of 0.15 s
(4800 samples) or less is dropped; **every segment is a row of its own**, so the average runs over
segments, not clips (a 21-s clip weighs twice as much as a 10-s one under the 20-s model). Its `kld` is
KL(p_ref || p_gen) with 1e-6 added to p_gen inside the log; `kld_qp` is the other direction (1e-6 on
p_ref) and `kld_both` their sum. Terms with p_ref = 0 count 0 (xlogy), so values can dip just below 0.
"""
from __future__ import annotations

import typing as tp

import torch

PASST_SAMPLE_RATE = 32000
MIN_SEGMENT = int(0.15 * PASST_SAMPLE_RATE)  # segments of this many samples or fewer are dropped
EPSILON = 1e-6


def kl_divergence(p: torch.Tensor, q: torch.Tensor, epsilon: float = EPSILON) -> torch.Tensor:
    """sum_c q_c (log q_c - log(p_c + epsilon)) per row: KL(q || p) with audiocraft's epsilon on p.
    p, q [S, classes] probabilities -> [S]."""
    if p.shape != q.shape or p.dim() != 2:
        raise ValueError(f"label distributions must both be [segments, classes], got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}")
    p, q = p.double(), q.double()
    return (torch.xlogy(q, q) - q * (p + epsilon).log()).sum(-1)


def passt_segments(wav: torch.Tensor, sample_rate: int, window_seconds: float,
                   length: tp.Optional[int] = None) -> tp.List[torch.Tensor]:
    """wav [C, T] -> the [1, L] pieces audiocraft feeds PaSST: cut at `length` samples (the reference's
    length, default all), resampled to 32 kHz mono (julius, as audiocraft's convert_audio), split into
    windows of window_seconds; pieces of MIN_SEGMENT samples or fewer are dropped."""
    from ..audio import convert_audio

    if wav.dim() != 2:
        raise ValueError(f"audio must be [channels, samples], got shape {tuple(wav.shape)}")
    wav = wav[:, :length] if length is not None else wav
    mono = convert_audio(wav.float()[None], sample_rate, PASST_SAMPLE_RATE, 1)[0]  # [1, T']
    window = int(window_seconds * PASST_SAMPLE_RATE)
    return [s for s in torch.split(mono, window, dim=-1) if s.shape[-1] > MIN_SEGMENT]


class KLDAccumulator:
    """Sums of the per-segment KL in both directions (float64); `compute` averages over segments."""

    def __init__(self):
        self.pq = torch.zeros((), dtype=torch.float64)
        self.qp = torch.zeros((), dtype=torch.float64)
        self.n = 0
        self.rows: tp.List[torch.Tensor] = []  # per segment (kld_pq, kld_qp), for intervals over clips

    def update(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Adds segments whose label distributions are generated / reference [S, classes] (row i of both is
        the same piece of the same clip pair); returns the per-segment KL(ref || gen) [S]."""
        if generated.shape != reference.shape:
            raise ValueError(f"generated and reference give {generated.shape[0]} and {reference.shape[0]} "
                             f"segments: cut both clips of a pair to the reference's length")
        pq = kl_divergence(generated, reference)
        qp = kl_divergence(reference, generated)
        if torch.isnan(pq).any() or torch.isnan(qp).any():
            raise ValueError("the label distributions hold NaN: check the audio for NaN samples")
        self.pq += pq.sum()
        self.qp += qp.sum()
        self.n += pq.shape[0]
        self.rows.append(torch.stack([pq, qp], -1))
        return pq

    def compute(self) -> tp.Dict[str, float]:
        if self.n == 0:
            raise ValueError("no segment to compare: every clip was 0.15 s or shorter")
        pq, qp = float(self.pq) / self.n, float(self.qp) / self.n
        return {"kld": pq, "kld_pq": pq, "kld_qp": qp, "kld_both": pq + qp, "n_segments": self.n}
