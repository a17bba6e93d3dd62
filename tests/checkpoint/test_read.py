"""Reading a model whatever its layout (openmagnet/checkpoint/read.py), and building it (build.load_model, the
body of MAGNeT.get_pretrained): the same tensors and configs from audiocraft's files and from a save_pretrained
folder."""
import torch

from tests.conftest import FIXTURES, load_fixture_model
from openmagnet import MAGNeT
from openmagnet.checkpoint import (CODEC_FILE, CODEC_HF_FILE, LM_FILE, LM_SAFETENSORS_FILE, load_model, load_package,
                                   parse_xp_cfg, read_model_files)


def test_both_layouts_read_to_the_same_packages(tmp_path):
    ac = read_model_files(FIXTURES / "music10")
    assert (ac.lm_source, ac.codec_source) == (str(FIXTURES / "music10" / LM_FILE),
                                               str(FIXTURES / "music10" / CODEC_FILE))
    assert ac.summary is None and ac.generation is None
    assert ac.xp_cfg == parse_xp_cfg(load_package(FIXTURES / "music10" / LM_FILE)["xp.cfg"], "lm")
    saved = load_fixture_model("music10").save_pretrained(tmp_path / "hf")
    hf = read_model_files(saved)
    assert (hf.lm_source, hf.codec_source) == (str(saved / LM_SAFETENSORS_FILE), str(saved / CODEC_HF_FILE))
    assert hf.xp_cfg == ac.xp_cfg and hf.codec_cfg == ac.codec_cfg
    assert hf.summary["sample_rate"] == 32000 and hf.summary["source"] == str(saved / "config.json")
    ours, theirs = hf.lm_package["best_state"], ac.lm_package["best_state"]
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k].float()) for k in theirs)
    one_file = read_model_files(saved / LM_SAFETENSORS_FILE)  # a file alone: its codec from the same folder
    assert (one_file.lm_source, one_file.codec_source) == (str(saved / LM_SAFETENSORS_FILE),
                                                           str(saved / CODEC_HF_FILE))


def test_load_model_gives_what_the_constructor_needs():
    cpu = torch.device("cpu")
    loaded = load_model(FIXTURES / "music10", device=cpu, dtype=torch.float32, codec_device=cpu)
    assert loaded.fast_mode is None and not loaded.lm.banded_attention and loaded.lm.quantized is None
    model = MAGNeT(**loaded.parts())
    reference = load_fixture_model("music10")  # through MAGNeT.get_pretrained
    assert model.name == str(FIXTURES / "music10") and model.text_config == reference.text_config
    for mine, theirs in ((model.lm, reference.lm), (model.compression_model, reference.compression_model)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    text = load_model(FIXTURES / "music10", device=cpu, dtype=torch.float32, codec_device=cpu, text_encoder="my/t5")
    assert text.text.name == "my/t5" and text.text.dim == reference.text_config.dim
