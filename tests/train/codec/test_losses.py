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


def test_mel_filters_peak_at_one_so_linear_mels_are_on_the_stft_scale():
    from openmagnet.train.codec.losses import hz_to_mel, mel_to_hz

    bank = mel_filterbank(32000, 8192, 64)
    widths = [int((row > 0).sum()) for row in bank]
    assert bank.max(dim=1).values.min() > 0.95  # every filter reaches (about) 1 at its centre bin
    assert float(bank.max()) <= 1.0 + 1e-6 and widths[-1] > 10 * widths[0]  # wider at the top, not lower
    # a full-scale tone at a filter's centre: its mel value is about its STFT peak magnitude (not 1/bandwidth of it)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(0.0))), float(hz_to_mel(torch.tensor(16000.0))), 66))
    centre = float(edges[41])
    t = torch.arange(32000) / 32000
    tone = torch.sin(2 * math.pi * centre * t)
    spec = torch.stft(tone, 8192, 2048, window=torch.hann_window(8192), return_complex=True).abs()[:, 4:-4]
    mel = bank @ spec
    assert int(mel.mean(-1).argmax()) == 40
    assert 1.0 < float(mel[40].mean() / spec.max(0).values.mean()) < 3.0  # the Hann main lobe: about 2 bins
    # linear-mel and log-mel terms of the loss now pull with comparable force on a detuned tone
    x = torch.sin(2 * math.pi * 400 * t)[None, None].requires_grad_(True)
    y = torch.sin(2 * math.pi * 440 * t)[None, None]
    loss = MultiScaleMelLoss(32000)
    lin = sum(torch.nn.functional.l1_loss(m(x), m(y)) for m in loss.mels) / len(loss.mels)
    grad_lin, = torch.autograd.grad(lin, x)
    grad_all, = torch.autograd.grad(loss(x, y), x)
    assert float(grad_lin.norm() / grad_all.norm()) > 0.05


def test_multi_resolution_stft_loss_hears_a_semitone():
    from openmagnet.train.codec.losses import MultiResolutionSTFTLoss, stft_sizes

    assert stft_sizes(32000) == (256, 512, 1024, 2048, 4096, 8192) and stft_sizes(16000)[-1] == 4096
    t = torch.arange(32000) / 32000
    a4 = torch.sin(2 * math.pi * 440 * t)[None, None]
    loss = MultiResolutionSTFTLoss(32000)
    same = loss(a4, a4)
    assert float(same["stft"]) == 0.0 and float(same["log_stft"]) == 0.0
    semitone = loss(torch.sin(2 * math.pi * 440 * 2 ** (1 / 12) * t)[None, None], a4)
    quarter = loss(torch.sin(2 * math.pi * 440 * 2 ** (1 / 48) * t)[None, None], a4)
    assert float(semitone["stft"]) > float(quarter["stft"]) > 0  # more detuned, larger loss
