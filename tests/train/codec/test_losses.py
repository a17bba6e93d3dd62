"""Codec losses and metrics (openmagnet/train/codec/losses.py) on known signals."""
from __future__ import annotations

import math

import torch

from openmagnet.train.codec.losses import MultiScaleMelLoss, lowpass, mel_filterbank, mu_law, si_sdr
from tests.train.codec.conftest import SR


# ------------------------------------------------------------------------------------------------
# Metrics on known signals
# ------------------------------------------------------------------------------------------------
def test_si_sdr_on_known_signals():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4000, generator=g)
    noise = torch.randn(2, 4000, generator=g)
    assert (si_sdr(x, x) > 60).all()
    assert (si_sdr(noise, x) < -10).all()
    noisy = x + 0.1 * noise
    assert torch.allclose(si_sdr(noisy, x), torch.full((2,), 20.0), atol=0.5)  # 10 log10(1 / 0.01)
    assert torch.allclose(si_sdr(3.0 * noisy, x), si_sdr(noisy, x), atol=1e-4)  # scale invariant
    assert torch.allclose(si_sdr(noisy, 0.2 * x), si_sdr(noisy, x), atol=1e-4)


def test_mel_filterbank_and_distance():
    bank = mel_filterbank(SR, 1024, 64)
    assert bank.shape == (64, 513) and (bank >= 0).all()
    t = torch.arange(SR) / SR
    tone = torch.sin(2 * math.pi * 1000 * t)
    spec = torch.stft(tone, 1024, 256, window=torch.hann_window(1024), return_complex=True).abs().mean(-1)
    low = torch.sin(2 * math.pi * 200 * t)
    spec_low = torch.stft(low, 1024, 256, window=torch.hann_window(1024), return_complex=True).abs().mean(-1)
    assert int((bank @ spec).argmax()) > int((bank @ spec_low).argmax())  # higher tone, higher mel bin
    mel = MultiScaleMelLoss(SR)
    x = tone[None, None]
    assert float(mel.distance(x, x)) == 0.0 and float(mel(x, x)) == 0.0
    assert float(mel.distance(0.5 * torch.randn_like(x), x)) > 0.5
    assert float(mel.distance(lowpass(x, SR, 4000.0), x)) < 0.1  # a 1 kHz tone survives a 4 kHz low-pass
    assert float((mu_law(x) - x).abs().max()) < 0.02
