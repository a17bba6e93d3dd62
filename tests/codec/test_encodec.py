"""EnCodec (openmagnet.codec) against golden outputs of audiocraft 1.3.0 (SPEC §6).

Fixtures (made by the peer harness, tests/fixtures/tools): `<name>/compression_state_dict.bin`
(audiocraft export: `best_state` + `xp.cfg`, or the `{'pretrained': ...}` pointer for music10_hf,
resolved offline through tests/fixtures/hf_cache) and `<name>/reference.pt` with
`codec_decode_codes` [1, 4, 50] -> `codec_decode_audio` [1, 1, 50 * hop] and
`codec_encode_audio` [1, 1, 50 * hop] -> `codec_encode_codes` [1, 4, 50].
"""
from __future__ import annotations

import functools
import hashlib
import math

import pytest
import torch
import yaml

from tests.conftest import FIXTURES, assert_same_tokens

from openmagnet.codec import EncodecModel
from openmagnet.config import CodecConfig, codec_config_from_xp

NATIVE = ["music10", "sound10"]  # audiocraft-native codecs: 32 kHz (hop 640), 16 kHz (hop 320)
DECODE_ATOL = 1e-4

# audiocraft 1.3.0 `builders.get_compression_model(codec_xp_cfg('full', task=...))`: parameter
# count, and sha256[:16] of the sorted "key:[shape]" lines of its state_dict (116 entries).
FULL_SIZE = {
    "music": (CodecConfig(), 56_884_674, "719c947de4f23742"),
    "sound": (CodecConfig(sample_rate=16000, ratios=(8, 5, 4, 2)), 56_819_138, "b4aa628d2b2f0101"),
}


@functools.lru_cache(maxsize=None)
def load_package(name: str) -> dict:
    return torch.load(FIXTURES / name / "compression_state_dict.bin", weights_only=True)


@functools.lru_cache(maxsize=None)
def load_reference(name: str) -> dict:
    return torch.load(FIXTURES / name / "reference.pt", weights_only=True)


@functools.lru_cache(maxsize=None)
def native_model(name: str) -> EncodecModel:
    pkg = load_package(name)
    model = EncodecModel(codec_config_from_xp(yaml.safe_load(pkg["xp.cfg"]))).eval()
    model.load_state_dict(pkg["best_state"], strict=True)
    return model


def layout_digest(state_dict: dict) -> str:
    lines = "\n".join(sorted(f"{k}:{list(v.shape)}" for k, v in state_dict.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def tiny_config(**overrides) -> CodecConfig:
    base = dict(sample_rate=16000, dimension=8, n_filters=4, ratios=(8, 5, 4, 2), lstm=1, bins=64)
    return CodecConfig(**{**base, **overrides})


@functools.lru_cache(maxsize=None)
def tiny_model(pad_mode: str) -> EncodecModel:
    torch.manual_seed(0)
    return EncodecModel(tiny_config(pad_mode=pad_mode)).eval()


# ------------------------------------------------------------------------------------------------
# golden parity with audiocraft
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NATIVE)
def test_state_dict_layout_matches_checkpoint(name):
    expected = load_package(name)["best_state"]
    ours = native_model(name).state_dict()
    assert list(ours) == list(expected)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert "encoder.model.0.conv.conv.weight_g" in ours
    assert "decoder.model.3.convtr.convtr.weight_v" in ours
    assert "quantizer.vq.layers.3._codebook.embed_avg" in ours


@pytest.mark.parametrize("name", NATIVE)
def test_decode_matches_audiocraft(name):
    ref = load_reference(name)
    model = native_model(name)
    with torch.no_grad():
        audio = model.decode(ref["codec_decode_codes"])
    expected = ref["codec_decode_audio"]
    assert audio.shape == expected.shape == (1, 1, 50 * model.hop_length)
    err = (audio - expected).abs().max().item()
    assert err <= DECODE_ATOL, f"{name}: max abs error {err:.3g}"


@pytest.mark.parametrize("name", NATIVE)
def test_encode_matches_audiocraft(name):
    ref = load_reference(name)
    with torch.no_grad():
        codes = native_model(name).encode(ref["codec_encode_audio"].float())
    assert codes.dtype == torch.int64
    assert_same_tokens(codes, ref["codec_encode_codes"].long(), f"{name} codec encode")


# ------------------------------------------------------------------------------------------------
# full-size layout (built on the meta device: no memory, no init cost)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", sorted(FULL_SIZE))
def test_full_size_matches_audiocraft_layout(task):
    cfg, n_params, digest = FULL_SIZE[task]
    with torch.device("meta"):
        model = EncodecModel(cfg)
    assert sum(p.numel() for p in model.parameters()) == n_params
    state = model.state_dict()
    assert len(state) == 116
    assert layout_digest(state) == digest
    assert tuple(state["encoder.model.13.lstm.weight_ih_l1"].shape) == (4096, 1024)


# ------------------------------------------------------------------------------------------------
# lengths, shapes, properties, errors (tiny random models)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
@pytest.mark.parametrize("length", [1, 320, 321, 1000])
def test_lengths(pad_mode, length):
    model = tiny_model(pad_mode)
    hop = model.hop_length
    with torch.no_grad():
        codes = model.encode(torch.randn(2, 1, length))
        frames = math.ceil(length / hop)
        assert codes.shape == (2, model.num_codebooks, frames) and codes.dtype == torch.int64
        assert 0 <= int(codes.min()) and int(codes.max()) < model.cardinality
        assert model.decode_latent(codes).shape == (2, 8, frames)
        assert model.decode(codes).shape == (2, 1, frames * hop)


def test_properties():
    model = EncodecModel(CodecConfig(sample_rate=16000, dimension=8, n_filters=4, ratios=(8, 5, 4, 2), lstm=0))
    assert (model.sample_rate, model.frame_rate, model.channels) == (16000, 50.0, 1)
    assert (model.num_codebooks, model.cardinality, model.hop_length) == (4, 2048, 320)
    assert not any("lstm" in k for k in model.state_dict())


def test_user_errors():
    model = tiny_model("constant")
    with pytest.raises(ValueError, match="wav must be"):
        model.encode(torch.zeros(1, 2, 320))
    with pytest.raises(ValueError, match="codes must lie"):
        model.decode(torch.full((1, 4, 3), 64))
    with pytest.raises(ValueError, match="K=4"):
        model.decode(torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model.decode(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="pad_mode"):
        EncodecModel(tiny_config(pad_mode="replicate"))
