"""PaSST and KLD (openmagnet/evaluation/passt.py, kld.py) against the official hear21passt 0.0.26 run through
audiocraft's PasstKLDivergenceMetric by the peer-metrics harness, on random weights in the released layout
(fixtures/metrics_golden.pt, see metrics_golden.py); the weights are rebuilt here from the same seeds."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openmagnet.evaluation.kld import KLDAccumulator, passt_segments
from openmagnet.evaluation.passt import PaSST, kaldi_mel_banks
from tests.evaluation.metrics_golden import CLIPS, PASST_SEEDS, clip, randomize_

GOLDEN = Path(__file__).parent / "fixtures" / "metrics_golden.pt"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


def _fabricated(variant: str, folder: Path) -> PaSST:
    """The released file of `variant`, fabricated as the harness does (a plain state dict), and loaded."""
    model = PaSST(variant)
    randomize_(model.net, PASST_SEEDS[variant])
    path = folder / ("passt-s-f128-p16-s10-ap.476-swa.pt" if variant == "10s"
                     else "passt-s-f128-20sec-p16-s10-ap.474-swa.pt")
    torch.save({k: v.contiguous() for k, v in model.net.state_dict().items()}, path)
    return PaSST.load(variant, path=str(path))


def test_kaldi_mel_banks():
    banks = kaldi_mel_banks()
    assert banks.shape == (128, 513) and (banks[:, -1] == 0).all() and (banks >= 0).all()
    hz = torch.arange(513) * 32000 / 1024
    assert float(hz[(banks > 0).any(0)].max()) <= 15000  # fmax 15 kHz (its own bin only by float32 rounding)
    assert bool((banks[64:].max(1).values > 0.8).all())  # wide bands peak near 1 (low ones are narrower than a bin)


@pytest.mark.parametrize("variant, key", [("10s", "passt10"), ("20s", "passt20")])
def test_kld_matches_the_official_code(golden, tmp_path, variant, key):
    """Per-segment logits and probabilities of every clip and its reversed target, the per-segment KLs and
    audiocraft's compute() values."""
    model = _fabricated(variant, tmp_path)
    names = sorted(CLIPS)
    gen = [model.label_distributions(clip(n), 32000) for n in names]
    ref = [model.label_distributions(clip(n).flip(-1), 32000) for n in names]
    owner = torch.cat([torch.full((g.shape[0],), i) for i, g in enumerate(gen)])
    assert torch.equal(owner, golden[f"kld/{key}/segment_clip"])
    torch.testing.assert_close(torch.cat(gen), golden[f"kld/{key}/preds/probs"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat(ref), golden[f"kld/{key}/targets/probs"], atol=1e-5, rtol=1e-4)
    logits = torch.cat([model.logits(s) for n in names for s in passt_segments(clip(n), 32000, model.window_seconds)])
    torch.testing.assert_close(logits, golden[f"kld/{key}/preds/logits"], atol=1e-4, rtol=1e-4)
    acc = KLDAccumulator()
    per_segment = torch.cat([acc.update(g, r) for g, r in zip(gen, ref, strict=True)])
    torch.testing.assert_close(per_segment.float(), golden[f"kld/{key}/kl_pq"], atol=1e-5, rtol=1e-4)
    out = acc.compute()
    for name in ("kld", "kld_pq", "kld_qp", "kld_both"):
        assert out[name] == pytest.approx(float(golden[f"kld/{key}/compute/{name}"]), abs=1e-5), name


def test_front_end_matches(golden):
    model = PaSST("10s")
    segment = passt_segments(clip(sorted(CLIPS)[2]), 32000, 10.0)[0]
    torch.testing.assert_close(model.mel(segment), golden["kld/passt10/preds/seg02/mel"], atol=1e-5, rtol=1e-5)


def test_loading_the_other_window_is_a_one_line_error(tmp_path):
    path = tmp_path / "passt-s-f128-p16-s10-ap.476-swa.pt"
    torch.save(PaSST("20s").net.state_dict(), path)
    with pytest.raises(ValueError, match=r"^PaSST 10s: .* does not match the model: time_new_pos_embed has "
                                         r"shape \[1, 768, 1, 200\], expected \[1, 768, 1, 99\]; is it the right "
                                         r"file\?$"):
        PaSST.load("10s", path=str(path))
