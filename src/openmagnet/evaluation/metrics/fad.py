"""FAD, the Frechet audio distance between the frames of the generated and the reference set (the maths in
evaluation/frechet.py), embedded by VGGish (comparable with published FAD) or the offline CREPE embedder.
Its interval resamples clips: a draw's statistics are sums of per-clip sums, kept while they fit
CLIP_STATS_BYTES, recomputed from the frames past it. Options: --fad-embedder, --fad-inf, --save-embeddings."""
from __future__ import annotations

import typing as tp
from pathlib import Path

from . import Bootstrap, Clip, Metric, Options, Summary, register

if tp.TYPE_CHECKING:
    import numpy as np
    import torch

EMBEDDERS = ("vggish", "crepe")
CLIP_STATS_BYTES = 1 << 30  # per-clip Frechet sums kept for the bootstrap up to this size (VGGish: 8000 clips)


@register
class FAD(Metric):
    name, order = "fad", 10
    help = "Frechet audio distance of the embeddings (VGGish, or CREPE with --fad-embedder crepe)"
    labels = {"fad": "FAD"}

    def __init__(self, embedder: tp.Any, embed: tp.Callable[..., "torch.Tensor"], name: str, options: Options):
        self.embedder, self.embed, self.embedder_name, self.options = embedder, embed, name, options
        self.generated: tp.List["torch.Tensor"] = []
        self.reference: tp.List["torch.Tensor"] = []

    @classmethod
    def check(cls, options: Options) -> None:
        embedder = options.fad_embedder or options.defaults["fad"]
        if embedder not in EMBEDDERS:
            raise ValueError(f"--fad-embedder must be one of {', '.join(EMBEDDERS)}, got {embedder!r}")

    @classmethod
    def load(cls, options: Options) -> "FAD":
        name = options.fad_embedder or options.defaults["fad"]
        if name == "vggish":
            from ..vggish import VGGish

            embedder = VGGish.load(weights_dir=options.weights_dir)
            return cls(embedder, embedder.embed_fad, name, options)
        from ..crepe import Crepe

        embedder = Crepe.load(weights_dir=options.weights_dir)
        return cls(embedder, embedder.embed, name, options)

    def settings(self) -> tp.Dict[str, tp.Any]:
        return {"fad_embedder": {"name": self.embedder_name, "weights": self.embedder.fingerprint}}

    def score(self, clip: Clip) -> tp.Dict[str, tp.Any]:
        g, r = self.embed(clip.generated, clip.generated_sr), self.embed(clip.reference, clip.reference_sr)
        self.generated.append(g)
        self.reference.append(r)
        return {"fad_frames": int(g.shape[0])}

    def summarise(self, bootstrap: Bootstrap) -> Summary:
        import numpy as np
        import torch

        from ..frechet import FrechetStats, fad_inf, frechet_distance

        g_all, r_all = torch.cat(self.generated), torch.cat(self.reference)
        g_stats, r_stats = FrechetStats.of(g_all), FrechetStats.of(r_all)
        values: tp.Dict[str, tp.Any] = {"fad": frechet_distance(g_stats, r_stats),
                                        "fad_frames": {"generated": g_stats.n, "reference": r_stats.n}}
        draw = self._draws(int(g_all.shape[1]))

        def fad_of(idx: "np.ndarray") -> float:
            a, b = draw(idx)
            if a is None or b is None:
                return float("nan")
            return frechet_distance(a, b) if a.n > 1 and b.n > 1 else float("nan")

        intervals = {"fad": bootstrap.interval(len(self.generated), fad_of, "FAD interval")}
        if self.options.fad_infinity:
            fit = fad_inf(g_all, r_stats, seed=self.options.seed)
            values["fad_inf"] = {"value": fit.value, "slope": fit.slope, "r2": fit.r2, "sizes": list(fit.sizes)}
        if self.options.save_embeddings:
            out = Path(self.options.save_embeddings)
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / "generated.npy", g_all.numpy())
            np.save(out / "reference.npy", r_all.numpy())
        return Summary(values, intervals)

    def _draws(self, dim: int) -> tp.Callable[["np.ndarray"], tp.Tuple[tp.Any, tp.Any]]:
        """idx (the clips of one draw) -> the Frechet statistics of the generated and the reference frames."""
        import numpy as np

        from ..frechet import FrechetStats

        gen, ref, n = self.generated, self.reference, len(self.generated)
        if 2 * n * dim * dim * 8 <= CLIP_STATS_BYTES:  # per-clip sums: a draw is a sum of matrices
            g_clip = [FrechetStats.of(f) if f.shape[0] else None for f in gen]
            r_clip = [FrechetStats.of(f) if f.shape[0] else None for f in ref]

            def draw(idx: "np.ndarray") -> tp.Tuple[tp.Any, tp.Any]:
                gs = [g_clip[i] for i in idx if g_clip[i] is not None]
                rs = [r_clip[i] for i in idx if r_clip[i] is not None]
                return (FrechetStats.merge(gs) if gs else None), (FrechetStats.merge(rs) if rs else None)
            return draw

        def draw_from_frames(idx: "np.ndarray") -> tp.Tuple[tp.Any, tp.Any]:  # too many D x D matrices to hold
            counts = np.bincount(idx, minlength=n)
            try:
                return FrechetStats.resampled(gen, counts), FrechetStats.resampled(ref, counts)
            except ValueError:
                return None, None
        return draw_from_frames

    @classmethod
    def table_rows(cls, report: tp.Mapping[str, tp.Any]) -> tp.List[str]:
        rows = super().table_rows(report)
        if "fad_inf" in report:
            f = report["fad_inf"]
            rows.append(f"| FAD-inf | {f['value']:.4f} | slope {f['slope']:.1f}, r2 {f['r2']:.3f} |")
        return rows
