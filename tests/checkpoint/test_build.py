"""Strict, safe loading (openmagnet/checkpoint/build.py over strict.py): every tensor lands, every parameter comes
from the file, and a broken checkpoint is named in one clear error; codec resolution for training
(checkpoint.resolve_codec)."""
import dataclasses
import pathlib
import shutil

import pytest
import torch

from tests.conftest import FIXTURES, HUB_ID, cfg_condition, load_fixture_model, reference
from openmagnet import CheckpointError, MAGNeT
from openmagnet.checkpoint import CODEC_FILE, LM_FILE, parse_xp_cfg, resolve_codec
from openmagnet.codec import EncodecModel, HFEncodec
from openmagnet.config import LM_PRESETS, LMConfig
from openmagnet.lm import MagnetLM


def copy_fixture(tmp_path, name="music10"):
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest)
    return dest


def rewrite_lm(path, edit):
    pkg = torch.load(path / "state_dict.bin", weights_only=True)
    edit(pkg["best_state"])
    torch.save(pkg, path / "state_dict.bin")


@pytest.mark.parametrize("name", ["music10", "sound10"])
def test_every_tensor_lands(name):
    model = load_fixture_model(name)
    saved = torch.load(FIXTURES / name / "state_dict.bin", weights_only=True)["best_state"]
    live = model.lm.state_dict()
    assert set(saved) == set(live)
    assert sum(v.numel() for v in saved.values()) == sum(p.numel() for p in model.lm.parameters())
    for key, value in saved.items():
        assert value.dtype == torch.float16  # released layout: fp16 best_state
        assert torch.equal(live[key], value.float()), key
    assert not any(p.is_meta for p in model.lm.parameters())
    codec_saved = torch.load(FIXTURES / name / "compression_state_dict.bin", weights_only=True)["best_state"]
    codec_live = model.compression_model.state_dict()
    assert set(codec_saved) == set(codec_live)
    for key, value in codec_saved.items():
        assert torch.equal(codec_live[key], value), key


@pytest.fixture
def native_bf16_cpu(monkeypatch):
    """A CPU with native bf16, whatever this one has: get_pretrained refuses bf16 on a CPU without
    it (a trap for speed, not for the numbers these tests check)."""
    from openmagnet import hardware

    native = dataclasses.replace(hardware.cpu_info(), bf16_native=True)
    monkeypatch.setattr(hardware, "cpu_info", lambda: native)


def test_bfloat16_load_casts_the_transformer_matrices_only(native_bf16_cpu):
    """bf16 applies to the attention and feed-forward matrices; embeddings, norms, text projection
    and output heads stay float32, so the residual stream and the logits are float32."""
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", dtype=torch.bfloat16)
    low = {k for k, p in model.lm.named_parameters() if p.dtype == torch.bfloat16}
    high = {k for k, p in model.lm.named_parameters() if p.dtype == torch.float32}
    assert len(low) + len(high) == len(list(model.lm.parameters()))
    assert low == {k for k in high | low if k.startswith("transformer.layers.") and
                   k.split(".", 3)[3] in ("self_attn.in_proj_weight", "self_attn.out_proj.weight",
                                          "cross_attention.in_proj_weight", "cross_attention.out_proj.weight",
                                          "linear1.weight", "linear2.weight")}
    assert "emb.0.weight" in high and "linears.3.weight" in high and "out_norm.weight" in high
    assert model.lm.dtype == torch.bfloat16
    assert {p.dtype for p in model.compression_model.parameters()} == {torch.float32}


def test_missing_tensor_is_named(tmp_path):
    path = copy_fixture(tmp_path)
    rewrite_lm(path, lambda s: s.pop("transformer.layers.1.linear2.weight"))
    with pytest.raises(CheckpointError, match=r"missing: transformer\.layers\.1\.linear2\.weight"):
        MAGNeT.get_pretrained(path, device="cpu")


def test_unexpected_tensor_is_named(tmp_path):
    path = copy_fixture(tmp_path)
    rewrite_lm(path, lambda s: s.__setitem__("transformer.layers.9.extra.weight", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"unexpected: transformer\.layers\.9\.extra\.weight"):
        MAGNeT.get_pretrained(path, device="cpu")


def test_misshaped_tensor_is_named(tmp_path):
    path = copy_fixture(tmp_path)
    rewrite_lm(path, lambda s: s.__setitem__("linears.2.weight", torch.zeros(2048, 31, dtype=torch.float16)))
    with pytest.raises(CheckpointError, match=r"linears\.2\.weight has shape \[2048, 31\], expected \[2048, 32\]"):
        MAGNeT.get_pretrained(path, device="cpu")


def test_every_problem_is_listed_at_once(tmp_path):
    path = copy_fixture(tmp_path)

    def edit(state):
        state.pop("emb.0.weight")
        state.pop("out_norm.bias")
        state["bogus"] = torch.zeros(1)
    rewrite_lm(path, edit)
    with pytest.raises(CheckpointError) as err:
        MAGNeT.get_pretrained(path, device="cpu")
    message = str(err.value)
    assert "missing: emb.0.weight, out_norm.bias" in message and "unexpected: bogus" in message
    assert "\n" not in message


def test_missing_codec_tensor_is_named(tmp_path):
    path = copy_fixture(tmp_path)
    pkg = torch.load(path / "compression_state_dict.bin", weights_only=True)
    pkg["best_state"].pop("decoder.model.0.conv.conv.weight_g")
    torch.save(pkg, path / "compression_state_dict.bin")
    with pytest.raises(CheckpointError, match=r"compression_state_dict\.bin does not match the model: "
                                              r"missing: decoder\.model\.0\.conv\.conv\.weight_g"):
        MAGNeT.get_pretrained(path, device="cpu")


@pytest.mark.parametrize("filename", ["state_dict.bin", "compression_state_dict.bin"])
def test_truncated_file_is_named(tmp_path, filename):
    path = copy_fixture(tmp_path)
    data = (path / filename).read_bytes()
    (path / filename).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{filename}: cannot read this checkpoint, it is truncated or corrupt"):
        MAGNeT.get_pretrained(path, device="cpu")


def test_garbage_file_is_named(tmp_path):
    path = copy_fixture(tmp_path)
    (path / "state_dict.bin").write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(CheckpointError, match=r"state_dict\.bin: cannot read this checkpoint"):
        MAGNeT.get_pretrained(path, device="cpu")


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a checkpoint that needs arbitrary unpickling is refused, not executed."""
    path = copy_fixture(tmp_path)
    pkg = torch.load(path / "state_dict.bin", weights_only=True)
    pkg["payload"] = pathlib.PurePosixPath("/etc")  # any class outside the weights-only allow-list
    torch.save(pkg, path / "state_dict.bin")
    with pytest.raises(CheckpointError, match=r"state_dict\.bin: refused: its pickle asks for Unsupported global: "
                                              r"GLOBAL pathlib\.PurePosixPath was not an allowed global by default, "
                                              r"which torch's weights-only loader does not allow"):
        MAGNeT.get_pretrained(path, device="cpu")


def test_directory_without_codec(tmp_path):
    path = copy_fixture(tmp_path)
    (path / "compression_state_dict.bin").unlink()
    with pytest.raises(CheckpointError, match="has no compression_state_dict.bin"):
        MAGNeT.get_pretrained(path, device="cpu")


def test_explicit_files(tmp_path):
    path = copy_fixture(tmp_path)
    other = tmp_path / "codec_elsewhere"
    other.mkdir()
    shutil.move(path / "compression_state_dict.bin", other / "compression_state_dict.bin")
    model = MAGNeT.get_pretrained(path / "state_dict.bin", device="cpu",
                                  codec=other / "compression_state_dict.bin")
    assert model.sample_rate == 32000 and model.max_duration == 10


def test_missing_path():
    with pytest.raises(CheckpointError, match=r"^\./no/such/model: no such local folder or file$"):
        MAGNeT.get_pretrained("./no/such/model", device="cpu")


def test_hub_id_resolves_through_the_hub_cache():
    model = MAGNeT.get_pretrained(HUB_ID, device="cpu")
    assert model.name == HUB_ID and model.sample_rate == 32000
    model.set_generation_params(use_sampling=False, decoding_steps=[20, 10, 10, 10])
    _, tokens = model.generate(["happy rock", "energetic EDM with a big drop at 128 bpm"], return_tokens=True)
    assert torch.equal(tokens, reference("music10")["gen_nonoverlap"].long())


def test_hub_id_offline_says_how_to_use_a_local_directory():
    with pytest.raises(CheckpointError) as err:
        MAGNeT.get_pretrained("facebook/magnet-medium-10secs", device="cpu")
    assert str(err.value) == (
        "facebook/magnet-medium-10secs is not a local folder, the Hugging Face hub cannot be reached (offline mode is "
        "on (HF_HUB_OFFLINE)) and its cache does not hold state_dict.bin: use a local model folder holding "
        "state_dict.bin and compression_state_dict.bin, or unset HF_HUB_OFFLINE to download it")


def test_xp_cfg_with_interpolations_parses():
    cfg = parse_xp_cfg("dataset:\n  batch_size: 192\n  valid:\n    batch_size: ${dataset.batch_size}\n"
                       "transformer_lm:\n  dim: 1024\n", "x")
    assert cfg["dataset"]["valid"]["batch_size"] == "${dataset.batch_size}"
    assert cfg["transformer_lm"]["dim"] == 1024


def test_released_small_layout():
    """SPEC §2.3: the small model has exactly 300 tensors and 420,371,456 parameters."""
    with torch.device("meta"):
        lm = MagnetLM(LMConfig(**LM_PRESETS["small"]))
    state = lm.state_dict()
    assert len(state) == 300
    assert sum(v.numel() for v in state.values()) == 420_371_456
    assert state["transformer.layers.23.self_attn.in_proj_weight"].shape == (3072, 1024)
    assert state["condition_provider.conditioners.description.output_proj.weight"].shape == (1024, 768)
    assert state["emb.3.weight"].shape == (2049, 1024)
    assert state["linears.0.weight"].shape == (2048, 1024)
    with torch.device("meta"):
        medium = MagnetLM(LMConfig(**LM_PRESETS["medium"]))
    assert abs(sum(p.numel() for p in medium.parameters()) - 1.839e9) < 1e6


def test_bfloat16_generation_is_finite_and_close_to_float32(native_bf16_cpu):
    """bf16 weights, fp32 guidance and softmax: finite output; logits close to the fp32 ones."""
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", dtype=torch.bfloat16)
    model.set_generation_params(use_sampling=True, temperature=0.01, max_cfg_coef=10.0, decoding_steps=[3, 1, 1, 1])
    audio, tokens = model.generate(["happy rock"], return_tokens=True, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(audio).all() and ((tokens >= 0) & (tokens < 2048)).all()
    ref = reference("music10")
    exact, _, cond = cfg_condition("music10")
    with torch.no_grad():
        fast = model.lm.stage_logits(ref["input_stage1"].long(), cond, 1).float()
        slow = exact.lm.stage_logits(ref["input_stage1"].long(), cond, 1)
    assert (fast - slow).abs().max().item() < 0.1 * slow.abs().max().item()


def test_codec_lstms_are_flattened_after_loading(monkeypatch):
    """Weights assigned from a checkpoint are separate tensors: each LSTM is packed for cuDNN once,
    after the assignment (flatten_parameters is a no-op on CPU, so the calls are recorded)."""
    from openmagnet.checkpoint import CODEC_FILE, codec_from_package, load_package

    calls = []
    flatten = torch.nn.LSTM.flatten_parameters

    def record(self):
        calls.append((self, self.weight_ih_l0.device.type))
        flatten(self)

    monkeypatch.setattr(torch.nn.LSTM, "flatten_parameters", record)
    path = FIXTURES / "music10" / CODEC_FILE
    codec = codec_from_package(load_package(path), str(path), torch.device("cpu"))
    lstms = [m for m in codec.modules() if isinstance(m, torch.nn.LSTM)]
    assert len(lstms) == 2  # encoder and decoder
    for lstm in lstms:
        assert (lstm, "cpu") in calls  # after the weights left the meta device
        assert all(w is p for w, p in zip(lstm._flat_weights, lstm.parameters(), strict=True))


# ------------------------------------------------------------------------------------------------ codec resolution
def assert_frozen(codec):
    assert not codec.training
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in codec.parameters())


@pytest.mark.parametrize("spec", [FIXTURES / "music10", FIXTURES / "music10" / CODEC_FILE,
                                  str(FIXTURES / "music10"), HUB_ID])
def test_resolve_codec_full_package(spec):
    codec, pkg = resolve_codec(spec)
    assert isinstance(codec, EncodecModel) and codec.sample_rate == 32000
    assert_frozen(codec)
    original = torch.load(FIXTURES / "music10" / CODEC_FILE, weights_only=True)
    assert set(pkg) == set(original) and pkg["xp.cfg"] == original["xp.cfg"]
    assert all(torch.equal(pkg["best_state"][k], v) for k, v in original["best_state"].items())


def test_resolve_codec_pointer_file_and_hf_encodec_id():
    codec, pkg = resolve_codec(FIXTURES / "music10_hf")
    assert isinstance(codec, HFEncodec) and pkg["pretrained"] == "facebook/encodec_32khz"
    codec, pkg = resolve_codec("facebook/encodec_32khz")
    assert isinstance(codec, HFEncodec) and codec.num_codebooks == 4 and codec.frame_rate == 50
    assert_frozen(codec)
    assert pkg == {"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.3.0"}


def test_resolve_codec_errors(tmp_path):
    with pytest.raises(CheckpointError) as err:
        resolve_codec("facebook/no-such-codec")
    assert str(err.value) == (
        "cannot find codec 'facebook/no-such-codec': it is not a local file or directory, and with offline mode "
        "on (HF_HUB_OFFLINE) the hub cache holds neither its compression_state_dict.bin nor a Hugging Face "
        "EnCodec of that name. Pass a directory holding compression_state_dict.bin, that file, a MAGNeT hub id "
        "or an EnCodec hub id such as facebook/encodec_32khz")
    with pytest.raises(CheckpointError, match=r"^\./no/such/dir: no such local folder or file$"):
        resolve_codec("./no/such/dir")
    shutil.copy(FIXTURES / "music10" / LM_FILE, tmp_path / LM_FILE)
    with pytest.raises(CheckpointError, match=f"has no {CODEC_FILE}"):
        resolve_codec(tmp_path)
