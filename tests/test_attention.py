"""The one attention function and its masks (openmagnet/attention.py): the kernel against the math
reference, the restricted (local) window, the banded form of that window (same maths, less memory), and the
MPS-only contiguous inputs."""
import pytest
import torch

from openmagnet.attention import _sdpa_inputs, attention, attention_reference, banded_attention, \
    restricted_attn_mask, self_attention_window, stage_attn_mask


def test_restricted_mask_window():
    mask = restricted_attn_mask(20, 5)
    i, j = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
    assert torch.equal(mask == 0, (i - j).abs() <= 5)
    assert torch.isinf(mask[(i - j).abs() > 5]).all()
    assert stage_attn_mask(0, 20, 5) is None
    assert stage_attn_mask(3, 20, -1) is None


@pytest.mark.parametrize("masked", [False, True])
def test_attention_kernel_matches_the_math(masked):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, generator=g) for _ in range(3))
    mask = restricted_attn_mask(17, 5) if masked else None
    err = (attention(q, k, v, mask) - attention_reference(q, k, v, mask)).abs().max().item()
    assert err < 1e-5


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


# ---------------------------------------------------------------------------------------- attention inputs
def test_sdpa_inputs_are_contiguous_for_mps_only():
    q, k, v = (torch.randn(1, 5, 2, 64).transpose(1, 2) for _ in range(3))  # [B, H, T, d], strided
    assert not q.is_contiguous()
    out = _sdpa_inputs(q, k, v, device_type="mps")
    assert all(t.is_contiguous() for t in out) and all(torch.equal(a, b) for a, b in zip(out, (q, k, v), strict=True))
    same = _sdpa_inputs(q, k, v)  # CPU (and CUDA): untouched, so exact mode keeps its kernel path
    assert all(a is b for a, b in zip(same, (q, k, v), strict=True))
