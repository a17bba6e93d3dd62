"""int8 weights for the transformer's matrices, on CPU: `MAGNeT.get_pretrained(..., quantize=MODE)`.

  'int8'      the feed-forward matrices (linear1, linear2: two thirds of the work) in int8; the
              attention projections in the model's dtype (bfloat16 unless told otherwise).
  'int8-hybrid'  'int8', plus every attention matrix in int8 while decoding codebook 0 (the full-
              attention stage, where 8-bit attention projections measured harmless); codebooks 1-3
              keep float attention, whose narrow windows are where 8-bit projections flip tokens
              (on an AVX2 CPU: 95.1% greedy agreement against 92.7% with int8 attention throughout).
  'int8-all'  every attention and feed-forward matrix in int8 (about 96% of the parameters and of
              the work): the fastest, and the least accurate (the attention projections are the
              most sensitive to 8-bit activations).

A quantized matrix is stored as int8 with one scale per output channel; activations are quantised
on the fly, one scale per call, and the product runs in integer arithmetic (VNNI on x86) through
PyTorch's own quantized CPU kernels (`quantized::linear_dynamic`, oneDNN or FBGEMM; torchao's
eager int8 path measured half as fast here), or through `torch._int_mm` with one scale per row of
activations (`IntMMLinear`). Which of them runs fastest differs per CPU (on a Sapphire Rapids Xeon
oneDNN ran 4x FBGEMM), so it is measured on the model's shapes (runtime.py) and passed in as `engine`.
Embeddings, norms, attention itself, the output heads and the guidance stay float32, as does the
residual stream.

On this project's 2-core Zen 4 machine a 1000 x 1024 x 4096 product runs at about 740 GFLOP/s in
int8 against about 360 in bf16 and 155 in fp32; on a 2-core AVX2 EPYC without VNNI, 275-310 in int8
against 137 in fp32 and 1-35 in bf16 (bench/fast_modes.py measures the whole model). torch._int_mm
ran at 1.2 GOP/s on CPU with torch 2.5 but about 2.8 TOP/s on an AMX Xeon with torch 2.13.
The float matrices are released after packing, so the model holds about a quarter of the fp32
memory. It is an inference-only transform: a quantized LM cannot be trained or saved.
"""
from __future__ import annotations

import typing as tp
import warnings

import torch
import torch.nn as nn

from .hardware import int8_engines, int8_saturates, int_mm_exact, quantized_engine
from .lm import FirstStageKernel, MagnetLM

QUANTIZE_MODES = ("int8", "int8-hybrid", "int8-all")


def check_mode(mode: tp.Optional[str]) -> None:
    if mode is not None and mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)} (or None), got {mode!r}")


def int8_engine(measured: tp.Optional[str] = None) -> str:
    """The int8 kernel to pack for: `measured`, the one timed fastest on this machine's shapes
    (runtime.int8_kernel_choice), when given and usable; else the first quantized CPU engine (x86/FBGEMM).
    Besides PyTorch's quantized engines ('x86', 'fbgemm', 'onednn', 'qnnpack'), 'int_mm' is
    `torch._int_mm` (`IntMMLinear`)."""
    if measured is not None and measured in int8_kernels():
        return measured
    engines = int8_engines()
    missing = [op for op in ("linear_prepack", "linear_dynamic") if not _has_op(op)]
    if not engines or missing:
        raise RuntimeError(f"quantize='int8' needs PyTorch's quantized CPU kernels, and torch {torch.__version__} "
                           f"has {'none' if missing else 'only ' + ', '.join(engines)}: use fast=True, which picks "
                           f"what this CPU runs fastest without them")
    return engines[0]


def int8_kernels() -> tp.List[str]:
    """The int8 kernels this build and CPU can run: PyTorch's quantized engines (when their linear ops are
    there) and 'int_mm' where `torch._int_mm` is exact here (hardware.int_mm_exact)."""
    kernels = int8_engines() if all(_has_op(op) for op in ("linear_prepack", "linear_dynamic")) else []
    return kernels + (["int_mm"] if int_mm_exact() else [])


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.quantized, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def weight_scales(weight: torch.Tensor, saturating: bool) -> torch.Tensor:
    """One scale per output channel for symmetric int8 weights [N, K].

    Where the kernel adds pairs of u8 x s8 products in 16 bits (x86 without VNNI), a pair
    (k, k + 1) of weights with the same sign must satisfy |q_k| + |q_k+1| <= 128: with activations
    up to 255 the pair then stays under 255 * 128 = 32,640 < 32,767 and never saturates. So the
    scale covers the largest same-sign pair sum as well as the largest weight; rows whose pairs
    are small keep (nearly) the full 8 bits, which is finer than PyTorch's blanket 7-bit activations
    (`reduce_range`). Rounding adds at most 1 to a pair, hence 127 below."""
    absmax = weight.abs().amax(dim=1)
    if saturating and weight.shape[1] >= 2:
        even = weight[:, : weight.shape[1] // 2 * 2].view(weight.shape[0], -1, 2)
        same_sign = (even[..., 0] * even[..., 1]) > 0
        pair = torch.where(same_sign, even.abs().sum(-1), even.abs().amax(-1)).amax(dim=1)
        absmax = torch.maximum(absmax, pair)
    return (absmax / 127.0).clamp_min(1e-12).double()


class Int8Linear:
    """x @ weight^T with weight [N, K] quantised per output channel (symmetric int8) and x
    quantised per call; x [..., K] float32 -> [..., N] float32. `saturating`: the kernel adds
    product pairs in 16 bits (hardware.int8_saturates()); the weights are then scaled to fit."""

    def __init__(self, weight: torch.Tensor, engine: str, saturating: bool = False):
        weight = weight.detach().float().contiguous()
        self.out_features, self.in_features = weight.shape
        scales = weight_scales(weight, saturating)
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings(), quantized_engine(engine):
            warnings.simplefilter("ignore")  # quantized tensor creation is flagged as deprecated
            qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qweight, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).float().contiguous()
        return torch.ops.quantized.linear_dynamic(flat, self.packed, False).view(*lead, self.out_features)


class IntMMLinear:
    """x @ weight^T through `torch._int_mm`: weight [N, K] symmetric int8 per output channel, x quantised
    per row (symmetric int8, scale = the row's largest magnitude / 127) on each call, int32 sums rescaled
    in float32; x [..., K] -> [..., N] float32. Only where `hardware.int_mm_exact()` (no 16-bit saturation)."""

    def __init__(self, weight: torch.Tensor):
        weight = weight.detach().float()
        self.out_features, self.in_features = weight.shape
        self.scales = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12)  # [N]
        quantized = (weight / self.scales[:, None]).round_().clamp_(-127, 127).to(torch.int8)
        self.weight_t = quantized.t().contiguous()  # [K, N]: the layout _int_mm runs fastest

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).float()
        row_scales = flat.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12) / 127.0  # [M, 1]
        quantized = (flat / row_scales).round_().clamp_(-127, 127).to(torch.int8)
        out = torch._int_mm(quantized, self.weight_t).float()  # [M, N]
        return out.mul_(row_scales).mul_(self.scales).view(*lead, self.out_features)


def int8_linear(weight: torch.Tensor, engine: str, saturating: bool = False) -> tp.Union[Int8Linear, IntMMLinear]:
    """The int8 kernel of `engine` ('int_mm' or a quantized engine) for weight [N, K]."""
    return IntMMLinear(weight) if engine == "int_mm" else Int8Linear(weight, engine, saturating)


def _release(module: nn.Module, name: str) -> None:
    """Swap a float parameter for a meta tensor of the same shape: frees its memory, keeps its shape."""
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(torch.empty(old.shape, dtype=old.dtype, device="meta"), requires_grad=False))


def quantize_lm(lm: "MagnetLM", mode: str, engine: tp.Optional[str] = None) -> "MagnetLM":
    """Replace matrices of `lm` (on CPU, float32) by int8 kernels, in place: the feed-forward ones
    for 'int8', all of them for 'int8-all', the feed-forward ones and, for codebook 0 only, the
    attention ones for 'int8-hybrid'. engine: the int8 kernel (see `int8_engine`; None: the default).
    Returns lm."""
    check_mode(mode)
    if lm.device.type != "cpu":
        raise ValueError(f"quantize={mode!r} runs on CPU only, but the model is on {lm.device}: "
                         f"use dtype=torch.bfloat16 or torch.float16 on {lm.device.type}")
    engine = int8_engine(engine)
    saturating = engine != "int_mm" and int8_saturates(engine)

    def int8(weight: torch.Tensor) -> tp.Callable[[torch.Tensor], torch.Tensor]:
        return int8_linear(weight, engine, saturating)

    for layer in lm.transformer.layers:
        layer.kernels.update(linear1=int8(layer.linear1.weight), linear2=int8(layer.linear2.weight))
        released = [(layer.linear1, "weight"), (layer.linear2, "weight")]
        if mode == "int8-all":
            dim = layer.linear1.weight.shape[1]
            self_attn, cross = layer.self_attn, layer.cross_attention
            self_attn.kernels.update(qkv=int8(self_attn.in_proj_weight), out=int8(self_attn.out_proj.weight))
            cross.kernels.update(q=int8(cross.in_proj_weight[:dim]), kv=int8(cross.in_proj_weight[dim:]),
                                 out=int8(cross.out_proj.weight))
            released = layer.matrices()
        elif mode == "int8-hybrid":
            dim = layer.linear1.weight.shape[1]
            self_attn, cross = layer.self_attn, layer.cross_attention

            self_attn.kernels.update(qkv=FirstStageKernel(int8(self_attn.in_proj_weight)),
                                     out=FirstStageKernel(int8(self_attn.out_proj.weight)))
            cross.kernels.update(q=FirstStageKernel(int8(cross.in_proj_weight[:dim])),
                                 out=FirstStageKernel(int8(cross.out_proj.weight)))
        for module, name in released:
            _release(module, name)
    lm.quantized = mode
    lm.int8_engine = engine
    return lm


def cast_float_matrices(lm: "MagnetLM", dtype: torch.dtype, group: tp.Optional[str] = None) -> "MagnetLM":
    """Cast the transformer matrices still held as floats (those not quantized) to `dtype`: all of them, or
    only those of `group` ('attention': the four projections, 'feed_forward': linear1 and linear2)."""
    if group not in (None, "attention", "feed_forward"):
        raise ValueError(f"group must be None, 'attention' or 'feed_forward', got {group!r}")
    for layer in lm.transformer.layers:
        matrices = layer.matrices()
        if group is not None:
            matrices = matrices[:4] if group == "attention" else matrices[4:]
        for module, name in matrices:
            weight = getattr(module, name)
            if not weight.is_meta and weight.dtype != dtype:
                setattr(module, name, nn.Parameter(weight.to(dtype), requires_grad=False))
    return lm
