"""Frechet distances between sets of embeddings (FAD), computed so that the numbers can be trusted.

    stats = FrechetStats.of(embeddings)                  # [frames, dim]; float64 running sums
    stats = FrechetStats.merge([shard_a, shard_b])       # shards of one set, in any order
    stats.save("ref.npz", fingerprint="vggish:...")      # reload only with the same embedder
    fad = frechet_distance(gen_stats, ref_stats)
    fit = fad_inf(gen_embeddings, ref_stats, seed=0)     # FAD extrapolated to infinitely many frames

The statistics follow Google's `frechet_audio_distance` tool (which audiocraft runs): the mean over all
frames of a set and the covariance with n - 1, both in float64. The distance is
|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1 S2)^(1/2). The trace of the matrix square root is taken from the
eigenvalues of L^T S2 L (S1 = L L^T by Cholesky; S1^(1/2) S2 S1^(1/2) where S1 is singular), a symmetric positive
semi-definite matrix similar to S1 S2, so it needs one Cholesky factor and one symmetric eigendecomposition, and
never scipy's `sqrtm` (which regressed in scipy 1.11.2-1.12 and, for complex input, in 1.16), nor the Google
tool's retry with 1e-7 I (its sqrtm fails on singular covariances; this never does). FAD is biased upwards for
small sets (Gui et al. 2024, "Adapting Frechet Audio Distance for generative music evaluation"): report n, or
FAD-inf.
"""
from __future__ import annotations

import dataclasses
import os
import typing as tp
from pathlib import Path

import numpy as np

from ..files import atomic_file

if tp.TYPE_CHECKING:
    import torch

PathLike = tp.Union[str, os.PathLike]


@dataclasses.dataclass
class FrechetStats:
    """Running first and second moments of a set of embeddings: n frames, their sum and the sum of their
    outer products (float64). Shards merge exactly (sums add), whatever the order of the frames."""
    n: int
    total: np.ndarray  # [D]
    outer: np.ndarray  # [D, D]

    @classmethod
    def empty(cls, dim: int) -> "FrechetStats":
        return cls(0, np.zeros(dim, dtype=np.float64), np.zeros((dim, dim), dtype=np.float64))

    @classmethod
    def of(cls, embeddings: tp.Any) -> "FrechetStats":
        x = _frames(embeddings)
        return cls.empty(x.shape[1]).update(x)

    def update(self, embeddings: tp.Any) -> "FrechetStats":
        """Adds the frames of embeddings [N, D] (numpy or torch) in place; returns self."""
        x = _frames(embeddings)
        if x.shape[1] != self.dim:
            raise ValueError(f"embeddings of dimension {x.shape[1]} cannot join statistics of dimension {self.dim}")
        self.n += x.shape[0]
        self.total += x.sum(axis=0)
        self.outer += _gram(x)
        return self

    @classmethod
    def resampled(cls, frames: tp.Sequence[tp.Any], counts: tp.Sequence[int]) -> "FrechetStats":
        """The statistics of a resample of clips with replacement (a bootstrap draw): clip i's frames
        [n_i, D] counted counts[i] times. Computed from the frames, so a bootstrap holds the frames and not a
        D x D matrix per clip (2048-d CREPE statistics are 32 MB a clip)."""
        import torch

        chosen = [(torch.as_tensor(f), int(c)) for f, c in zip(frames, counts, strict=True) if c and len(f)]
        if not chosen:
            raise ValueError("no statistics to merge")
        x = torch.cat([f for f, _ in chosen]).double()
        w = torch.cat([torch.full((f.shape[0],), float(c), dtype=torch.float64) for f, c in chosen])
        return cls(int(w.sum()), (w @ x).numpy(), ((x * w[:, None]).T @ x).numpy())

    @staticmethod
    def merge(shards: tp.Sequence["FrechetStats"]) -> "FrechetStats":
        if not shards:
            raise ValueError("no statistics to merge")
        dims = {s.dim for s in shards}
        if len(dims) != 1:
            raise ValueError(f"statistics of different dimensions cannot merge: {sorted(dims)}")
        return FrechetStats(sum(s.n for s in shards), sum(s.total for s in shards), sum(s.outer for s in shards))

    @property
    def dim(self) -> int:
        return int(self.total.shape[0])

    @property
    def mean(self) -> np.ndarray:
        self._need(1)
        return self.total / self.n

    @property
    def cov(self) -> np.ndarray:
        """Covariance with n - 1 (as numpy's np.cov and the FAD tool), symmetrised."""
        self._need(2)
        mu = self.mean
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return (cov + cov.T) / 2

    def _need(self, n: int) -> None:
        if self.n < n:
            raise ValueError(f"Frechet statistics need at least {n} frames, this set has {self.n}: "
                             f"give longer or more clips")

    def save(self, path: PathLike, fingerprint: str = "") -> Path:
        """Writes an .npz (atomically) with the sums and the fingerprint of the embedder that made them."""
        path = Path(path)
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, n=np.int64(self.n), total=self.total, outer=self.outer,
                         fingerprint=np.array(fingerprint))
        return path

    @classmethod
    def load(cls, path: PathLike, fingerprint: tp.Optional[str] = None) -> "FrechetStats":
        """Reads what `save` wrote; with `fingerprint`, refuses statistics made by another embedder."""
        try:
            with np.load(path, allow_pickle=False) as data:
                stats = cls(int(data["n"]), data["total"].astype(np.float64), data["outer"].astype(np.float64))
                stored = str(data["fingerprint"])
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: not saved Frechet statistics ({type(e).__name__}); recompute them") from None
        if fingerprint is not None and stored != fingerprint:
            raise ValueError(f"{path} was computed with another embedder or settings ({stored!r}, not "
                             f"{fingerprint!r}); recompute it, or pass the embedder it was made with")
        return stats


def _gram(x: np.ndarray) -> np.ndarray:
    """x^T x in float64 through torch's BLAS (several times faster than numpy's here for 2048-d frames)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x))
    return (t.T @ t).numpy()


def _frames(embeddings: tp.Any) -> np.ndarray:
    x = embeddings.detach().cpu().numpy() if hasattr(embeddings, "detach") else np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [frames, dim], got shape {tuple(x.shape)}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold NaN or inf: check the audio for NaN samples")
    return x


def _gaussian(x: tp.Union[FrechetStats, tp.Tuple[np.ndarray, np.ndarray]]) -> tp.Tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) in float64 of FrechetStats or a (mean, covariance) pair."""
    if isinstance(x, FrechetStats):
        return x.mean, x.cov
    return np.asarray(x[0], np.float64), np.asarray(x[1], np.float64)


def _sqrt_psd(a: "torch.Tensor") -> "torch.Tensor":
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding noise in
    the eigenvalues clipped to 0)."""
    import torch

    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0.0).sqrt()) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr (S1 S2)^(1/2) for symmetric PSD S1, S2, in float64. The eigenvalues of S1 S2 equal those of
    L^T S2 L for S1 = L L^T (Cholesky, where S1 is positive definite) and of S1^(1/2) S2 S1^(1/2) (where it is
    only semi-definite); both are symmetric PSD, so the trace is the sum of their eigenvalues' square roots.
    torch's LAPACK does it: for 2048-d statistics about 5x faster than numpy's on a 2-core CPU, which is what
    makes bootstrap intervals of FAD affordable."""
    import torch

    s1 = torch.from_numpy(np.ascontiguousarray(sigma1, dtype=np.float64))
    s2 = torch.from_numpy(np.ascontiguousarray(sigma2, dtype=np.float64))
    s1 = (s1 + s1.T) / 2
    lower, info = torch.linalg.cholesky_ex(s1)
    factor = lower if int(info) == 0 else _sqrt_psd(s1)  # L L^T = S1, or R R^T = R R = S1
    middle = factor.T @ s2 @ factor
    w = torch.linalg.eigvalsh((middle + middle.T) / 2)
    return float(w.clamp(min=0.0).sqrt().sum())


def frechet_distance(a: tp.Union[FrechetStats, tp.Tuple[np.ndarray, np.ndarray]],
                     b: tp.Union[FrechetStats, tp.Tuple[np.ndarray, np.ndarray]]) -> float:
    """Frechet distance between two Gaussians given as FrechetStats or (mean, covariance) pairs."""
    mu1, s1 = _gaussian(a)
    mu2, s2 = _gaussian(b)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"the two sets' statistics do not match: means {mu1.shape} and {mu2.shape}, "
                         f"covariances {s1.shape} and {s2.shape}")
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(value, 0.0)  # exact arithmetic never goes below 0; rounding can, by ~1e-12


@dataclasses.dataclass(frozen=True)
class FadInf:
    """FAD extrapolated to infinitely many generated frames: the intercept of a least-squares line through
    (1 / n, FAD at n frames) for a few subset sizes n (Gui et al. 2024), with the fit's quality."""
    value: float
    slope: float
    r2: float
    sizes: tp.Tuple[int, ...]
    fads: tp.Tuple[float, ...]


def fad_inf(generated: tp.Any, reference: FrechetStats, *, sizes: tp.Optional[tp.Sequence[int]] = None,
            draws: int = 1, seed: int = 0) -> FadInf:
    """FAD-inf of the generated frames [N, D] against the reference statistics. Subsets of `sizes` frames
    (default, as fadtk: 15 sizes evenly spaced from max(2, N / 5) to N) are drawn without replacement from a
    seeded generator, `draws` times each; the FADs are fitted by a line in 1 / n."""
    x = _frames(generated)
    n = x.shape[0]
    if sizes is None:
        sizes = sorted({int(round(v)) for v in np.linspace(max(2, n // 5), n, 15)})
    sizes = tuple(int(s) for s in sizes)
    if any(s < 2 or s > n for s in sizes) or len(sizes) < 2:
        raise ValueError(f"FAD-inf needs at least two subset sizes within 2..{n} frames, got {sizes}")
    rng = np.random.default_rng(seed)
    fads = []
    for size in sizes:
        values = [frechet_distance(FrechetStats.of(x[rng.choice(n, size, replace=False)]), reference)
                  for _ in range(draws)]
        fads.append(float(np.mean(values)))
    inverse = 1.0 / np.asarray(sizes, dtype=np.float64)
    slope, intercept = np.polyfit(inverse, np.asarray(fads), 1)
    predicted = intercept + slope * inverse
    residual = float(((np.asarray(fads) - predicted) ** 2).sum())
    spread = float(((np.asarray(fads) - np.mean(fads)) ** 2).sum())
    r2 = 1.0 - residual / spread if spread > 0 else 1.0
    return FadInf(float(intercept), float(slope), r2, sizes, tuple(fads))
