"""Training masks (openmagnet/train/masking.py): the span-count oracles of SPEC §4.1, span masks, cosine
rates and masked inputs."""
import math

import pytest
import torch

from openmagnet.train.masking import cosine_mask_rate, masked_inputs, span_count_lut, span_mask


# ------------------------------------------------------------------------------------- masking
@pytest.mark.parametrize("seq_len, rates", [
    (500, {1: 2, 5: 9, 10: 18, 25: 46, 50: 103, 75: 185, 90: 268, 99: 392, 100: 498}),
    (1500, {50: 310, 100: 1498}),
])
def test_span_count_lut_oracles(seq_len, rates):
    lut = span_count_lut(seq_len, 3)
    assert {m: lut[m] for m in rates} == rates
    assert len(lut) == 101 and list(lut) == sorted(lut)


def test_span_mask_counts_and_spans():
    g = torch.Generator().manual_seed(0)
    rates = torch.tensor([1.0, 0.5, 0.01, 0.0], dtype=torch.float64)
    mask = span_mask(rates, 500, 3, g)
    assert mask.shape == (4, 500) and mask.dtype == torch.bool
    assert mask[0].sum() >= 490  # 498 spans of 3 frames cover (almost) everything
    assert mask[3].sum() >= 1    # at least one span even at rate 0
    for row in mask:  # every masked run is at least one whole span (or cut at the end)
        runs, length = [], 0
        for v in row.tolist() + [False]:
            if v:
                length += 1
            elif length:
                runs.append(length)
                length = 0
        assert all(r >= 3 for r in runs[:-1]) or len(runs) <= 1
    expected = 1 - math.comb(500 - 3, 103) / math.comb(500, 103)  # the LUT's own criterion at 50%
    assert expected >= 0.5
    frac = torch.stack([span_mask(torch.tensor([0.5], dtype=torch.float64), 500, 3, g) for _ in range(200)])
    assert abs(frac.float().mean().item() - expected) < 0.01


def test_cosine_rates_and_inputs():
    rates = cosine_mask_rate(10000, torch.Generator().manual_seed(1))
    assert rates.min() >= 0 and rates.max() <= 1
    assert abs(rates.mean().item() - 2 / math.pi) < 0.01  # E[cos(pi t / 2)] = 2 / pi
    codes = torch.randint(0, 2048, (2, 4, 10))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 3:6] = True
    x = masked_inputs(codes, 1, mask, 2048)
    assert torch.equal(x[:, 0], codes[:, 0])
    assert (x[:, 1, 3:6] == 2048).all() and torch.equal(x[:, 1, :3], codes[:, 1, :3])
    assert (x[:, 2:] == 2048).all()
