"""VGGish and the FAD recipe (openmagnet/evaluation/vggish.py) against the official code: torchvggish 0.2 and
audiocraft's FAD recipe run by the peer-metrics harness on random weights in the released layout
(fixtures/metrics_golden.pt, see metrics_golden.py); the weights are rebuilt here from the same seed."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from openmagnet.evaluation.frechet import FrechetStats, frechet_distance
from openmagnet.evaluation.vggish import VGGish, fad_examples, log_mel, mel_matrix
from tests.evaluation.metrics_golden import CLIPS, VGGISH_SEED, clip, randomize_

GOLDEN = Path(__file__).parent / "fixtures" / "metrics_golden.pt"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope="module")
def vggish_file(tmp_path_factory):
    """The fabricated `vggish-10086976.pth`: a plain state dict of random weights (harness seed 41, He gain)."""
    model = VGGish()
    randomize_(model, VGGISH_SEED, gain=math.sqrt(2))
    path = tmp_path_factory.mktemp("weights") / "vggish-10086976.pth"
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def test_mel_matrix_has_vggish_shape_and_edges():
    m = mel_matrix(257)
    assert m.shape == (257, 64) and (m[0] == 0).all() and (m >= 0).all()
    hz = np.linspace(0, 8000, 257)
    used = hz[(m > 0).any(1)]
    assert used.min() > 125 and used.max() < 7500  # 125-7500 Hz triangles
    assert log_mel(np.zeros(16000)).shape == (98, 64)  # 1 s -> 98 frames of 10 ms


def test_fad_recipe_matches_the_official_code(golden, vggish_file):
    """Windows, log-mel examples and pre-ReLU embeddings of every clip (and its reversed target), then the
    Frechet distance, against torchvggish + the FAD tool's recipe on the same random weights."""
    model = VGGish.load(str(vggish_file))
    names = sorted(CLIPS)
    pcm_clip = clip(names[1])
    from openmagnet.audio import convert_audio

    mono = convert_audio(pcm_clip[None], 32000, 16000, 1)[0, 0]
    examples = fad_examples(mono)
    torch.testing.assert_close(examples, golden["fad/tests/clip1/examples"], atol=2e-5, rtol=0)
    for side, key in (("tests", False), ("background", True)):
        frames = [model.embed_fad(clip(n).flip(-1) if key else clip(n), 32000) for n in names]
        rows = torch.cat(frames)
        owner = torch.cat([torch.full((f.shape[0],), i) for i, f in enumerate(frames)])
        assert torch.equal(owner, golden[f"fad/{side}/window_clip"])  # 5, 1 and 0 windows (a 0.5-s clip has none)
        torch.testing.assert_close(rows, golden[f"fad/{side}/embeddings"], atol=1e-4, rtol=1e-4)
    gen = FrechetStats.of(torch.cat([model.embed_fad(clip(n), 32000) for n in names]))
    ref = FrechetStats.of(torch.cat([model.embed_fad(clip(n).flip(-1), 32000) for n in names]))
    np.testing.assert_allclose(gen.mean, golden["fad/tests/mu"].numpy(), atol=1e-4)
    np.testing.assert_allclose(gen.cov, golden["fad/tests/sigma"].numpy(), atol=1e-3, rtol=1e-3)
    assert frechet_distance(gen, ref) == pytest.approx(float(golden["fad/value"]), rel=1e-4)


def test_vggish_loading_is_strict_and_says_what_is_wrong(vggish_file, tmp_path):
    state = torch.load(vggish_file, weights_only=True)
    state.pop("embeddings.4.bias")
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "vggish-10086976.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"^VGGish: .*vggish-10086976.pth does not match the model: missing: "
                                         r"embeddings.4.bias; unexpected: extra.weight; is it the right file\?$"):
        VGGish.load(str(bad))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"^VGGish: .*junk.pth is not a readable weights file"):
        VGGish.load(str(tmp_path / "junk.pth"))


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("OPENMAGNET_EVAL_HOME", raising=False)
    with pytest.raises(FileNotFoundError, match=r"^VGGish \(FAD\), the torch-hub port of the TF model: "
                                                r"vggish-10086976.pth not found in .*torch/hub/checkpoints; "
                                                r"download it from https://"):
        VGGish.load()
    nested = tmp_path / "home" / "deep" / "er"
    nested.mkdir(parents=True)
    monkeypatch.setenv("OPENMAGNET_EVAL_HOME", str(tmp_path / "home"))
    from openmagnet.evaluation.weights import VGGISH, find_weights

    (nested / "vggish-10086976.pth").write_bytes(b"x")
    assert find_weights(VGGISH) == nested / "vggish-10086976.pth"  # any depth
