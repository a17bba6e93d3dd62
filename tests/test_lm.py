"""The transformer (openmagnet/lm.py): positions, the restricted window seen from the model, null conditions."""
import pytest
import torch

from tests.conftest import load_fixture_model
from openmagnet.lm import sin_embedding


def test_sin_embedding_cos_first_and_half_minus_one_divisor():
    emb = sin_embedding(4, 8)  # half = 4, frequencies 10000 ** -(i / 3)
    t, i = 3, 2
    phase = t / 10000 ** (i / 3)
    assert emb.shape == (1, 4, 8)
    assert emb[0, t, i].item() == pytest.approx(torch.cos(torch.tensor(phase)).item(), abs=1e-6)
    assert emb[0, t, 4 + i].item() == pytest.approx(torch.sin(torch.tensor(phase)).item(), abs=1e-6)
    assert torch.equal(emb[0, 0, :4], torch.ones(4))


def test_codebooks_above_zero_only_see_five_frames():
    """Changing frame 20 moves stage-1 logits only within frames 15..25 (one layer = +-5; two
    layers = +-10), but moves every frame at stage 0."""
    model = load_fixture_model("music10")
    lm = model.lm
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (1, 4, 48), generator=g)
    codes[:, 2:] = 2048
    other = codes.clone()
    other[0, 0, 20] = (other[0, 0, 20] + 1) % 2048
    cond = torch.randn(1, 5, lm.cfg.dim, generator=g)
    with torch.no_grad():
        diff1 = (lm.stage_logits(codes, cond, 1) - lm.stage_logits(other, cond, 1)).abs().amax(-1)[0]
        diff0 = (lm.stage_logits(codes, cond, 0) - lm.stage_logits(other, cond, 0)).abs().amax(-1)[0]
    reach = 5 * lm.cfg.num_layers
    changed = (diff1 > 0).nonzero().flatten()
    assert changed.min() >= 20 - reach and changed.max() <= 20 + reach
    assert (diff0 > 0).all()


def test_null_condition_gives_zero_cross_attention():
    model = load_fixture_model("music10")
    layer = model.lm.transformer.layers[0]
    x = torch.randn(1, 6, model.lm.cfg.dim)
    kv = layer.cross_attention.cross_kv(torch.zeros(1, 4, model.lm.cfg.dim))
    assert torch.count_nonzero(layer.cross_attention.cross_attention(x, kv)) == 0


def test_null_rows_skip_cross_attention_exactly():
    """Rows past the condition's batch get the null condition: same result as passing zeros."""
    model = load_fixture_model("music10")
    lm = model.lm
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 2049, (4, 4, 24), generator=g)
    cond = torch.randn(2, 5, lm.cfg.dim, generator=g)
    full = torch.cat([cond, torch.zeros_like(cond)])
    with torch.no_grad():
        skipped = lm.stage_logits(codes, None, 2, lm.cross_kv(cond))
        reference = lm.stage_logits(codes, full, 2)
    assert (skipped - reference).abs().max().item() <= 1e-5


def test_a_first_stage_kernel_is_told_its_stage_by_the_call():
    """int8-hybrid's kernels serve codebook 0 only: the call says which stage it computes (no state on the model),
    so the order of the calls does not matter and the later stages use the float weight, bit for bit."""
    from openmagnet.lm import FirstStageKernel

    from openmagnet import MAGNeT
    from tests.conftest import FIXTURES

    lm = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu").lm  # its own: the kernels below change it
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (1, 4, 12), generator=g)
    cond = torch.randn(1, 3, lm.cfg.dim, generator=g)
    with torch.no_grad():
        float_logits = [lm.stage_logits(codes, cond, stage) for stage in range(4)]
    calls = []

    def counting(layer):
        def kernel(x):
            calls.append(layer)
            return torch.nn.functional.linear(x, layers[layer].linear1.weight) * 0.5  # visibly not the float one
        return kernel

    layers = lm.transformer.layers
    for i, layer in enumerate(layers):
        layer.kernels["linear1"] = FirstStageKernel(counting(i))
    with torch.no_grad():
        for stage in (3, 1, 2):
            assert torch.equal(lm.stage_logits(codes, cond, stage), float_logits[stage])
        assert calls == []
        first = lm.stage_logits(codes, cond, 0)
        assert calls == list(range(len(layers))) and not torch.equal(first, float_logits[0])
        assert torch.equal(lm.stage_logits(codes, cond, 1), float_logits[1])  # after a stage-0 call too
    assert not hasattr(lm, "stage_now")
