"""The loss balancer of EnCodec (Défossez et al. 2022, §3.4; audiocraft `losses/balancer.py`), written
from the paper: the weights of the reconstruction and adversarial losses mean shares of the gradient
that reaches the decoder's output, whatever each loss's scale.

For losses l_i of the output y with weights w_i, the gradient sent back through y is

    sum_i  total_norm * (w_i / sum_j w_j) * g_i / <||g_i||>,    g_i = d l_i / d y,

where <||g_i||> is an exponential moving average (bias-corrected, so the first step uses the norm itself)
of the norm of g_i: per batch item and averaged over the batch when `per_batch_item`, else over the
whole batch. Losses that do not go through y (the commitment loss) are added as they are.

Shapes: B batch, C channels, L samples.
"""
from __future__ import annotations

import typing as tp

import torch


class Balancer:
    """Combine the gradients of several losses of one output by weight share (see the module docstring).

    `backward(losses, output)` back-propagates the balanced gradient through `output` (and so through
    the model that made it) and returns, per loss, the norm of its raw gradient (`grad_norm_*`) and its
    share of the balanced gradients' norms (`grad_share_*`: the weight share w_i / sum w exactly on the
    first step, close to it once the moving averages have settled)."""

    def __init__(self, weights: tp.Mapping[str, float], total_norm: float = 1.0, ema_decay: float = 0.999,
                 per_batch_item: bool = True, eps: float = 1e-12):
        bad = {k: w for k, w in weights.items() if w < 0}
        if bad or not any(w > 0 for w in weights.values()):
            raise ValueError(f"balancer weights must be >= 0 with at least one > 0; got {dict(weights)}")
        if not 0.0 <= ema_decay < 1.0 or total_norm <= 0:
            raise ValueError(f"ema_decay must be in [0, 1) and total_norm > 0; got {ema_decay}, {total_norm}")
        self.weights = {k: float(w) for k, w in weights.items() if w > 0}
        self.total_norm = total_norm
        self.ema_decay = ema_decay
        self.per_batch_item = per_batch_item
        self.eps = eps
        self.norm_sums = {k: 0.0 for k in self.weights}  # sum of decay^age * norm
        self.norm_counts = {k: 0.0 for k in self.weights}  # sum of decay^age (the bias correction)

    def _norm(self, grad: torch.Tensor) -> float:
        if self.per_batch_item:
            return float(grad.reshape(grad.shape[0], -1).norm(dim=-1).mean())
        return float(grad.norm())

    def backward(self, losses: tp.Mapping[str, torch.Tensor], output: torch.Tensor,
                 other: tp.Optional[torch.Tensor] = None) -> tp.Dict[str, float]:
        """Back-propagate the balanced gradient of `losses` (every weighted key must be present; keys with
        weight 0 are ignored) through `output`, plus the plain gradient of `other` (a scalar loss that
        does not go through `output`, e.g. the weighted commitment loss)."""
        missing = sorted(set(self.weights) - set(losses))
        if missing:
            raise ValueError(f"the balancer has weights for {missing} but no such losses were given")
        total_weight = sum(self.weights.values())
        grads, stats = {}, {}
        for name in self.weights:
            (grad,) = torch.autograd.grad(losses[name], output, retain_graph=True)
            norm = self._norm(grad)
            self.norm_sums[name] = self.ema_decay * self.norm_sums[name] + norm
            self.norm_counts[name] = self.ema_decay * self.norm_counts[name] + 1.0
            average = self.norm_sums[name] / self.norm_counts[name]
            grads[name] = grad * (self.total_norm * self.weights[name] / total_weight / (average + self.eps))
            stats[f"grad_norm_{name}"] = norm
        scaled = {name: self._norm(grad) for name, grad in grads.items()}
        for name, norm in scaled.items():
            stats[f"grad_share_{name}"] = norm / max(sum(scaled.values()), self.eps)
        balanced = sum(grads.values())
        tensors, grad_tensors = [output], [balanced]
        if other is not None and other.requires_grad:
            tensors.append(other)
            grad_tensors.append(torch.ones_like(other))
        torch.autograd.backward(tensors, grad_tensors)
        return stats

    def state_dict(self) -> dict:
        return {"norm_sums": dict(self.norm_sums), "norm_counts": dict(self.norm_counts)}

    def load_state_dict(self, state: dict) -> None:
        if set(state["norm_sums"]) != set(self.weights):
            raise ValueError(f"balancer state has losses {sorted(state['norm_sums'])}, this run weights "
                             f"{sorted(self.weights)}: the checkpoint is from a run with other loss weights")
        self.norm_sums = {k: float(v) for k, v in state["norm_sums"].items()}
        self.norm_counts = {k: float(v) for k, v in state["norm_counts"].items()}
