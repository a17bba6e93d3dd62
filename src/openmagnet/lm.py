"""MagnetLM: the MAGNeT transformer over EnCodec tokens (SPEC §2; audiocraft models/lm_magnet.py).

Module names are audiocraft's checkpoint keys (`emb.{k}`, `transformer.layers.{i}.self_attn.
in_proj_weight`, `linears.{k}`, `out_norm`, `condition_provider.conditioners.description.
output_proj`), so a released `best_state` loads with `load_state_dict(strict=True)` and no renaming.

Forward pass, for tokens [B, K, T] (values 0..card-1, or card = mask token):
    x = sum_k emb[k](tokens[:, k]) + sinusoidal positions
    per layer (pre-norm): x += SelfAttn(LN(x), stage mask); x += CrossAttn(LN(x), text); x += FFN(LN(x))
    logits[:, k] = linears[k](out_norm(x))          -> [B, K, T, card]
The text condition [B, S, D] is already projected (see conditioners.py) and enters the
cross-attention without normalisation and without a key-padding mask, as in the reference.
"""
from __future__ import annotations

import math
import typing as tp

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention, self_attention_window
from .config import LMConfig

CrossKV = tp.List[tp.Union[torch.Tensor, tp.Tuple[torch.Tensor, torch.Tensor]]]
Kernel = tp.Callable[[torch.Tensor], torch.Tensor]
# The transformer's matrices take the requested dtype; everything else (embeddings, norms, the text
# projection and the output heads, about 4% of the small model) stays float32, so that the residual
# stream and the logits are float32 whatever the matrices are (see `MagnetLM.weight_dtype`).
_MATRIX_SUFFIXES = ("in_proj_weight", "out_proj.weight", "linear1.weight", "linear2.weight")


def sin_embedding(seq_len: int, dim: int, max_period: float = 10_000.0,
                  device: tp.Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal positions [1, T, D]: [cos(phase), sin(phase)] (cos first) with
    phase[t, i] = t / max_period ** (i / (D/2 - 1)) -- note the `half - 1` divisor (pitfall 12).
    The operations and their order follow the reference so that fp32 results are bit-identical."""
    half = dim // 2
    positions = torch.arange(seq_len, device=device).view(1, -1, 1).to(dtype)
    adim = torch.arange(half, device=device, dtype=dtype).view(1, 1, -1)
    period = torch.full([], max_period, device=device, dtype=dtype)
    phase = positions / (period ** (adim / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class FirstStageKernel(tp.NamedTuple):
    """A replacement kernel that serves the codebook-0 stage only (quantize.py's 'int8-hybrid'): the later stages
    use the float weight."""
    kernel: Kernel


def project(kernels: tp.Dict[str, Kernel], name: str, x: torch.Tensor, weight: torch.Tensor,
            first_stage: bool = False) -> torch.Tensor:
    """x @ weight^T in the weight's dtype, or through a replacement kernel installed under `name`
    (e.g. int8, see quantize.py); a FirstStageKernel only when the call computes the codebook-0 stage
    (`first_stage`, passed down from `MagnetLM.hidden`). The residual stream stays in its own dtype: adding the
    result to it promotes back."""
    kernel = kernels.get(name)
    if isinstance(kernel, FirstStageKernel):
        kernel = kernel.kernel if first_stage else None
    if kernel is not None:
        return kernel(x)
    return F.linear(x.to(weight.dtype), weight)


class MultiheadAttention(nn.Module):
    """Bias-free attention with PyTorch's packed projection: rows [0:D] of `in_proj_weight` give
    the queries, [D:2D] the keys, [2D:3D] the values; heads are contiguous chunks of D / H.
    `kernels` may replace the projections 'qkv', 'q', 'kv' and 'out' (see quantize.py); `first_stage` says whether
    a call computes the codebook-0 stage (for the kernels that serve that stage only)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self.kernels: tp.Dict[str, Kernel] = {}
        nn.init.kaiming_uniform_(self.in_proj_weight, a=math.sqrt(5))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)  # [B, H, T, d]

    def _merge_heads(self, x: torch.Tensor, first_stage: bool) -> torch.Tensor:
        B, H, T, d = x.shape
        return project(self.kernels, "out", x.transpose(1, 2).reshape(B, T, H * d), self.out_proj.weight, first_stage)

    def self_attention(self, x: torch.Tensor, context: tp.Optional[int], banded: bool = False,
                       first_stage: bool = False) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]; context: None for full attention, else the window half-width
        (computed banded when `banded`, see attention.py)."""
        B, T, D = x.shape
        packed = project(self.kernels, "qkv", x, self.in_proj_weight, first_stage)
        packed = packed.view(B, T, 3, self.num_heads, D // self.num_heads)
        q, k, v = (t.transpose(1, 2) for t in packed.unbind(dim=2))  # each [B, H, T, d]
        return self._merge_heads(self_attention_window(q, k, v, context, banded), first_stage)

    def cross_kv(self, src: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the condition src [B, S, D], each [B, H, S, d]. They do not change
        during a generation, so the caller may compute them once."""
        D = src.shape[-1]
        if "kv" in self.kernels:
            k, v = self.kernels["kv"](src).split(D, dim=-1)
        else:
            src = src.to(self.in_proj_weight.dtype)
            k = F.linear(src, self.in_proj_weight[D:2 * D])
            v = F.linear(src, self.in_proj_weight[2 * D:])
        return self._split_heads(k), self._split_heads(v)

    def cross_attention(self, x: torch.Tensor, kv: tp.Sequence[torch.Tensor],
                        first_stage: bool = False) -> torch.Tensor:
        """x [B, T, D] attends to precomputed (k, v) [B, H, S, d]; no mask, as in the reference, unless the
        keys were padded (`pad_cross_kv`: a third element, the additive key mask [1, 1, 1, S])."""
        D = x.shape[-1]
        q = self._split_heads(project(self.kernels, "q", x, self.in_proj_weight[:D], first_stage))
        return self._merge_heads(attention(q, kv[0], kv[1], kv[2] if len(kv) > 2 else None), first_stage)


def pad_cross_kv(cross_kv: CrossKV, bucket: int) -> CrossKV:
    """The text's keys/values [n, H, S, d] of every layer padded with zeros to a multiple of `bucket` text
    positions, each with the additive key mask [1, 1, 1, S'] (0, then -inf on the padding) that keeps the
    padding out of the attention: the same maths for any S up to the bucket, so a compiled step (fixed shapes)
    serves every prompt length of the bucket. Equal to the unpadded attention to float rounding."""
    padded = []
    for k, v in cross_kv:
        S = k.shape[2]
        extra = -S % bucket
        mask = torch.zeros(1, 1, 1, S + extra, dtype=k.dtype, device=k.device)
        mask[..., S:] = float("-inf")
        padded.append((F.pad(k, (0, 0, 0, extra)), F.pad(v, (0, 0, 0, extra)), mask))
    return padded


class TransformerLayer(nn.Module):
    """Pre-norm block: self-attention, cross-attention to the text, GELU feed-forward.
    `kernels` may replace 'linear1' and 'linear2'."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        dim = cfg.dim
        self.self_attn = MultiheadAttention(dim, cfg.num_heads)
        self.cross_attention = MultiheadAttention(dim, cfg.num_heads)
        self.linear1 = nn.Linear(dim, cfg.hidden_scale * dim, bias=False)
        self.linear2 = nn.Linear(cfg.hidden_scale * dim, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.norm_cross = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.kernels: tp.Dict[str, Kernel] = {}

    def matrices(self) -> tp.List[tp.Tuple[nn.Module, str]]:
        """(module, attribute) of the six weight matrices, the ones `dtype` and quantization apply to
        (their state-dict keys end with _MATRIX_SUFFIXES)."""
        return [(self.self_attn, "in_proj_weight"), (self.self_attn.out_proj, "weight"),
                (self.cross_attention, "in_proj_weight"), (self.cross_attention.out_proj, "weight"),
                (self.linear1, "weight"), (self.linear2, "weight")]

    def forward(self, x: torch.Tensor, kv: tp.Union[torch.Tensor, tp.Tuple[torch.Tensor, torch.Tensor]],
                context: tp.Optional[int], banded: bool = False, first_stage: bool = False) -> torch.Tensor:
        """x [B, T, D]; kv: the cross-attention keys/values of the condition of the first n <= B rows,
        or that condition [n, S, D] itself. Rows past n have the null condition (all zeros): their
        keys and values are 0, so their cross-attention output is exactly 0 and is skipped.
        first_stage: the call computes the codebook-0 stage (for the kernels that serve that stage only)."""
        if isinstance(kv, torch.Tensor):
            kv = self.cross_attention.cross_kv(kv)
        # Without autograd the residual stream is updated in place (the same additions, bit for bit, without a
        # new [B, T, D] tensor each time); x is then this layer's own: `MagnetLM.hidden` made it.
        add = torch.add if torch.is_grad_enabled() else torch.Tensor.add_
        x = add(x, self.self_attn.self_attention(self.norm1(x), context, banded, first_stage))
        n = kv[0].shape[0]
        if n == x.shape[0]:
            x = add(x, self.cross_attention.cross_attention(self.norm_cross(x), kv, first_stage))
        elif torch.is_grad_enabled():
            head = x[:n]
            x = torch.cat([head + self.cross_attention.cross_attention(self.norm_cross(head), kv, first_stage), x[n:]])
        else:
            x[:n] += self.cross_attention.cross_attention(self.norm_cross(x[:n]), kv, first_stage)
        hidden = F.gelu(project(self.kernels, "linear1", self.norm2(x), self.linear1.weight, first_stage))
        return add(x, project(self.kernels, "linear2", hidden, self.linear2.weight, first_stage))


class Transformer(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.layers = nn.ModuleList([TransformerLayer(cfg) for _ in range(cfg.num_layers)])


class TextProjection(nn.Module):
    """The trainable part of audiocraft's T5 conditioner: d_text -> D, with bias."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.output_proj = nn.Linear(text_dim, dim)


class ConditionProvider(nn.Module):
    """Holds the text projection under audiocraft's key `condition_provider.conditioners.description`.
    The T5 encoder itself is not part of the checkpoint (see conditioners.py)."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.conditioners = nn.ModuleDict({"description": TextProjection(text_dim, dim)})

    @property
    def output_proj(self) -> nn.Linear:
        return self.conditioners["description"].output_proj


class MagnetLM(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.condition_provider = ConditionProvider(cfg.text_dim, cfg.dim)
        self.emb = nn.ModuleList([nn.Embedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q)])
        self.transformer = Transformer(cfg)
        self.out_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.linears = nn.ModuleList([nn.Linear(cfg.dim, cfg.card, bias=False) for _ in range(cfg.n_q)])
        # Restricted attention of codebooks 1..3 over the window only (attention.banded_attention):
        # the same maths, equal to float rounding but not bit-identical to the reference's dense mask.
        self.banded_attention = False
        self.quantized: tp.Optional[str] = None  # the mode once quantize.quantize_lm has run
        self.int8_engine: tp.Optional[str] = None  # and the int8 kernel it packed for
        # `run_layers` compiled (runtime.compile_lm; None: eager). Not a module: the state dict is unchanged.
        self.compiled_layers: tp.Optional[tp.Callable[..., torch.Tensor]] = None

    @classmethod
    def empty(cls, cfg: LMConfig, device: tp.Union[str, torch.device] = "meta") -> "MagnetLM":
        """The architecture without weights: on the meta device (its key layout, or a model for
        `load_state_dict(..., assign=True)`), or uninitialised memory on `device` for weights loaded
        right after."""
        with torch.device("meta"):
            lm = cls(cfg)
        return lm if torch.device(device).type == "meta" else lm.to_empty(device=device)

    @staticmethod
    def weight_dtype(key: str, dtype: torch.dtype) -> torch.dtype:
        """The dtype a checkpoint tensor takes when the model is loaded for `dtype`: the
        transformer's matrices take `dtype`, the rest stays float32."""
        return dtype if key.startswith("transformer.") and key.endswith(_MATRIX_SUFFIXES) else torch.float32

    @property
    def device(self) -> torch.device:
        return self.out_norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the transformer's matrices (the compute dtype of the matmuls)."""
        return self.transformer.layers[0].self_attn.out_proj.weight.dtype

    def cross_kv(self, cond: torch.Tensor) -> CrossKV:
        """Per-layer cross-attention keys/values for the projected condition cond [B, S, D]."""
        return [layer.cross_attention.cross_kv(cond) for layer in self.transformer.layers]

    def hidden(self, codes: torch.Tensor, cond: tp.Optional[torch.Tensor], stage: int,
               cross_kv: tp.Optional[CrossKV] = None) -> torch.Tensor:
        """Final normalised hidden states [B, T, D] for codes [B, K, T] and condition [n, S, D]
        (or its precomputed `cross_kv`); rows past n <= B get the null (all-zero) condition.
        stage >= 1 restricts the self-attention to a window of +- subcodes_context frames."""
        B, K, T = codes.shape
        if K != self.cfg.n_q:
            raise ValueError(f"codes must have {self.cfg.n_q} codebooks, got shape {tuple(codes.shape)}")
        if cross_kv is None:
            if cond is None:
                raise ValueError("pass either the condition tensor or its cross_kv")
            # each layer projects the condition itself, inside its own forward (where FSDP gathers it)
            cross_kv = [cond] * len(self.transformer.layers)
        x = self.emb[0](codes[:, 0])
        for k in range(1, K):
            x = x + self.emb[k](codes[:, k])
        x = x + sin_embedding(T, self.cfg.dim, self.cfg.max_period, device=x.device, dtype=x.dtype)
        context = self.cfg.subcodes_context if stage > 0 and self.cfg.subcodes_context >= 0 else None
        run = self.run_layers if self.compiled_layers is None or torch.is_grad_enabled() else self.compiled_layers
        return self.out_norm(run(x, cross_kv, context, self.banded_attention, stage == 0))

    def run_layers(self, x: torch.Tensor, cross_kv: tp.Sequence[tp.Any], context: tp.Optional[int],
                   banded: bool, first_stage: bool = False) -> torch.Tensor:
        """x [B, T, D] through every layer (the part `runtime.compile_lm` compiles). The layers compute the same
        function for every stage past codebook 0, so they are told only whether this is codebook 0 (`first_stage`):
        the window (`context`) and the kernels that serve that stage only depend on it."""
        for layer, kv in zip(self.transformer.layers, cross_kv, strict=True):
            x = layer(x, kv, context, banded, first_stage)
        return x

    def stage_logits(self, codes: torch.Tensor, cond: tp.Optional[torch.Tensor], stage: int,
                     cross_kv: tp.Optional[CrossKV] = None) -> torch.Tensor:
        """Logits of codebook `stage` only, [B, T, card] (the only head decoding uses)."""
        return self.linears[stage](self.hidden(codes, cond, stage, cross_kv))

    def forward(self, codes: torch.Tensor, cond: torch.Tensor, stage: int = 0) -> torch.Tensor:
        """All heads, [B, K, T, card], as audiocraft's `LMModel.forward(codes, [], cond, stage)`."""
        out = self.hidden(codes, cond, stage)
        return torch.stack([head(out) for head in self.linears], dim=1)
