"""The official small architecture (420M-parameter LM, 24 layers, width 1024) through the transformers face: a
released-layout checkpoint with random fp16 weights (the fixtures' xp.cfg at the small scale, their tiny T5 and codec),
converted to transformers and back. Slow (a few minutes, ~6 GB of memory and disk): run with OPENMAGNET_SLOW=1."""
import os
import warnings

import numpy as np
import pytest
import torch

from openmagnet import MAGNeT
from openmagnet.checkpoint import CODEC_FILE, LM_FILE, export_model, load_package, parse_xp_cfg
from openmagnet.cli import main
from openmagnet.config import LM_PRESETS, LMConfig
from openmagnet.lm import MagnetLM
from tests.conftest import FIXTURES
from tests.convert.test_command import assert_same_package

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.environ.get("OPENMAGNET_SLOW"), reason="slow: set OPENMAGNET_SLOW=1")]


def small_checkpoint(folder):
    """state_dict.bin of the small scale (music10's xp.cfg with the small preset's sizes, random weights in fp16, as
    released) beside music10's codec."""
    pkg = load_package(FIXTURES / "music10" / LM_FILE)
    xp = parse_xp_cfg(pkg["xp.cfg"], "music10")
    xp["transformer_lm"].update(LM_PRESETS["small"])
    torch.manual_seed(0)
    lm = MagnetLM(LMConfig(**LM_PRESETS["small"], text_dim=768))
    with torch.no_grad():
        for p in lm.parameters():
            p.normal_(0, 0.02)
    return export_model(folder, lm.state_dict(), xp, load_package(FIXTURES / "music10" / CODEC_FILE))


def test_small_scale_converts_and_generates_as_magnet(tmp_path, capsys):
    import openmagnet.transformers  # noqa: F401  (registers MAGNeT with the Auto classes)
    from transformers import pipeline

    src = small_checkpoint(tmp_path / "small")
    assert main(["convert", "--to", "transformers", str(src), str(tmp_path / "tf"), "--quiet"]) == 0
    assert main(["convert", "--to", "audiocraft", str(tmp_path / "tf"), str(tmp_path / "ac"), "--quiet"]) == 0
    for file in (LM_FILE, CODEC_FILE):
        assert_same_package(torch.load(src / file, weights_only=True),
                            torch.load(tmp_path / "ac" / file, weights_only=True))
    source = MAGNeT.get_pretrained(src, device="cpu")
    assert sum(p.numel() for p in source.lm.parameters()) == 420_371_456
    source.duration = 0.5
    synth = pipeline("text-to-audio", str(tmp_path / "tf"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the sampling collapsed")
        for sampled in (False, True):
            source.set_generation_params(use_sampling=sampled, decoding_steps=[2, 1, 1, 1])
            torch.manual_seed(11)
            wav = source.generate(["happy rock"])
            torch.manual_seed(11)
            heard = synth("happy rock", forward_params={"do_sample": sampled, "duration": 0.5,
                                                        "decoding_steps": [2, 1, 1, 1]})
            np.testing.assert_allclose(heard["audio"], wav[0, 0].numpy(), rtol=0, atol=1e-6)
