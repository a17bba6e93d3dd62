"""Export of a trained model in audiocraft's layout (train/export.py): tiny random LMs with the fixtures'
configurations. Codec resolution (checkpoint.resolve_codec) is tested in tests/checkpoint/test_build.py."""
import os

import pytest
import torch
import yaml

from tests.conftest import FIXTURES
from openmagnet import CheckpointError, MAGNeT
from openmagnet.checkpoint import CODEC_FILE, LM_FILE, LM_SAFETENSORS_FILE, lm_from_package, load_package, \
    resolve_codec
from openmagnet.codec import HFEncodec
from openmagnet.config import LMConfig, lm_config_from_xp, text_config_from_xp
from openmagnet.lm import MagnetLM
from openmagnet.train.export import build_xp_cfg, export_model

FILES = {LM_FILE, CODEC_FILE, LM_SAFETENSORS_FILE}
# what each fixture's released-like xp.cfg says about training
XP_ARGS = {
    "music10": dict(task="music", sample_rate=32000, codec_checkpoint="//pretrained/facebook/encodec_32khz",
                    cfg_dropout=0.3, word_dropout=0.3),
    "sound10": dict(task="sound", sample_rate=16000, codec_checkpoint="//reference/bd44a852/checkpoint.th",
                    cfg_dropout=0.1, word_dropout=0.0),
}


def fixture_xp(name):
    return yaml.safe_load(load_package(FIXTURES / name / LM_FILE)["xp.cfg"])


def random_lm(name, seed=0):
    """(MagnetLM with seeded random float32 weights, LMConfig, TextConfig) shaped like fixture `name`."""
    _, lm_cfg, text_cfg = lm_from_package(load_package(FIXTURES / name / LM_FILE), name, torch.device("cpu"),
                                          torch.float32)
    lm = MagnetLM(lm_cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lm.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return lm.eval(), lm_cfg, text_cfg


def export_random(name, out, seed=0, codec=None):
    lm, lm_cfg, text_cfg = random_lm(name, seed)
    xp = build_xp_cfg(lm_cfg, text_cfg, **XP_ARGS[name], extra={"openmagnet": {"step": 123}})
    _, codec_pkg = resolve_codec(codec or FIXTURES / name)
    export_model(out, lm.state_dict(), xp, codec_pkg)
    return lm


def rounded(state):
    return {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}


# ------------------------------------------------------------------------------------------------ xp.cfg
@pytest.mark.parametrize("name", ["music10", "sound10"])
def test_xp_cfg_round_trips_to_the_configs(name):
    _, lm_cfg, text_cfg = random_lm(name)
    xp = build_xp_cfg(lm_cfg, text_cfg, **XP_ARGS[name])
    xp = yaml.safe_load(yaml.safe_dump(xp, sort_keys=False))
    assert lm_config_from_xp(xp, text_dim=lm_cfg.text_dim) == lm_cfg
    assert text_config_from_xp(xp, text_dim=text_cfg.dim) == text_cfg
    assert xp["solver"] == {"music10": "magnet", "sound10": "audio_magnet"}[name]
    assert xp["transformer_lm"]["memory_efficient"] is True and xp["fuser"]["cross"] == ["description"]


@pytest.mark.parametrize("name", ["music10", "sound10"])
def test_xp_cfg_from_a_released_like_base_changes_nothing_it_does_not_know(name):
    """Built on the fixture's own xp.cfg with the same facts, the config comes back unchanged."""
    _, lm_cfg, text_cfg = random_lm(name)
    base = fixture_xp(name)
    assert build_xp_cfg(lm_cfg, text_cfg, **XP_ARGS[name], base=base) == base
    assert base == fixture_xp(name)  # not modified in place


def test_xp_cfg_base_values_are_overwritten_and_extra_merged():
    _, lm_cfg, text_cfg = random_lm("music10")
    base = fixture_xp("music10")
    base["transformer_lm"].update(dim=1024, num_layers=24, dropout=0.1)
    base["conditioners"]["self_wav"] = {"model": "chroma_stem"}
    xp = build_xp_cfg(lm_cfg, text_cfg, **dict(XP_ARGS["music10"], cfg_dropout=0.2), base=base,
                      extra={"openmagnet": {"step": 7}, "dataset": {"batch_size": 8}})
    assert xp["transformer_lm"]["dim"] == lm_cfg.dim and xp["transformer_lm"]["num_layers"] == lm_cfg.num_layers
    assert xp["transformer_lm"]["dropout"] == 0.1  # training-only value kept
    assert set(xp["conditioners"]) == {"args", "description"}
    assert xp["classifier_free_guidance"]["training_dropout"] == 0.2
    assert xp["openmagnet"] == {"step": 7} and xp["dataset"] == {"segment_duration": 10, "batch_size": 8}


def test_xp_cfg_refuses_what_audiocraft_cannot_store():
    _, lm_cfg, text_cfg = random_lm("music10")
    with pytest.raises(ValueError, match=r"xp.cfg does not describe this model \(max_period: 500.0 -> 10000.0\)"):
        build_xp_cfg(LMConfig(**{**lm_cfg.__dict__, "max_period": 500.0}), text_cfg, **XP_ARGS["music10"])
    with pytest.raises(ValueError, match=r"dim: 32 -> 64\)"):
        build_xp_cfg(lm_cfg, text_cfg, **XP_ARGS["music10"], extra={"transformer_lm": {"dim": 64}})
    with pytest.raises(ValueError, match="text encoder '/data/t5' is not a T5 name audiocraft accepts"):
        build_xp_cfg(lm_cfg, type(text_cfg)(name="/data/t5", dim=768), **XP_ARGS["music10"])
    with pytest.raises(ValueError, match="segment_duration 7.5 s is not a whole number of seconds"):
        build_xp_cfg(LMConfig(**{**lm_cfg.__dict__, "segment_duration": 7.5}), text_cfg, **XP_ARGS["music10"])
    with pytest.raises(ValueError, match="task must be one of music, sound; got 'speech'"):
        build_xp_cfg(lm_cfg, text_cfg, **dict(XP_ARGS["music10"], task="speech"))


# ------------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("name", ["music10", "sound10"])
def test_export_loads_in_openmagnet_with_the_fp16_weights(name, tmp_path):
    lm = export_random(name, tmp_path / "model")
    assert set(os.listdir(tmp_path / "model")) == FILES  # no temporary files left
    model = MAGNeT.get_pretrained(tmp_path / "model", device="cpu")
    expected = rounded(lm.state_dict())
    loaded = model.lm.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    assert model.sample_rate == XP_ARGS[name]["sample_rate"] and model.max_duration == 10
    lm.load_state_dict(expected)
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, lm.cfg.card + 1, (2, lm.cfg.n_q, 30), generator=g)
    cond = torch.randn(1, 5, lm.cfg.dim, generator=g)
    for stage in (0, 2):
        assert torch.equal(model.lm(codes, cond, stage), lm(codes, cond, stage))


def test_export_file_contents(tmp_path):
    from safetensors import safe_open

    export_random("music10", tmp_path)
    pkg = torch.load(tmp_path / LM_FILE, weights_only=True)
    assert set(pkg) == {"best_state", "xp.cfg", "version", "exported", "openmagnet_version"}
    assert pkg["version"] == "1.3.0" and pkg["exported"] is True and isinstance(pkg["openmagnet_version"], str)
    assert {v.dtype for v in pkg["best_state"].values()} == {torch.float16}
    assert yaml.safe_load(pkg["xp.cfg"])["openmagnet"] == {"step": 123}
    codec = torch.load(tmp_path / CODEC_FILE, weights_only=True)
    original = torch.load(FIXTURES / "music10" / CODEC_FILE, weights_only=True)
    assert codec["xp.cfg"] == original["xp.cfg"]
    assert all(torch.equal(codec["best_state"][k], v) for k, v in original["best_state"].items())
    with safe_open(str(tmp_path / LM_SAFETENSORS_FILE), framework="pt") as f:
        assert f.metadata()["xp.cfg"] == pkg["xp.cfg"]
        assert set(f.keys()) == set(pkg["best_state"])
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), pkg["best_state"][key]), key


def test_safetensors_alone_loads(tmp_path):
    lm = export_random("music10", tmp_path)
    (tmp_path / LM_FILE).unlink()
    model = MAGNeT.get_pretrained(tmp_path, device="cpu")
    assert all(torch.equal(model.lm.state_dict()[k], v) for k, v in rounded(lm.state_dict()).items())


def test_export_with_hf_encodec_pointer_loads_and_generates(tmp_path):
    export_random("music10", tmp_path, codec="facebook/encodec_32khz")
    assert torch.load(tmp_path / CODEC_FILE, weights_only=True) == {
        "pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.3.0"}
    model = MAGNeT.get_pretrained(tmp_path, device="cpu")
    assert isinstance(model.compression_model, HFEncodec)
    model.duration = 1.0
    model.set_generation_params(decoding_steps=[2, 1, 1, 1])
    wav = model.generate(["happy rock"], generator=torch.Generator().manual_seed(0))
    assert wav.shape == (1, 1, 48 * 640) and torch.isfinite(wav).all()


def test_failed_export_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    first = export_random("music10", tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in FILES}
    calls = []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the LM file is complete, the codec file fails half way
            f.write(b"partial")
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    real_save = torch.save
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_random("music10", tmp_path, seed=1)
    monkeypatch.undo()
    assert set(os.listdir(tmp_path)) == FILES
    assert {name: (tmp_path / name).read_bytes() for name in FILES} == before
    model = MAGNeT.get_pretrained(tmp_path, device="cpu")
    assert torch.equal(model.lm.state_dict()["linears.0.weight"], first.linears[0].weight.half().float())


def test_export_refuses_a_state_that_does_not_match_the_config(tmp_path):
    lm, lm_cfg, text_cfg = random_lm("music10")
    xp = build_xp_cfg(lm_cfg, text_cfg, **XP_ARGS["music10"])
    _, codec_pkg = resolve_codec(FIXTURES / "music10")
    state = lm.state_dict()
    del state["linears.3.weight"]
    with pytest.raises(CheckpointError, match="lm_state does not match the model: missing: linears.3.weight"):
        export_model(tmp_path / "out", state, xp, codec_pkg)
    state = dict(lm.state_dict(), **{"out_norm.weight": torch.full((lm_cfg.dim,), 1e6)})
    with pytest.raises(ValueError, match=r"lm_state\['out_norm.weight'\] has values that are not finite in float16"):
        export_model(tmp_path / "out", state, xp, codec_pkg)
    assert not (tmp_path / "out").exists()


def test_bundled_form_loads_and_missing_bundle_is_clear(tmp_path):
    from openmagnet import MAGNeT
    from openmagnet.checkpoint import CheckpointError, bundled_model_dir
    from openmagnet.train.export import bundle_model

    out = bundle_model(FIXTURES / "music10", tmp_path / "bundle")
    assert sorted(p.name for p in out.iterdir()) == ["compression.safetensors", "model.safetensors"]
    bundled = MAGNeT.get_pretrained(out, device="cpu")
    original = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu")
    for k, v in original.lm.state_dict().items():
        assert torch.equal(bundled.lm.state_dict()[k], v), k
    codec_b, codec_o = bundled.compression_model.state_dict(), original.compression_model.state_dict()
    for k, v in codec_o.items():
        assert torch.equal(codec_b[k], v.half().float() if v.is_floating_point() else v), k
    if bundled_model_dir("openmagnet/demo") is None:
        with pytest.raises(CheckpointError, match="the bundled model openmagnet/demo is not in this copy"):
            MAGNeT.get_pretrained("openmagnet/demo", device="cpu")


def test_exported_files_are_readable_by_others(tmp_path):
    from openmagnet.files import FILE_MODE
    from openmagnet.train.export import bundle_model

    out = bundle_model(FIXTURES / "music10", tmp_path / "bundle")
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == FILE_MODE, f  # not the private 0600 safetensors writes


def test_a_model_stores_its_generation_settings(tmp_path, monkeypatch, capsys):
    """`export --generation` stores settings with the model: get_pretrained comes with them in force, they are
    the base of recommended_params (CLI, app); a checkpoint without them keeps audiocraft's API defaults."""
    from openmagnet import checkpoint
    from openmagnet.app import engine
    from openmagnet.app.security import Policy
    from openmagnet.cli import main
    from openmagnet.config import GenerationParams
    from openmagnet.train.export import bundle_model

    stored = {"temperature": 1.5, "max_cfg_coef": 3.0, "decoding_steps": (8, 4, 4, 4)}
    out = bundle_model(FIXTURES / "music10", tmp_path / "bundle", generation=stored)
    model = MAGNeT.get_pretrained(out, device="cpu")
    assert model.stored_generation == {"temperature": 1.5, "max_cfg_coef": 3.0, "decoding_steps": [8, 4, 4, 4]}
    assert model.params == GenerationParams(temperature=1.5, max_cfg_coef=3.0, decoding_steps=(8, 4, 4, 4))
    params = model.recommended_params(temperature=2.0)
    assert params["temperature"] == 2.0 and params["max_cfg_coef"] == 3.0 and params["decoding_steps"] == [8, 4, 4, 4]
    assert params["top_p"] == 0.9 and params["span_arrangement"] == "stride1"  # the rest: the demos' recommendation
    released = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu")
    assert released.stored_generation is None and released.params == GenerationParams()
    # the app's settings for a model come from the model's own files, not from its name
    app = engine.Engine(tmp_path / "app", policy=Policy(model_dirs=(tmp_path,)))
    assert app.recommended_params(str(out))["max_cfg_coef"] == 3.0
    # a bundled model's settings are read from its file's metadata, before loading it
    monkeypatch.setattr(checkpoint.read, "bundled_model_dir", lambda name: out)
    assert checkpoint.bundled_generation("openmagnet/demo") == model.stored_generation
    assert checkpoint.bundled_generation("facebook/magnet-small-10secs") is None
    # the command line: settings typed, re-bundling keeps the others, bad ones are one-line errors
    assert main(["export", str(out), "--bundle", "--out", str(tmp_path / "again"), "--generation", "top_p=0.5",
                 "--generation", "use_sampling=false"]) == 0
    again = MAGNeT.get_pretrained(tmp_path / "again", device="cpu")
    assert again.stored_generation == {**model.stored_generation, "top_p": 0.5, "use_sampling": False}
    capsys.readouterr()
    for bad, message in (("temp=1", "--generation temp: unknown setting; known: use_sampling, top_k, top_p, "
                                    "temperature, max_cfg_coef, min_cfg_coef, decoding_steps, span_arrangement, "
                                    "remask_noise, remove_dc, speed, guidance_every, fine_step_share, "
                                    "confidence_stop"),
                         ("top_p=2", "--generation top_p=2: top_p must be in [0, 1] (0 disables nucleus sampling); "
                                     "got 2.0"),
                         ("decoding_steps=1,2", "--generation decoding_steps=1,2: decoding_steps must be 4 positive "
                                                "integers (one per codebook), e.g. [20, 10, 10, 10]; got [1, 2]"),
                         ("use_sampling=maybe", "--generation use_sampling=maybe: expected a bool"),
                         ("top_k", "--generation takes KEY=VALUE, e.g. temperature=1.5; got 'top_k'")):
        assert main(["export", str(out), "--bundle", "--out", str(tmp_path / "bad"), "--generation", bad]) == 2
        assert capsys.readouterr().err == f"openmagnet: error: {message}\n"
