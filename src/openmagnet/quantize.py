"""int8 weights for the transformer's matrices, on CPU: `MAGNeT.get_pretrained(..., quantize=MODE)`.

  'int8'      the feed-forward matrices (linear1, linear2: two thirds of the work) in int8; the
              attention projections in the model's dtype (bfloat16 unless told otherwise).
  'int8-all'  every attention and feed-forward matrix in int8 (about 96% of the parameters and of
              the work): the fastest, and the least accurate (the attention projections are the
              most sensitive to 8-bit activations).

A quantized matrix is stored as int8 with one scale per output channel; activations are quantised
on the fly, one scale per call, and the product runs in integer arithmetic (VNNI on x86) through
PyTorch's own quantized CPU kernels (`quantized::linear_dynamic`, oneDNN or FBGEMM; torchao's
eager int8 path measured half as fast here). Embeddings, norms, attention itself, the output heads
and the guidance stay float32, as does the residual stream.

On this project's 2-core Zen 4 machine a 1000 x 1024 x 4096 product runs at about 740 GFLOP/s in
int8 against about 360 in bf16 and 155 in fp32 (bench/fast_modes.py measures the whole model).
The float matrices are released after packing, so the model holds about a quarter of the fp32
memory. It is an inference-only transform: a quantized LM cannot be trained or saved.
"""
from __future__ import annotations

import contextlib
import typing as tp
import warnings

import torch
import torch.nn as nn

if tp.TYPE_CHECKING:  # pragma: no cover
    from .lm import MagnetLM

QUANTIZE_MODES = ("int8", "int8-all")


def check_mode(mode: tp.Optional[str]) -> None:
    if mode is not None and mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)} (or None), got {mode!r}")


def int8_engine() -> str:
    """The quantized CPU engine to pack for: oneDNN where available (fastest here), else x86/FBGEMM."""
    engines = torch.backends.quantized.supported_engines
    for name in ("onednn", "x86", "fbgemm"):
        if name in engines:
            return name
    raise RuntimeError(f"quantize='int8' needs PyTorch's quantized CPU kernels (oneDNN, x86 or FBGEMM), and this "
                       f"torch build has only {engines}: load the model with dtype=torch.bfloat16 instead")


@contextlib.contextmanager
def _engine(name: str):
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


class Int8Linear:
    """x @ weight^T with weight [N, K] quantised per output channel (symmetric int8) and x
    quantised per call; x [..., K] float32 -> [..., N] float32."""

    def __init__(self, weight: torch.Tensor, engine: str):
        weight = weight.detach().float().contiguous()
        self.out_features, self.in_features = weight.shape
        scales = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings(), _engine(engine):
            warnings.simplefilter("ignore")  # quantized tensor creation is flagged as deprecated
            qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qweight, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).float().contiguous()
        return torch.ops.quantized.linear_dynamic(flat, self.packed, False).view(*lead, self.out_features)


def _release(module: nn.Module, name: str) -> None:
    """Swap a float parameter for a meta tensor of the same shape: frees its memory, keeps its shape."""
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(torch.empty(old.shape, dtype=old.dtype, device="meta"), requires_grad=False))


def quantize_lm(lm: "MagnetLM", mode: str) -> "MagnetLM":
    """Replace matrices of `lm` (on CPU, float32) by int8 kernels, in place: the feed-forward ones
    for 'int8', all of them for 'int8-all'. Returns lm."""
    check_mode(mode)
    if lm.device.type != "cpu":
        raise ValueError(f"quantize={mode!r} runs on CPU only, but the model is on {lm.device}: "
                         f"use dtype=torch.bfloat16 or torch.float16 on {lm.device.type}")
    engine = int8_engine()
    for layer in lm.transformer.layers:
        layer.kernels.update(linear1=Int8Linear(layer.linear1.weight, engine),
                             linear2=Int8Linear(layer.linear2.weight, engine))
        released = [(layer.linear1, "weight"), (layer.linear2, "weight")]
        if mode == "int8-all":
            dim = layer.linear1.weight.shape[1]
            self_attn, cross = layer.self_attn, layer.cross_attention
            self_attn.kernels.update(qkv=Int8Linear(self_attn.in_proj_weight, engine),
                                     out=Int8Linear(self_attn.out_proj.weight, engine))
            cross.kernels.update(q=Int8Linear(cross.in_proj_weight[:dim], engine),
                                 kv=Int8Linear(cross.in_proj_weight[dim:], engine),
                                 out=Int8Linear(cross.out_proj.weight, engine))
            released = layer.matrices()
        for module, name in released:
            _release(module, name)
    lm.quantized = mode
    return lm


def cast_float_matrices(lm: "MagnetLM", dtype: torch.dtype) -> "MagnetLM":
    """Cast the transformer matrices still held as floats (those not quantized) to `dtype`."""
    for layer in lm.transformer.layers:
        for module, name in layer.matrices():
            weight = getattr(module, name)
            if not weight.is_meta and weight.dtype != dtype:
                setattr(module, name, nn.Parameter(weight.to(dtype), requires_grad=False))
    return lm
