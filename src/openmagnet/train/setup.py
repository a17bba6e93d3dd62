"""One way into a training run. Whether a run is fresh, fine-tunes a model (`--continue-from`) or
resumes its own folder (`--resume`), it starts the same way, in this order:

    spec = run_spec(out, cfg, data, ...)      what the run is: its config, data, source (cheap)
    model = build_model(spec, out, device)    the LM, text config and frozen codec it trains with
    cfg = final_config(spec, model)           the config, now true to the model (a fine-tune keeps
                                              its checkpoint's length, sample rate, codec, text encoder)
    data = load_data(cfg, spec)               the manifests read and checked once, the datasets

The solver (solver.py) takes it from there; the run folder's files are in runs.py.
"""
from __future__ import annotations

import dataclasses
import math
import time
import typing as tp
from pathlib import Path

import torch
import torch.nn as nn

from .. import __version__
from ..checkpoint import (CODEC_FILE, LM_FILE, CheckpointError, lm_from_package, load_package, parse_xp_cfg,
                          resolve_codec, resolve_file)
from ..conditioners import text_kind, text_width
from ..config import LMConfig, TextConfig
from ..data.dataset import SegmentDataset
from ..data.info import check_metadata
from ..data.manifest import AudioMeta, read_manifest
from ..data.tokens import TokenSegmentDataset, build_token_cache
from ..lm import MagnetLM
from ..runtime import training_precision
from . import distributed as dist_utils
from .presets import CUSTOM_SCALE, SCALES, TrainConfig
from .runs import CODEC_COPY, RUN_FILE, check_resume_overrides, latest_checkpoint, path_weights, read_run, step_seed

# what --resume may change: bookkeeping only, never what the run computes
RESUME_CHANGEABLE = ("max_steps", "log_every", "valid_every", "save_every", "keep_last", "generate_every",
                     "num_workers", "dist_timeout_minutes")
_CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------
# What the run is
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What a run is, before anything heavy is loaded."""

    cfg: TrainConfig                      # as configured (final_config adapts it to a fine-tuned model)
    data: str                             # manifest folder of the training audio
    valid: tp.Optional[str]               # manifest folder of held-out audio (None: validate on `data`)
    external_metadata: tp.Optional[str]   # folder of sound side-car JSON files
    source: tp.Optional[str]              # what --continue-from named; None for a model trained from scratch
    resume: bool                          # continue the run in its folder from its last checkpoint


def run_spec(out: tp.Union[str, Path], cfg: tp.Optional[TrainConfig], data: tp.Optional[str], *,
             valid: tp.Optional[str] = None, continue_from: tp.Optional[str] = None, resume: bool = False,
             resume_overrides: tp.Optional[dict] = None, overwrite: bool = False,
             external_metadata: tp.Optional[str] = None, device: torch.device = _CPU) -> RunSpec:
    """The run in folder `out`: on resume, what its run.json says (with the bookkeeping settings of
    `resume_overrides`); otherwise the arguments, refusing to start over a run already there unless
    `overwrite`. The precision is resolved for `device` (reduced precision that would be slow here is
    refused before anything is loaded)."""
    out = Path(out)
    if resume:
        info = read_run(out)
        overrides = check_resume_overrides(resume_overrides or {}, RESUME_CHANGEABLE, info["config"])
        cfg = TrainConfig(**{**info["config"], **overrides})
        source = info.get("source", "scratch")
        spec = RunSpec(cfg, info["data"], info.get("valid"), info.get("external_metadata"),
                       None if source == "scratch" else source, resume=True)
    else:
        if out.exists() and latest_checkpoint(out) is not None and not overwrite:
            raise ValueError(f"{out} already holds a training run: add --resume to continue it, "
                             f"or choose another --out (nothing there is overwritten)")
        if cfg is None:
            raise ValueError("a new run needs a TrainConfig (train.presets.preset_config); cfg=None is for --resume")
        if data is None:
            raise ValueError("--data is required: the manifest folder written by `openmagnet data index`")
        spec = RunSpec(cfg, str(data), valid, external_metadata, continue_from or None, resume=False)
    precision = resolve_precision(spec.cfg.precision, device, resume)
    return dataclasses.replace(spec, cfg=dataclasses.replace(spec.cfg, precision=precision))


def resolve_precision(precision: str, device: torch.device, resume: bool = False) -> str:
    """The autocast precision a run uses on `device` (`runtime.training_precision`: `auto` is fp16 on CUDA, bf16
    on a CPU with native bf16 matrix products, fp32 elsewhere); reduced precision that would be slower than fp32
    on this CPU (fp16 always, bf16 without native support) is refused in the flags' words."""
    resolved, reason = training_precision(precision, device)
    if reason is None:
        return resolved
    fix = ("resume this run where its precision is fast (a CPU with native bf16, or CUDA)" if resume else
           "use --precision auto or fp32" + (" (fp16 is for CUDA)" if precision == "fp16" else ""))
    raise ValueError(f"--precision {precision} refused: {reason}: {fix}")


# ------------------------------------------------------------------------------------------------
# The model it trains
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    """The model a run trains and its companions."""

    lm: MagnetLM
    lm_cfg: LMConfig
    text_cfg: TextConfig
    codec: nn.Module             # frozen
    codec_package: dict          # the codec as an export writes it (compression_state_dict.bin)
    codec_spec: str              # where the codec came from, as --codec takes it
    base_xp: tp.Optional[dict]   # xp.cfg of the checkpoint fine-tuned from


def build_model(spec: RunSpec, out: tp.Union[str, Path], device: torch.device) -> Setup:
    """The model of the run: on resume, the architecture of run.json with zeroed weights (the
    checkpoint's come next) and the run's copy of its codec; for a fine-tune, the model, codec and
    text encoder that `spec.source` names; else a fresh model of the configured scale."""
    if spec.resume:
        return _resumed_model(Path(out), device)
    if spec.source is not None:
        return _continued_model(spec.source, device)
    return _fresh_model(spec.cfg, device)


def final_config(spec: RunSpec, model: Setup) -> TrainConfig:
    """The run's config, true to its model: a fine-tune keeps the architecture (recorded as the scale it matches,
    else 'custom' with its sizes), length, sample rate, codec and text encoder of the checkpoint it starts from
    (a resumed run's config already does)."""
    if spec.source is None or spec.resume:
        return spec.cfg
    arch = dict(dim=model.lm_cfg.dim, num_heads=model.lm_cfg.num_heads, num_layers=model.lm_cfg.num_layers)
    scale = next((name for name, sizes in SCALES.items() if sizes == arch), CUSTOM_SCALE)  # not --model-scale's
    sizes = arch if scale == CUSTOM_SCALE else dict(dim=None, num_heads=None, num_layers=None)
    return dataclasses.replace(spec.cfg, segment_duration=model.lm_cfg.segment_duration,
                               sample_rate=int(round(model.codec.sample_rate)), text_encoder=model.text_cfg.name,
                               codec=model.codec_spec, model_scale=scale, **sizes)


def _fresh_model(cfg: TrainConfig, device: torch.device) -> Setup:
    codec, package = resolve_codec(cfg.codec, device=device)
    if int(round(codec.sample_rate)) != cfg.sample_rate:
        raise ValueError(f"the codec {cfg.codec!r} works at {codec.sample_rate} Hz but the run is set to "
                         f"{cfg.sample_rate} Hz: pass a matching --codec or --set sample_rate={codec.sample_rate}")
    text_dim = text_width(cfg.text_encoder)
    lm_cfg = LMConfig(**cfg.architecture(), n_q=codec.num_codebooks, card=codec.cardinality, text_dim=text_dim,
                      subcodes_context=cfg.subcodes_context, span_len=cfg.span_len,
                      frame_rate=int(round(codec.frame_rate)), segment_duration=cfg.segment_duration)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        lm = MagnetLM(lm_cfg)
    init_weights(lm, torch.Generator().manual_seed(step_seed(cfg.seed, "init")))
    text_cfg = TextConfig(name=cfg.text_encoder, dim=text_dim, kind=text_kind(cfg.text_encoder))
    return Setup(lm.to(device), lm_cfg, text_cfg, codec, package, cfg.codec, None)


def _continued_model(source: str, device: torch.device) -> Setup:
    """--continue-from: a run folder or run checkpoint (its EMA weights), or an exported model
    (hub id, directory or state_dict.bin) with its codec and text encoder."""
    path = Path(source).expanduser()
    run_dir = path if (path / RUN_FILE).is_file() else None
    if path.is_file() and path.suffix == ".pt" and (path.parent.parent / RUN_FILE).is_file():
        run_dir = path.parent.parent
    if run_dir is not None:
        info = read_run(run_dir)
        lm_cfg, text_cfg = LMConfig(**info["lm_config"]), TextConfig(**info["text_config"])
        lm = MagnetLM.empty(lm_cfg)
        lm.load_state_dict(path_weights(path if path.is_file() else run_dir), strict=True, assign=True)
        codec, package = resolve_codec(run_dir / CODEC_COPY, device=device)
        return Setup(lm.to(device).float(), lm_cfg, text_cfg, codec, package, str(run_dir), info.get("base_xp"))
    try:
        lm_file = resolve_file(source, LM_FILE)
        pkg = load_package(lm_file)
        lm, lm_cfg, text_cfg = lm_from_package(pkg, str(lm_file), device, torch.float32)
        codec_file = lm_file.parent / CODEC_FILE if path.is_file() else resolve_file(source, CODEC_FILE)
        base_xp = parse_xp_cfg(pkg["xp.cfg"], str(lm_file))
    except CheckpointError as exc:
        raise ValueError(f"--continue-from {source}: {exc}") from None
    codec, package = resolve_codec(codec_file, device=device)
    return Setup(lm, lm_cfg, text_cfg, codec, package, source, base_xp)


def _resumed_model(out: Path, device: torch.device) -> Setup:
    info = read_run(out)
    lm_cfg, text_cfg = LMConfig(**info["lm_config"]), TextConfig(**info["text_config"])
    lm = MagnetLM.empty(lm_cfg, device).float()  # the weights come from the checkpoint
    with torch.no_grad():  # until then, defined values (LoRA merges for the EMA before the load: no NaN)
        for tensor in [*lm.parameters(), *lm.buffers()]:
            tensor.zero_()
    codec, package = resolve_codec(out / CODEC_COPY, device=device)
    return Setup(lm, lm_cfg, text_cfg, codec, package, info["config"]["codec"], info.get("base_xp"))


def init_weights(lm: MagnetLM, generator: torch.Generator) -> None:
    """From-scratch initialisation of the reference (SPEC §4.2): truncated normals (+-3 std); the
    Linear layers of layer i get std 1 / sqrt(in_features) / sqrt(2 (i + 1)), embeddings and
    heads 1 / sqrt(dim); the packed in-projections keep PyTorch's default uniform init; norms 1 / 0."""
    def normal(weight: torch.Tensor, std: float) -> None:
        nn.init.trunc_normal_(weight, std=std, a=-3 * std, b=3 * std, generator=generator)

    dim = lm.cfg.dim
    with torch.no_grad():
        for i, layer in enumerate(lm.transformer.layers):
            for attn in (layer.self_attn, layer.cross_attention):
                nn.init.kaiming_uniform_(attn.in_proj_weight, a=math.sqrt(5), generator=generator)
            for linear in (layer.self_attn.out_proj, layer.cross_attention.out_proj, layer.linear1, layer.linear2):
                normal(linear.weight, 1 / math.sqrt(linear.in_features) / math.sqrt(2 * (i + 1)))
            for norm in (layer.norm1, layer.norm_cross, layer.norm2):
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)
        for emb in lm.emb:
            normal(emb.weight, 1 / math.sqrt(dim))
        for head in lm.linears:
            normal(head.weight, 1 / math.sqrt(dim))
        nn.init.ones_(lm.out_norm.weight)
        nn.init.zeros_(lm.out_norm.bias)
        proj = lm.condition_provider.output_proj
        bound = 1 / math.sqrt(proj.in_features)
        nn.init.kaiming_uniform_(proj.weight, a=math.sqrt(5), generator=generator)
        nn.init.uniform_(proj.bias, -bound, bound, generator=generator)


def run_info(spec: RunSpec, cfg: TrainConfig, model: Setup) -> dict:
    """What a new run folder's RUN_FILE records: the final config, the data, the architecture, the
    text encoder, what the run started from."""
    return {
        "openmagnet_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "config": cfg.to_dict(), "data": spec.data, "valid": spec.valid, "external_metadata": spec.external_metadata,
        "lm_config": dataclasses.asdict(model.lm_cfg), "text_config": dataclasses.asdict(model.text_cfg),
        "source": spec.source or "scratch", "base_xp": model.base_xp,
    }


# ------------------------------------------------------------------------------------------------
# The data it trains on
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunData:
    """The run's manifests (read and checked once) and its datasets."""

    train_metas: tp.List[AudioMeta]
    valid_metas: tp.List[AudioMeta]
    train_set: SegmentDataset
    valid_set: SegmentDataset
    train_args: dict   # the datasets' settings, for the token-cache datasets that replace them
    valid_args: dict


def load_data(cfg: TrainConfig, spec: RunSpec) -> RunData:
    """Read the manifests, check their metadata for the task, and build the training and
    validation segment datasets of the final config."""
    train_metas = read_manifest(spec.data)
    check_metadata(train_metas, cfg.task, spec.external_metadata)
    valid_metas = train_metas
    if spec.valid:
        valid_metas = read_manifest(spec.valid)
        check_metadata(valid_metas, cfg.task, spec.external_metadata)
    common = dict(kind=cfg.task, segment_duration=cfg.segment_duration, sample_rate=cfg.sample_rate,
                  channels=cfg.channels, min_segment_ratio=cfg.min_segment_ratio,
                  external_metadata_dir=spec.external_metadata)
    train_args = dict(seed=cfg.seed, merge_text_p=cfg.merge_text_p, drop_desc_p=cfg.drop_desc_p,
                      drop_other_p=cfg.drop_other_p, **common)
    valid_args = dict(seed=step_seed(cfg.seed, "valid"), **common)
    return RunData(train_metas, valid_metas, SegmentDataset(train_metas, **train_args),
                   SegmentDataset(valid_metas, **valid_args), train_args, valid_args)


def use_token_cache(data: RunData, cfg: TrainConfig, model: Setup, cache: Path, *, rank: int, world: int,
                    device: torch.device, progress: bool) -> RunData:
    """Tokenise every file once (each process a share of the files; kept in `cache` across resumes),
    then draw token segments instead of audio segments."""
    metas = list({m.path: m for m in [*data.train_metas, *data.valid_metas]}.values())
    build_token_cache(metas[rank::world], model.codec, cache, sample_rate=cfg.sample_rate, channels=cfg.channels,
                      device=device, progress=progress)
    dist_utils.barrier()
    rate = model.lm_cfg.frame_rate
    return dataclasses.replace(data, train_set=TokenSegmentDataset(data.train_metas, cache, rate, **data.train_args),
                               valid_set=TokenSegmentDataset(data.valid_metas, cache, rate, **data.valid_args))
