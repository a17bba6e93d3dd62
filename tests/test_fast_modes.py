"""The fast modes against exact fp32: banded attention (same maths), bf16 and int8 matrices
(approximate). Each must stay finite under extreme settings and agree with fp32 on the fixtures.
The measured figures on the official small architecture are in bench/results/."""
import pytest
import torch

from conftest import FIXTURES, cfg_condition, reference
from openmagnet import MAGNeT
from openmagnet.attention import attention, attention_reference, banded_attention, restricted_attn_mask
from openmagnet.attention import self_attention_window

FAST = {"bf16": dict(dtype=torch.bfloat16), "int8": dict(quantize="int8"), "int8-all": dict(quantize="int8-all")}
# Teacher-forced bounds on the music10 fixture (measured: bf16 max error 0.33% of the logit scale,
# argmax agreement >= 99.3%; int8-all 0.96% and >= 97.2%).
MAX_REL_ERR = {"bf16": 0.01, "int8": 0.025, "int8-all": 0.025}
MIN_AGREEMENT = {"bf16": 0.98, "int8": 0.95, "int8-all": 0.95}


@pytest.mark.parametrize("seq_len", [1, 7, 16, 17, 65, 100, 333])
@pytest.mark.parametrize("context", [0, 5, 20])
def test_banded_attention_is_the_restricted_attention(seq_len, context):
    g = torch.Generator().manual_seed(seq_len)
    q, k, v = (torch.randn(2, 3, seq_len, 8, generator=g) for _ in range(3))
    mask = restricted_attn_mask(seq_len, context)
    expected = attention_reference(q, k, v, mask)
    for block in (1, 4, 16, 64):
        assert (banded_attention(q, k, v, context, block) - expected).abs().max().item() < 1e-5


def test_banded_attention_has_gradients_like_the_dense_form():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 90, 8, generator=g, requires_grad=True) for _ in range(3))
    banded_attention(q, k, v, 5).square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    attention(q, k, v, restricted_attn_mask(90, 5)).square().sum().backward()
    for fast, dense in zip(grads, (q.grad, k.grad, v.grad), strict=True):
        assert (fast - dense).abs().max().item() < 1e-5


def test_dense_window_is_bit_identical_to_the_mask():
    """Without `banded`, the restricted attention is the reference's dense mask, bit for bit."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 500, 16, generator=g) for _ in range(3))
    assert torch.equal(self_attention_window(q, k, v, 5), attention(q, k, v, restricted_attn_mask(500, 5)))
    assert torch.equal(self_attention_window(q, k, v, None), attention(q, k, v, None))


def test_banded_attention_in_the_model_matches_exact_logits():
    exact, _, cond = cfg_condition("music10")
    fast = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", banded_attention=True)
    assert fast.lm.banded_attention and not exact.lm.banded_attention
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2049, (cond.shape[0], 4, 250), generator=g)
    codes[:, 2:] = 2048
    with torch.inference_mode():
        a, b = exact.lm.stage_logits(codes, cond, 1), fast.lm.stage_logits(codes, cond, 1)
    assert (a - b).abs().max().item() < 1e-4
    assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_exact_mode_is_the_default_on_cpu():
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu")
    assert model.lm.dtype == torch.float32 and not model.lm.banded_attention and model.lm.quantized is None


@pytest.mark.parametrize("mode", list(FAST))
def test_fast_mode_logits_agree_with_float32(mode):
    exact, _, cond = cfg_condition("music10")
    fast = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", **FAST[mode])
    assert fast.lm.banded_attention
    ref = reference("music10")
    for stage in range(4):
        codes = ref[f"input_stage{stage}"].long()
        with torch.inference_mode():
            a, b = exact.lm.stage_logits(codes, cond, stage), fast.lm.stage_logits(codes, cond, stage)
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
        assert (a - b).abs().max().item() < MAX_REL_ERR[mode] * a.abs().max().item(), stage
        assert (a.argmax(-1) == b.argmax(-1)).float().mean().item() >= MIN_AGREEMENT[mode], stage


@pytest.mark.parametrize("mode", list(FAST))
@pytest.mark.parametrize("temperature", [0.01, 3.0])
def test_fast_mode_stays_finite_at_extreme_settings(mode, temperature):
    """Upstream #564 ("probability tensor contains inf, nan") in reduced precision: low temperature
    and CFG 10; the logits, the guidance and the softmax are float32 here, so nothing overflows."""
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", **FAST[mode])
    model.set_generation_params(temperature=temperature, max_cfg_coef=10.0, min_cfg_coef=10.0, top_p=0.0,
                                decoding_steps=[3, 2, 1, 1], span_arrangement="stride1")
    model.duration = 4.0
    audio, tokens = model.generate(["happy rock", "sad piano"], return_tokens=True,
                                   generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(audio).all()
    assert ((tokens >= 0) & (tokens < 2048)).all()


def test_int8_quantizes_the_feed_forward_and_keeps_bf16_attention():
    lm = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", quantize="int8").lm
    layer = lm.transformer.layers[0]
    assert lm.quantized == "int8" and lm.dtype == torch.bfloat16
    assert layer.linear1.weight.is_meta and layer.linear2.weight.is_meta
    assert layer.self_attn.in_proj_weight.dtype == torch.bfloat16 and not layer.self_attn.kernels
    assert set(layer.kernels) == {"linear1", "linear2"}
    lm32 = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", quantize="int8", dtype="float32").lm
    assert lm32.dtype == torch.float32


def test_int8_all_releases_the_float_matrices():
    model = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", quantize="int8-all")
    lm = model.lm
    assert lm.quantized == "int8-all"
    layer = lm.transformer.layers[0]
    for weight in (layer.self_attn.in_proj_weight, layer.cross_attention.out_proj.weight, layer.linear1.weight):
        assert weight.is_meta
    assert not lm.linears[0].weight.is_meta and not lm.emb[0].weight.is_meta
    assert set(layer.self_attn.kernels) == {"qkv", "out"}
    assert set(layer.cross_attention.kernels) == {"q", "kv", "out"}
    assert set(layer.kernels) == {"linear1", "linear2"}


def test_int8_kernel_is_close_to_the_float_product():
    from openmagnet.quantize import Int8Linear, int8_engine

    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(64, 96, generator=g), torch.randn(3, 5, 96, generator=g)
    y = Int8Linear(w, int8_engine())(x)
    exact = x @ w.T
    assert y.shape == (3, 5, 64)
    assert (y - exact).abs().max().item() < 0.03 * exact.abs().max().item()


@pytest.mark.parametrize("kwargs, message", [
    (dict(quantize="int4"), "quantize must be one of int8, int8-all (or None), got 'int4'"),
    (dict(quantize="int8-all", dtype="bfloat16"), "quantize='int8-all' leaves no matrix in dtype='bfloat16': drop "
                                                  "dtype, or use quantize='int8' to keep the attention projections "
                                                  "in that dtype"),
    (dict(dtype="float16"), "float16 matrix products are about 100x slower than float32 on CPU: "
                            "use dtype=torch.bfloat16 or quantize='int8' for speed on CPU"),
])
def test_fast_mode_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu", **kwargs)
    assert str(err.value) == message
