"""LoRA fine-tuning of MagnetLM with peft (Hu et al. 2021, "LoRA: Low-Rank Adaptation").

    lm = apply_lora(lm, rank=16, alpha=32)          # in place: the same MagnetLM, base frozen
    ... train lm.stage_logits(codes, cond, stage) ...
    save_adapters(lm, "adapters.safetensors", {"base": "facebook/magnet-small-10secs"})
    lm = load_adapters(fresh_base_lm, "adapters.safetensors")
    lm = merge_lora(lm)                             # plain MagnetLM, audiocraft's keys and shapes

peft creates, initialises (B = 0), freezes around, merges and serialises the adapters; this file only
connects them to MagnetLM, which needs two things peft cannot do alone (both checked with peft 0.21):

1. The model never calls its matrices' forward(): lm.py computes `project(kernels, name, x, module.weight)`
   (that is how quantize.py swaps kernels in). peft's `lora.Linear` on out_proj/linear1/linear2 therefore
   changes nothing by itself. `_route` installs each adapted layer as the kernel of its matrix.
2. q/k/v are one packed bare Parameter, `in_proj_weight` [3D, D]. peft's `target_parameters` wraps the
   owning module in a `ParamWrapper`: that hides `MultiheadAttention.self_attention`/`cross_kv` (the
   forward pass fails with AttributeError) and applies the delta only inside the wrapper's forward(),
   which attention never calls. Instead each attention gets an `in_proj` nn.Linear whose weight *is*
   `in_proj_weight` (the same Parameter), peft adapts that Linear like any other, and the 'qkv', 'q'
   and 'kv' kernels use it (`_PackedRows` for the q and k/v row slices of the cross-attention).

While adapters are applied, `lm.state_dict()` holds extra keys (`*.in_proj.base_layer.weight`, the
alias, and `*.lora_A/B.default.weight`); save adapters with `save_adapters` and export only after
`merge_lora`, which restores exactly the original keys. Change dtype or device with `.to()` (it keeps
the alias shared), not with quantize.cast_float_matrices; LoRA on a quantized model is not supported.
"""
from __future__ import annotations

import json
import os
import sys
import typing as tp
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..files import atomic_file
from ..lm import MagnetLM, MultiheadAttention

# The transformer's matrices: the packed q/k/v projection of the self- and cross-attention (`in_proj`
# stands for `in_proj_weight`), their output projections, and the feed-forward layers.
LORA_TARGETS: tp.Tuple[str, ...] = ("in_proj", "out_proj", "linear1", "linear2")
ADAPTERS_FORMAT = "openmagnet-lora"
_ADAPTER = "default"  # peft's adapter name; one adapter per model
_INFO_KEYS = ("rank", "alpha", "dropout", "targets")


def _peft():
    """The peft package, imported on first use (it is an optional dependency)."""
    try:
        import peft
    except ImportError as err:
        raise ImportError("LoRA needs peft: pip install 'openmagnet[train]'") from err
    return peft


def _tuner_layer_class() -> type:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return BaseTunerLayer


def is_lora(model: nn.Module) -> bool:
    """Whether `model` holds peft LoRA layers (applied and not merged)."""
    if "peft" not in sys.modules:  # no peft layer can exist without it
        return False
    base = _tuner_layer_class()
    return any(isinstance(module, base) for module in model.modules())


def _require_lora(model: nn.Module) -> None:
    _peft()
    if not is_lora(model):
        raise ValueError("the model has no LoRA adapters: call apply_lora(lm) or load_adapters(lm, path) first")


def _attentions(lm: MagnetLM) -> tp.Iterator[MultiheadAttention]:
    for layer in lm.transformer.layers:
        yield layer.self_attn
        yield layer.cross_attention


def _check_targets(lm: MagnetLM, targets: tp.Optional[tp.Sequence[str]]) -> tp.List[str]:
    """The targets as a list, each an adaptable matrix name (optionally qualified, e.g. 'self_attn.out_proj')
    that matches at least one module of `lm` once the `in_proj` aliases exist."""
    if isinstance(targets, str) or (targets is not None and not list(targets)):
        raise ValueError(f"targets must be a non-empty list of names among {LORA_TARGETS}, got {targets!r}")
    targets = list(LORA_TARGETS if targets is None else targets)
    names = [name for name, _ in lm.named_modules()] + [
        f"{name}.in_proj" for name, module in lm.named_modules() if isinstance(module, MultiheadAttention)]
    for target in targets:
        if not isinstance(target, str) or target.rsplit(".", 1)[-1] not in LORA_TARGETS:
            raise ValueError(f"LoRA target {target!r} is not adaptable: use names among {LORA_TARGETS}")
        if not any(name == target or name.endswith("." + target) for name in names):
            raise ValueError(f"LoRA target {target!r} matches no module of the model: use names among {LORA_TARGETS}")
    return targets


def _check_base(lm: nn.Module, rank: int, alpha: float, dropout: float) -> None:
    if not isinstance(lm, MagnetLM):
        raise TypeError(f"apply_lora needs a MagnetLM, got {type(lm).__name__}")
    if is_lora(lm):
        raise ValueError("the model already has LoRA adapters: merge_lora(lm) first, or start from the base model")
    if lm.quantized is not None or any(m.kernels for m in [*lm.transformer.layers, *_attentions(lm)]):
        raise ValueError(f"LoRA needs the float model, got one with replaced kernels (quantized={lm.quantized!r}): "
                         f"load it without quantize")
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def _alias_in_proj(attn: MultiheadAttention) -> None:
    """Give `attn` an `in_proj` nn.Linear whose weight is the very Parameter `in_proj_weight`."""
    out_features, in_features = attn.in_proj_weight.shape
    alias = nn.Linear(in_features, out_features, bias=False, device="meta")
    alias.weight = attn.in_proj_weight
    attn.in_proj = alias


class _Full:
    """Kernel x -> peft layer(x), with x cast to the base weight's dtype as `lm.project` does."""

    def __init__(self, layer: nn.Module):
        self.layer = layer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(self.layer.get_base_layer().weight.dtype))


class _PackedRows:
    """Kernel for rows [start, stop) of an adapted packed projection: x W[start:stop]^T plus the same
    rows of each active adapter's B (A(dropout(x))) * scaling. Skips the other rows' work."""

    def __init__(self, layer: nn.Module, start: int, stop: int):
        self.layer, self.start, self.stop = layer, start, stop

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        layer, rows = self.layer, slice(self.start, self.stop)
        weight = layer.get_base_layer().weight
        x = x.to(weight.dtype)
        out = F.linear(x, weight[rows])
        if layer.disable_adapters or layer.merged:
            return out
        for name in layer.active_adapters:
            if name in layer.lora_A:
                lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
                low = lora_a(layer.lora_dropout[name](x.to(lora_a.weight.dtype)))  # [..., r]
                out = out + (F.linear(low, lora_b.weight[rows]) * layer.scaling[name]).to(out.dtype)
        return out


def _route(lm: MagnetLM) -> None:
    """Make the forward pass use the adapted layers, through the `kernels` hooks of lm.py."""
    base = _tuner_layer_class()
    for layer in lm.transformer.layers:
        for name in ("linear1", "linear2"):
            if isinstance(getattr(layer, name), base):
                layer.kernels[name] = _Full(getattr(layer, name))
    for attn in _attentions(lm):
        if isinstance(attn.out_proj, base):
            attn.kernels["out"] = _Full(attn.out_proj)
        if isinstance(attn.in_proj, base):
            dim = attn.in_proj_weight.shape[1]
            attn.kernels.update(qkv=_Full(attn.in_proj), q=_PackedRows(attn.in_proj, 0, dim),
                                kv=_PackedRows(attn.in_proj, dim, 3 * dim))


def apply_lora(lm: MagnetLM, rank: int = 16, alpha: float = 32, dropout: float = 0.0,
               targets: tp.Optional[tp.Sequence[str]] = None) -> MagnetLM:
    """Inject LoRA adapters W + (alpha / rank) B A into the `targets` matrices of `lm`, in place, and
    freeze everything else. Returns `lm` itself: `cfg`, `hidden`, `stage_logits` work as before, and at
    init (B = 0) the outputs are exactly the base model's. Only the lora_A/lora_B weights require grad."""
    peft = _peft()
    _check_base(lm, rank, alpha, dropout)
    targets = _check_targets(lm, targets)
    for attn in _attentions(lm):
        _alias_in_proj(attn)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    peft.inject_adapter_in_model(config, lm, adapter_name=_ADAPTER)
    lm.lora_targets = targets  # the order given, for save_adapters (peft keeps a set)
    _route(lm)
    return lm


def lora_info(model: MagnetLM) -> tp.Dict[str, str]:
    """rank, alpha, dropout and targets of the applied adapters, JSON-encoded strings."""
    _require_lora(model)
    config = model.peft_config[_ADAPTER]
    targets = getattr(model, "lora_targets", sorted(config.target_modules))
    values = dict(rank=config.r, alpha=config.lora_alpha, dropout=config.lora_dropout, targets=list(targets))
    return {key: json.dumps(value) for key, value in values.items()}


def lora_state_dict(model: MagnetLM) -> tp.Dict[str, torch.Tensor]:
    """The adapter weights only, keyed as peft saves them (e.g. 'transformer.layers.0.linear1.lora_A.weight')."""
    _require_lora(model)
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=_ADAPTER)


def _decoded(text: str) -> tp.Any:
    """A metadata string as the JSON value it encodes, or the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def save_adapters(model: MagnetLM, path: tp.Union[str, os.PathLike], meta: tp.Optional[tp.Dict[str, tp.Any]] = None
                  ) -> Path:
    """Write the adapters to a safetensors file, atomically (temporary file + os.replace). The metadata
    holds the format, rank/alpha/dropout/targets and `meta` (e.g. the base model id), all as strings."""
    from safetensors.torch import save_file

    info = lora_info(model)
    extra = {key: value if isinstance(value, str) else json.dumps(value) for key, value in (meta or {}).items()}
    for key in set(extra) & set(info):
        if _decoded(extra[key]) != json.loads(info[key]):
            raise ValueError(f"meta[{key!r}] = {extra[key]} contradicts the model's {info[key]}: "
                             f"leave {key} out of meta")
    metadata = {**extra, **info, "format": ADAPTERS_FORMAT}
    tensors = {key: value.detach().contiguous() for key, value in lora_state_dict(model).items()}
    path = Path(path)
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_adapters(path: tp.Union[str, os.PathLike]) -> tp.Tuple[tp.Dict[str, torch.Tensor], tp.Dict[str, str]]:
    """(tensors, metadata) of an adapters file written by `save_adapters`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    if metadata.get("format") != ADAPTERS_FORMAT or any(key not in metadata for key in _INFO_KEYS):
        raise ValueError(f"{path} is not an openmagnet LoRA adapters file (metadata format="
                         f"{metadata.get('format')!r}): write it with save_adapters")
    return tensors, metadata


def _mismatches(expected: tp.Dict[str, torch.Tensor], found: tp.Dict[str, torch.Tensor]) -> tp.List[str]:
    """Every missing, unexpected and mis-shaped adapter tensor, one line each."""
    problems = [f"missing {key}" for key in expected if key not in found]
    problems += [f"unexpected {key}" for key in found if key not in expected]
    problems += [f"{key}: file {list(found[key].shape)} vs model {list(value.shape)}"
                 for key, value in expected.items() if key in found and found[key].shape != value.shape]
    return problems


def load_adapters(lm: MagnetLM, path: tp.Union[str, os.PathLike]) -> MagnetLM:
    """Apply LoRA to the base `lm` with the rank/alpha/dropout/targets stored in `path`, then load every
    adapter tensor strictly. On a mismatch `lm` is left as it was and ValueError lists the problems."""
    tensors, metadata = read_adapters(path)
    info = {key: json.loads(metadata[key]) for key in _INFO_KEYS}
    model = apply_lora(lm, info["rank"], info["alpha"], info["dropout"], info["targets"])
    problems = _mismatches(lora_state_dict(model), tensors)
    if problems:
        _unload(model, merge=False)
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ValueError(f"adapters in {path} do not fit this model ({len(problems)} problems: {shown}): "
                         f"load them into the base model they were trained on")
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, tensors, adapter_name=_ADAPTER)
    return model


def _unload(model: MagnetLM, merge: bool) -> MagnetLM:
    """Replace every peft layer by its base layer (after folding the adapter in when `merge`), drop the
    kernels, the `in_proj` aliases and peft's attributes, and make every parameter trainable again. In place."""
    base = _tuner_layer_class()
    for layer in model.transformer.layers:
        layer.kernels.clear()
    for attn in _attentions(model):
        attn.kernels.clear()
    for name, module in list(model.named_modules()):
        if isinstance(module, base):
            if merge:
                module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    for attn in _attentions(model):
        del attn.in_proj
    for attr in ("peft_config", "lora_targets"):
        if hasattr(model, attr):
            delattr(model, attr)
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def merge_lora(model: MagnetLM) -> MagnetLM:
    """Fold the adapters into the base weights, in place, and return the plain MagnetLM: its state_dict
    has exactly the keys and shapes of `MagnetLM(model.cfg)` (audiocraft's layout) and no LoRA left."""
    _require_lora(model)
    model = _unload(model, merge=True)
    reference = MagnetLM.empty(model.cfg).state_dict()
    found = model.state_dict()
    if {k: v.shape for k, v in found.items()} != {k: v.shape for k, v in reference.items()}:
        raise RuntimeError(f"merge_lora left unexpected keys or shapes: {sorted(set(found) ^ set(reference))}")
    return model
