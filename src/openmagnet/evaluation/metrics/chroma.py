"""Chroma cosine, the melody metric: the frame-wise cosine of the one-hot chromagrams of each generated clip
(at the reference's sample rate) and its reference, averaged over the reference's frames of every clip (the
chromagram in evaluation/chroma.py)."""
from __future__ import annotations

import typing as tp

from . import Bootstrap, Clip, Metric, Options, Summary, register


@register
class ChromaCosine(Metric):
    name, order = "chroma", 40
    help = "the melody metric: cosine of the one-hot chromagrams, frame by frame"
    labels = {"chroma": "chroma cosine"}

    def __init__(self, chroma: tp.Any):
        self.chroma = chroma
        self.sums: tp.List[tp.Tuple[float, int]] = []  # per clip: sum of the frame cosines, frames

    @classmethod
    def load(cls, options: Options) -> "ChromaCosine":
        from ..chroma import Chroma

        return cls(Chroma(argmax=True))

    def settings(self) -> tp.Dict[str, tp.Any]:
        return {"chroma": {"n_fft": self.chroma.n_fft, "hop": self.chroma.hop, "argmax": True}}

    def score(self, clip: Clip) -> tp.Dict[str, tp.Any]:
        from ...audio import convert_audio

        gen, sr = clip.generated, clip.reference_sr
        resampled = gen if clip.generated_sr == sr else convert_audio(gen[None], clip.generated_sr, sr,
                                                                      gen.shape[0])[0]
        total, frames = self.chroma.similarity(resampled, clip.reference, sr)
        self.sums.append((total, frames))
        return {"chroma": total / frames if frames else float("nan")}

    def summarise(self, bootstrap: Bootstrap) -> Summary:
        import numpy as np

        sums = np.array(self.sums, dtype=np.float64)
        return Summary({"chroma": float(sums[:, 0].sum() / sums[:, 1].sum())},
                       {"chroma": bootstrap.interval(
                           len(sums), lambda idx: float(sums[idx, 0].sum() / sums[idx, 1].sum()))})
