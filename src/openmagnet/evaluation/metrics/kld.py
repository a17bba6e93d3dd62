"""KLD, the KL divergence between PaSST's AudioSet label distributions of each generated clip and its reference,
averaged over segments as audiocraft does (the maths in evaluation/kld.py, the classifier in evaluation/passt.py;
the preset picks PaSST's window: 20 s for music, 10 s for sound). Its interval resamples clips, each counting
its segments."""
from __future__ import annotations

import typing as tp

from . import Bootstrap, Clip, Metric, Options, Summary, register

if tp.TYPE_CHECKING:
    import numpy as np


@register
class KLD(Metric):
    name, order = "kld", 20
    help = "KL divergence of PaSST's AudioSet labels, reference -> generated (and back), per segment"
    labels = {"kld": "KLD (ref -> gen)", "kld_gen_ref": "KLD (gen -> ref)"}

    def __init__(self, passt: tp.Any):
        from ..kld import KLDAccumulator

        self.passt, self.accumulator = passt, KLDAccumulator()
        self.sums: tp.List[tp.Tuple[float, float, int]] = []  # per clip: KL(ref || gen), KL(gen || ref), segments

    @classmethod
    def load(cls, options: Options) -> "KLD":
        from ..passt import PaSST

        return cls(PaSST.load(options.defaults["kld"], weights_dir=options.weights_dir))

    def settings(self) -> tp.Dict[str, tp.Any]:
        return {"kld_model": {"name": f"passt-{self.passt.variant}", "weights": self.passt.fingerprint}}

    def score(self, clip: Clip) -> tp.Dict[str, tp.Any]:
        pg = self.passt.label_distributions(clip.generated, clip.generated_sr)
        pr = self.passt.label_distributions(clip.reference, clip.reference_sr)
        if pg.shape[0] != pr.shape[0]:
            raise ValueError(f"{clip.name}: {pg.shape[0]} PaSST segments generated against {pr.shape[0]} in "
                             f"the reference; the generated clip is shorter than its reference")
        if not pg.shape[0]:
            self.sums.append((0.0, 0.0, 0))
            return {}
        pq = self.accumulator.update(pg, pr)
        self.sums.append((float(pq.sum()), float(self.accumulator.rows[-1][:, 1].sum()), int(pq.shape[0])))
        return {"kld": float(pq.mean())}

    def summarise(self, bootstrap: Bootstrap) -> Summary:
        import numpy as np

        out = self.accumulator.compute()
        sums = np.array(self.sums, dtype=np.float64)

        def kld_of(idx: "np.ndarray") -> float:
            n = sums[idx, 2].sum()
            return float(sums[idx, 0].sum() / n) if n else float("nan")

        return Summary({"kld": out["kld"], "kld_gen_ref": out["kld_qp"], "kld_both": out["kld_both"],
                        "kld_segments": out["n_segments"]}, {"kld": bootstrap.interval(len(sums), kld_of)})
