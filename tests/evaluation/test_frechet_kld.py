"""The statistics behind FAD and KLD (openmagnet/evaluation/frechet.py, kld.py) against independent truth:
closed forms, a general eigen-solver, numpy's covariance, audiocraft's segmenting rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from openmagnet.evaluation.frechet import FrechetStats, fad_inf, frechet_distance, trace_sqrt_product
from openmagnet.evaluation.kld import MIN_SEGMENT, KLDAccumulator, kl_divergence, passt_segments


def _random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_of_known_gaussians():
    value = frechet_distance((np.zeros(2), np.array([[2.0, 1.0], [1.0, 2.0]])), (np.ones(2), np.eye(2)))
    assert value == pytest.approx(6 - 2 * math.sqrt(3), abs=1e-12)


def test_frechet_distance_matches_a_general_eigen_solver_on_random_pairs():
    """tr (S1 S2)^(1/2) from numpy's general (non-symmetric) eigenvalues of S1 S2, a different algorithm."""
    rng = np.random.default_rng(0)
    for d in (3, 16, 64):
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        eig = np.linalg.eigvals(s1 @ s2)
        assert np.abs(eig.imag).max() < 1e-8
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig.real).sum()
        assert trace_sqrt_product(s1, s2) == pytest.approx(np.sqrt(eig.real).sum(), rel=1e-10)
        assert frechet_distance((mu1, s1), (mu2, s2)) == pytest.approx(expected, rel=1e-9)


def test_a_resample_from_frames_equals_merged_clip_statistics():
    rng = np.random.default_rng(4)
    clips = [rng.standard_normal((n, 6)).astype(np.float32) + i for i, n in enumerate((5, 9, 0, 7))]
    counts = [2, 0, 3, 1]
    merged = FrechetStats.merge([FrechetStats.of(c) for c, k in zip(clips, counts, strict=True)
                                 for _ in range(k) if len(c)])
    drawn = FrechetStats.resampled(clips, counts)
    assert drawn.n == merged.n == 2 * 5 + 7
    np.testing.assert_allclose(drawn.total, merged.total, rtol=1e-12)
    np.testing.assert_allclose(drawn.outer, merged.outer, rtol=1e-12)
    with pytest.raises(ValueError, match="no statistics to merge"):
        FrechetStats.resampled(clips, [0, 0, 5, 0])


def test_a_singular_covariance_takes_the_square_root_path():
    """A dead embedding unit (a zero row and column) makes S1 singular: Cholesky fails and the symmetric square
    root is used; the trace still matches the general eigen solver, in both orders."""
    rng = np.random.default_rng(3)
    s1, s2 = _random_spd(rng, 12), _random_spd(rng, 12)
    s1[-1, :] = s1[:, -1] = 0.0
    expected = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-9)
    assert trace_sqrt_product(s2, s1) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance((np.zeros(12), s1), (np.zeros(12), s1)) < 1e-9


def test_identical_sets_are_at_distance_zero_and_statistics_merge_exactly(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 8)) @ rng.standard_normal((8, 8)) + 3.0
    stats = FrechetStats.of(x)
    assert frechet_distance(stats, FrechetStats.of(x.copy())) < 1e-9
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    shards = [FrechetStats.of(x[i::3]) for i in range(3)]
    merged = FrechetStats.merge(shards[::-1])
    assert merged.n == 500
    np.testing.assert_allclose(merged.cov, stats.cov, rtol=1e-12, atol=1e-12)
    path = stats.save(tmp_path / "ref.npz", fingerprint="embedder:abc")
    loaded = FrechetStats.load(path, fingerprint="embedder:abc")
    assert loaded.n == 500 and np.array_equal(loaded.outer, stats.outer)
    with pytest.raises(ValueError, match=r"ref.npz was computed with another embedder or settings "
                                         r"\('embedder:abc', not 'embedder:xyz'\)"):
        FrechetStats.load(path, fingerprint="embedder:xyz")
    with pytest.raises(ValueError, match="need at least 2 frames, this set has 1"):
        _ = FrechetStats.of(x[:1]).cov
    with pytest.raises(ValueError, match="NaN or inf"):
        FrechetStats.of(np.full((3, 2), np.nan))


def test_fad_inf_removes_the_small_sample_bias():
    """Two sets from the same Gaussian: FAD at n frames is biased upwards roughly as 1/n, FAD-inf is near 0."""
    rng = np.random.default_rng(2)
    mix = rng.standard_normal((16, 16))
    ref = FrechetStats.of(rng.standard_normal((20000, 16)) @ mix)
    gen = rng.standard_normal((2000, 16)) @ mix
    plain = frechet_distance(FrechetStats.of(gen), ref)
    fit = fad_inf(gen, ref, seed=0)
    assert fit.slope > 0 and fit.r2 > 0.9
    assert abs(fit.value) < 0.3 * plain
    assert fit == fad_inf(gen, ref, seed=0)  # seeded
    shifted = fad_inf(gen + 1.0, ref, seed=0)  # a real difference survives the extrapolation
    assert shifted.value == pytest.approx(16.0, rel=0.1)


def test_kl_divergence_of_known_distributions_in_both_directions():
    p, q = torch.tensor([[0.5, 0.5]], dtype=torch.float64), torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    kl_qp = 0.9 * math.log(0.9 / (0.5 + 1e-6)) + 0.1 * math.log(0.1 / (0.5 + 1e-6))
    kl_pq = 0.5 * math.log(0.5 / (0.9 + 1e-6)) + 0.5 * math.log(0.5 / (0.1 + 1e-6))
    assert float(kl_divergence(p, q)) == pytest.approx(kl_qp, rel=1e-12)
    assert float(kl_divergence(q, p)) == pytest.approx(kl_pq, rel=1e-12)
    one_hot = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert float(kl_divergence(one_hot, one_hot)) == pytest.approx(-math.log(1 + 1e-6), rel=1e-9)  # q = 0 adds 0
    acc = KLDAccumulator()
    acc.update(p, q)  # generated p, reference q: audiocraft's kld is KL(ref || gen)
    acc.update(torch.cat([q, p]), torch.cat([q, p]))
    out = acc.compute()
    assert out["n_segments"] == 3
    self_terms = float(kl_divergence(q, q)) + float(kl_divergence(p, p))  # about -1e-6 each: the epsilon
    assert out["kld"] == pytest.approx((kl_qp + self_terms) / 3, rel=1e-9)
    assert out["kld_qp"] == pytest.approx((kl_pq + self_terms) / 3, rel=1e-9)
    assert out["kld_both"] == pytest.approx(out["kld_pq"] + out["kld_qp"])
    with pytest.raises(ValueError, match="give 1 and 2 segments: cut both clips of a pair"):
        acc.update(p, torch.cat([p, q]))
    with pytest.raises(ValueError, match="no segment to compare"):
        KLDAccumulator().compute()


@pytest.mark.parametrize("seconds, window, lengths", [
    (21.0, 20, [640000, 32000]),          # 20 + 1 s: two rows
    (10.1, 10, [320000]),                 # 0.1 s remainder dropped
    (10.0 + MIN_SEGMENT / 32000, 10, [320000]),  # exactly 0.15 s: dropped
    (10.0 + (MIN_SEGMENT + 1) / 32000, 10, [320000, MIN_SEGMENT + 1]),  # one sample more: kept
    (0.1, 10, []),                        # too short for any row
])
def test_passt_segments_follow_audiocrafts_rules(seconds, window, lengths):
    wav = torch.randn(2, int(round(seconds * 32000)))
    segments = passt_segments(wav, 32000, window)
    assert [s.shape[-1] for s in segments] == lengths
    assert all(s.shape[0] == 1 for s in segments)
    if lengths:
        torch.testing.assert_close(segments[0][0, :100], wav.mean(0)[:100])  # mono = channel mean


def test_passt_segments_cut_at_the_reference_length_and_resample():
    wav = torch.randn(1, 16000 * 12)
    assert [s.shape[-1] for s in passt_segments(wav, 16000, 10, length=16000 * 11)] == [320000, 32000]
