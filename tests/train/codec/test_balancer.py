"""The loss balancer (openmagnet/train/codec/balancer.py): each loss's share of the gradient at the output is
its weight share, whatever the loss's scale; the commitment-like loss outside the output passes as is."""
import pytest
import torch

from openmagnet.train.codec.balancer import Balancer


def _output_and_losses(scale_a: float, scale_b: float):
    g = torch.Generator().manual_seed(0)
    leaf = torch.randn(3, 1, 64, generator=g, requires_grad=True)
    out = leaf * 1.0  # the model's output (a non-leaf)
    target = torch.randn(3, 1, 64, generator=g)
    losses = {"a": scale_a * (out - target).abs().mean(), "b": scale_b * (out - 2 * target).pow(2).mean()}
    return leaf, out, losses


@pytest.mark.parametrize("scales", [(1.0, 1.0), (1e4, 1e-3), (1e-5, 50.0)])
def test_gradient_shares_match_the_weights_whatever_the_scales(scales):
    leaf, out, losses = _output_and_losses(*scales)
    balancer = Balancer({"a": 3.0, "b": 1.0}, total_norm=2.0)
    stats = balancer.backward(losses, out)
    assert stats["grad_share_a"] == pytest.approx(0.75, abs=1e-6)
    assert stats["grad_share_b"] == pytest.approx(0.25, abs=1e-6)
    # what reached the output is exactly the sum of the normalised gradients
    _, out2, losses2 = _output_and_losses(*scales)
    grad_a, = torch.autograd.grad(losses2["a"], out2, retain_graph=True)
    grad_b, = torch.autograd.grad(losses2["b"], out2)

    def norm(g):  # per batch item, averaged
        return g.reshape(3, -1).norm(dim=-1).mean()

    expected = 2.0 * (0.75 * grad_a / norm(grad_a) + 0.25 * grad_b / norm(grad_b))
    assert torch.allclose(leaf.grad, expected, rtol=1e-5, atol=1e-7)
    assert stats["grad_norm_a"] == pytest.approx(float(norm(grad_a)), rel=1e-5)


def test_moving_average_of_norms_and_the_loss_outside_the_output():
    balancer = Balancer({"a": 1.0, "b": 1.0}, ema_decay=0.5)
    leaf, out, losses = _output_and_losses(1.0, 1.0)
    balancer.backward(losses, out)
    leaf, out, losses = _output_and_losses(10.0, 1.0)  # loss a ten times larger: its average norm lags
    extra = (leaf ** 2).sum()  # a loss of the model that does not go through `out`
    stats = balancer.backward(losses, out, other=extra)
    n1, n2 = stats["grad_norm_a"] / 10, stats["grad_norm_a"]
    average = (0.5 * n1 + n2) / 1.5
    assert stats["grad_share_a"] == pytest.approx((n2 / average) / (n2 / average + 1.0), rel=1e-5)
    _, out2, losses2 = _output_and_losses(10.0, 1.0)
    grad_a, = torch.autograd.grad(losses2["a"], out2, retain_graph=True)
    grad_b, = torch.autograd.grad(losses2["b"], out2)
    b_norm = stats["grad_norm_b"]
    expected = 0.5 * grad_a / average + 0.5 * grad_b / b_norm + 2 * leaf.detach()
    assert torch.allclose(leaf.grad, expected, rtol=1e-5, atol=1e-6)
    state = balancer.state_dict()
    other = Balancer({"a": 1.0, "b": 1.0}, ema_decay=0.5)
    other.load_state_dict(state)
    assert other.state_dict() == state


def test_weights_are_checked():
    with pytest.raises(ValueError, match=r"balancer weights must be >= 0 with at least one > 0"):
        Balancer({"a": 0.0})
    with pytest.raises(ValueError, match=r"balancer weights must be >= 0"):
        Balancer({"a": -1.0, "b": 1.0})
    balancer = Balancer({"a": 1.0, "b": 0.0})  # weight 0: dropped
    assert list(balancer.weights) == ["a"]
    _, out, losses = _output_and_losses(1.0, 1.0)
    with pytest.raises(ValueError, match=r"the balancer has weights for \['c'\] but no such losses were given"):
        Balancer({"c": 1.0}).backward(losses, out)
    with pytest.raises(ValueError, match="from a run with other loss weights"):
        Balancer({"a": 1.0, "b": 1.0}).load_state_dict(balancer.state_dict())
