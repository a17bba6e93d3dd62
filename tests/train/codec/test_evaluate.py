"""Codec evaluation (openmagnet/train/codec/evaluate.py): metrics and baselines on a tiny manifest."""
from __future__ import annotations

import math

import torch

from openmagnet.train.codec.quantizer import TrainableEncodec
from tests.train.codec.conftest import clip, tiny_cfg


def test_evaluate_codec_reports_metrics_and_baselines(manifest, tmp_path):
    from openmagnet.train.codec.evaluate import evaluate_codec

    model = TrainableEncodec(tiny_cfg())
    model.train()(clip(), torch.Generator().manual_seed(0))
    row = evaluate_codec(model.model.eval(), manifest, n_clips=3, seconds=0.5, batch_size=2)
    assert row["clips"] == 3
    for key in ("mel_distance", "si_sdr", "lowpass4k_mel_distance", "mulaw8_si_sdr", "used_3", "perplexity_0"):
        assert math.isfinite(row[key]), key
    assert row["mulaw8_si_sdr"] > 20 and row["mulaw8_mel_distance"] < row["mel_distance"]
    assert 0 < row["used_0"] <= 1 and 1 <= row["perplexity_0"] <= 64
    for key in ("chroma_corr", "framerate_energy", "input_framerate_energy", "tone_440_cents", "tone_max_cents"):
        assert math.isfinite(row[key]), key
    assert row["mulaw8_chroma_corr"] > 0.95 and 0 <= row["framerate_energy"] <= 1


# ------------------------------------------------------------------------------------------------
# The metrics that hear pitch, on signals with known answers
# ------------------------------------------------------------------------------------------------
def _sine(freq, seconds=2.0, sr=32000):
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return torch.sin(2 * math.pi * freq * t).float()


def test_peak_frequency_finds_a_sines_pitch():
    from openmagnet.train.codec.evaluate import peak_frequency

    for f in (55.0, 110.0, 261.63, 440.0, 1234.5, 3520.0, 7040.0):
        assert abs(1200 * math.log2(float(peak_frequency(_sine(f, 1.0), 32000)) / f)) < 1.0  # within a cent
    noisy = _sine(440.0, 1.0) + 0.3 * torch.randn(32000, generator=torch.Generator().manual_seed(0))
    assert abs(float(peak_frequency(noisy, 32000)) - 440.0) < 0.5


def test_chroma_names_the_pitch_class_and_correlation_tells_notes_apart():
    from openmagnet.train.codec.evaluate import chroma, chroma_correlation

    a4, c4, e4 = _sine(440.0), _sine(261.63), _sine(329.63)
    assert int(chroma(a4, 32000).sum(-1).argmax()) == 9 and int(chroma(c4, 32000).sum(-1).argmax()) == 0
    assert int(chroma(_sine(110.0), 32000).sum(-1).argmax()) == 9  # octaves share the class
    same = torch.stack([c4 + e4, a4])[:, None]  # [B, C, L]
    other = torch.stack([a4, c4 + e4])[:, None]
    assert torch.allclose(chroma_correlation(same, same, 32000), torch.ones(2), atol=1e-5)
    assert (chroma_correlation(0.2 * same, same, 32000) > 0.999).all()  # loudness does not count
    assert (chroma_correlation(other, same, 32000) < 0.1).all()
    octave_up = torch.stack([_sine(523.26) + _sine(659.26), _sine(880.0)])[:, None]
    assert (chroma_correlation(octave_up, same, 32000) > 0.9).all()


def test_frame_rate_energy_share():
    from openmagnet.train.codec.evaluate import frame_rate_energy

    assert float(frame_rate_energy(_sine(400.0), 32000, 50.0)) > 0.999  # 400 Hz is the 8th multiple of 50 Hz
    assert float(frame_rate_energy(_sine(425.0), 32000, 50.0)) < 1e-3  # half-way between multiples
    buzz = _sine(440.0) + _sine(800.0) + _sine(850.0)
    assert abs(float(frame_rate_energy(buzz, 32000, 50.0)) - 2 / 3) < 0.01
    noise = torch.randn(4, 5 * 32000, generator=torch.Generator().manual_seed(0))
    share = frame_rate_energy(noise, 32000, 50.0)  # white noise: the bands' share of the spectrum, 4 Hz in 50
    assert ((share > 0.07) & (share < 0.1)).all()


class _Shifter(torch.nn.Module):
    """A stand-in codec that plays everything `cents` sharp (resampling): the probes must measure exactly that."""

    sample_rate, channels = 32000, 1

    def __init__(self, cents):
        super().__init__()
        self.ratio = 2 ** (cents / 1200)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def encode(self, wav):
        return wav

    def decode(self, wav):
        L = wav.shape[-1]
        positions = torch.arange(L, dtype=torch.float64) * self.ratio
        i = positions.floor().long().clamp(max=L - 2)
        frac = (positions - i).float()
        return (wav[..., i] * (1 - frac) + wav[..., i + 1] * frac)


def test_tone_probes_measure_a_detuned_codec_in_cents():
    from openmagnet.train.codec.evaluate import tone_probes

    exact = tone_probes(_Shifter(0.0))
    assert exact["tone_max_cents"] < 0.5
    sharp = tone_probes(_Shifter(30.0), freqs=(220.0, 440.0, 880.0))
    assert all(abs(sharp[f"tone_{f}_cents"] - 30.0) < 1.0 for f in (220, 440, 880))
    assert abs(sharp["tone_max_cents"] - 30.0) < 1.0
