"""SEANet encoder and decoder of audiocraft's EnCodec (SPEC §6.2), non-causal, weight-normed.

Mirrors audiocraft `modules/seanet.py`, `modules/conv.py` and `modules/lstm.py`. This file owns:
- weight norm with explicit `weight_g` / `weight_v` parameters (the old `torch.nn.utils.weight_norm`
  layout, dim 0), so checkpoints load without renaming;
- audiocraft's padding rules for strided convolutions and the trimming of transposed ones;
- the module nesting that produces audiocraft's state-dict keys, e.g.
  `model.0.conv.conv.weight_g`, `model.3.convtr.convtr.weight_v`, `model.1.block.3.conv.conv.bias`,
  `model.13.lstm.weight_ih_l0`.

Shapes: B batch, C channels, T time steps (audio samples or latent frames).
"""
from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from ..config import CodecConfig

PAD_MODES = ("constant", "reflect")


# ------------------------------------------------------------------------------------------------
# Weight-normed convolutions
# ------------------------------------------------------------------------------------------------
def _norm_except_dim0(v: torch.Tensor) -> torch.Tensor:
    """L2 norm of each slice v[i], kept broadcastable: [O, I, K] -> [O, 1, 1]."""
    if v.is_meta:  # shape only: math on meta tensors first imports torch's slow Python reference ops
        return torch.empty((v.shape[0],) + (1,) * (v.dim() - 1), device="meta", dtype=v.dtype)
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)


class _WeightNorm(nn.Module):
    """Holds `weight_g`, `weight_v`, `bias`; the effective weight is g * v / ||v|| (norm over all
    dims but 0). Initialised like the torch conv it replaces, with g = ||v|| (weight unchanged)."""

    def __init__(self, template: nn.Module):
        super().__init__()
        v = template.weight.detach()
        self.bias = nn.Parameter(template.bias.detach().clone())  # registration order = audiocraft's
        self.weight_g = nn.Parameter(_norm_except_dim0(v))
        self.weight_v = nn.Parameter(v.clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_v * (self.weight_g / _norm_except_dim0(self.weight_v))


class WeightNormConv1d(_WeightNorm):
    """Conv1d, no padding of its own. weight_v [C_out, C_in, K], weight_g [C_out, 1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, dilation: int = 1):
        super().__init__(nn.Conv1d(in_channels, out_channels, kernel_size))
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T] -> [B, C_out, T']
        return F.conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)


class WeightNormConvTranspose1d(_WeightNorm):
    """ConvTranspose1d, no trimming of its own. weight_v [C_in, C_out, K], weight_g [C_in, 1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(nn.ConvTranspose1d(in_channels, out_channels, kernel_size))
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T] -> [B, C_out, (T-1)*s + K]
        return F.conv_transpose1d(x, self.weight, self.bias, stride=self.stride)


def _nest(name: str, module: nn.Module) -> nn.Module:
    """One extra level of nesting, only so that state-dict keys read like audiocraft's
    (`NormConv1d.conv` / `NormConvTranspose1d.convtr`, whose norm module is an identity)."""
    holder = nn.Module()
    holder.add_module(name, module)
    return holder


# ------------------------------------------------------------------------------------------------
# Padding (audiocraft modules/conv.py, non-causal branch)
# ------------------------------------------------------------------------------------------------
def extra_right_padding(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Zeros to append so the last strided window is full (no input sample is dropped)."""
    n_frames = -(-(length - kernel_size + padding_total) // stride) + 1  # ceil division
    ideal_length = (n_frames - 1) * stride + kernel_size - padding_total
    return ideal_length - length


def pad1d(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """F.pad on the time axis. In reflect mode an input not longer than the padding is first
    zero-extended on the right (and that extension cut off again), as audiocraft does."""
    if mode != "reflect":
        return F.pad(x, (left, right), mode=mode)
    extend = max(0, max(left, right) - x.shape[-1] + 1)
    x = F.pad(x, (0, extend))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., :padded.shape[-1] - extend]


class PaddedConv1d(nn.Module):
    """audiocraft `StreamableConv1d` (non-causal): pads so that T samples give ceil(T / stride)
    outputs. Total padding (K-1)*dilation + 1 - stride: right gets half (rounded down), left the
    rest, and the right side also gets `extra_right_padding`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, pad_mode: str = "constant"):
        super().__init__()
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}; got {pad_mode!r}")
        self.conv = _nest("conv", WeightNormConv1d(in_channels, out_channels, kernel_size,
                                                   stride, dilation))
        self.pad_mode = pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T] -> [B, C_out, ceil(T/s)]
        conv = self.conv.conv
        kernel = (conv.kernel_size - 1) * conv.dilation + 1
        padding_total = kernel - conv.stride
        extra = extra_right_padding(x.shape[-1], kernel, conv.stride, padding_total)
        right = padding_total // 2
        left = padding_total - right
        return conv(pad1d(x, left, right + extra, self.pad_mode))


class TrimmedConvTranspose1d(nn.Module):
    """audiocraft `StreamableConvTranspose1d` (non-causal): removes K - stride samples,
    half (rounded down) on the right and the rest on the left, so T frames give T * stride."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.convtr = _nest("convtr", WeightNormConvTranspose1d(in_channels, out_channels,
                                                                kernel_size, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T] -> [B, C_out, T*s]
        convtr = self.convtr.convtr
        y = convtr(x)
        padding_total = convtr.kernel_size - convtr.stride
        right = padding_total // 2
        left = padding_total - right
        return y[..., left:y.shape[-1] - right]


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """SEANet residual unit: x + conv1(elu(conv_k(elu(x)))), hidden width dim // compress.
    Keys: `block.1` (k=kernel, dilated) and `block.3` (k=1); `shortcut` is an identity when
    `true_skip`, else a k=1 conv."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, cfg: CodecConfig):
        super().__init__()
        hidden = dim // cfg.compress
        self.block = nn.Sequential(
            nn.ELU(cfg.activation_alpha),
            PaddedConv1d(dim, hidden, kernel_size, dilation=dilation, pad_mode=cfg.pad_mode),
            nn.ELU(cfg.activation_alpha),
            PaddedConv1d(hidden, dim, 1, pad_mode=cfg.pad_mode),
        )
        self.shortcut = nn.Identity() if cfg.true_skip else PaddedConv1d(dim, dim, 1, pad_mode=cfg.pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, T]
        return self.shortcut(x) + self.block(x)


class SkipLSTM(nn.Module):
    """Multi-layer LSTM over time with a skip connection, y = lstm(x) + x (audiocraft
    `StreamableLSTM`). Hidden state is not carried between calls."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, T]
        x = x.permute(2, 0, 1)  # [T, B, C]
        y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)


def _residual_blocks(dim: int, cfg: CodecConfig) -> tp.List[nn.Module]:
    return [ResidualBlock(dim, cfg.residual_kernel_size, cfg.dilation_base ** j, cfg)
            for j in range(cfg.n_residual_layers)]


# ------------------------------------------------------------------------------------------------
# Encoder / decoder
# ------------------------------------------------------------------------------------------------
class SEANetEncoder(nn.Module):
    """Waveform [B, channels, T] -> latent [B, dimension, ceil(T / hop)].

    Layout of `model`: conv(k) ; per ratio (reversed, smallest first): residual blocks, ELU,
    conv(k=2r, stride r) doubling the width ; LSTM (if any) ; ELU ; conv(last_k) to `dimension`."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        width = cfg.n_filters
        layers: tp.List[nn.Module] = [PaddedConv1d(cfg.channels, width, cfg.kernel_size, pad_mode=cfg.pad_mode)]
        for ratio in reversed(cfg.ratios):
            layers += _residual_blocks(width, cfg)
            layers += [nn.ELU(cfg.activation_alpha),
                       PaddedConv1d(width, 2 * width, 2 * ratio, stride=ratio, pad_mode=cfg.pad_mode)]
            width *= 2
        if cfg.lstm:
            layers.append(SkipLSTM(width, cfg.lstm))
        layers += [nn.ELU(cfg.activation_alpha),
                   PaddedConv1d(width, cfg.dimension, cfg.last_kernel_size, pad_mode=cfg.pad_mode)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SEANetDecoder(nn.Module):
    """Latent [B, dimension, T] -> waveform [B, channels, T * hop]. No final activation.

    Layout of `model`: conv(k) ; LSTM (if any) ; per ratio (largest first): ELU, transposed
    conv(k=2r, stride r) halving the width, residual blocks ; ELU ; conv(last_k) to `channels`."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        width = cfg.n_filters * 2 ** len(cfg.ratios)
        layers: tp.List[nn.Module] = [PaddedConv1d(cfg.dimension, width, cfg.kernel_size, pad_mode=cfg.pad_mode)]
        if cfg.lstm:
            layers.append(SkipLSTM(width, cfg.lstm))
        for ratio in cfg.ratios:
            layers += [nn.ELU(cfg.activation_alpha),
                       TrimmedConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio)]
            width //= 2
            layers += _residual_blocks(width, cfg)
        layers += [nn.ELU(cfg.activation_alpha),
                   PaddedConv1d(width, cfg.channels, cfg.last_kernel_size, pad_mode=cfg.pad_mode)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)
