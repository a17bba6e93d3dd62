"""A training run's folder and what is built from it: the model of a fresh run or of a fine-tune
(`--continue-from`), the weights a run exports, the export itself.

Run folder layout:
    run.json                    what the run is (config, architecture, data, codec, base checkpoint)
    compression_state_dict.bin  the frozen codec, as it will be exported
    checkpoints/step_XXXXXXXX.pt  the last `keep_last` full training states
    best.pt                     EMA weights with the lowest validation cross-entropy
    metrics.jsonl               one JSON object per logged step / validation
    samples/step_XXXXXXXX/      audio generated during training
    tokens/                     the token cache (token_cache=true)
    adapters.safetensors        LoRA adapters alone (LoRA runs)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing as tp
from pathlib import Path

import torch
import torch.nn as nn

from .. import __version__
from ..config import LMConfig, TextConfig
from ..files import atomic_save, atomic_write_text
from ..lm import MagnetLM
from .presets import TrainConfig

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "best.pt"
CHECKPOINT_DIR = "checkpoints"
CODEC_COPY = "compression_state_dict.bin"


def step_seed(*parts: tp.Any) -> int:
    """A 63-bit seed from any parts, the same on every machine and Python run."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


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


@dataclasses.dataclass
class Setup:
    """The model and its companions for a run: fresh, fine-tuned (--continue-from) or resumed."""

    lm: MagnetLM
    lm_cfg: LMConfig
    text_cfg: TextConfig
    codec: nn.Module
    codec_package: dict
    base_xp: tp.Optional[dict]   # xp.cfg of the checkpoint fine-tuned from
    source: str                  # 'scratch' or what --continue-from named


def load_codec(spec: str, device: torch.device):
    from ..checkpoint import resolve_codec

    return resolve_codec(spec, device=device)


def build_setup(cfg: TrainConfig, device: torch.device, continue_from: tp.Optional[str] = None) -> Setup:
    """A fresh model of the configured scale on the configured codec, or the model (with its
    codec, text encoder and architecture) that `continue_from` names."""
    if continue_from:
        return _continue_setup(continue_from, device)
    codec, package = load_codec(cfg.codec, device)
    from ..conditioners import text_kind, text_width

    text_dim = text_width(cfg.text_encoder)
    if int(round(codec.sample_rate)) != cfg.sample_rate:
        raise ValueError(f"the codec {cfg.codec!r} works at {codec.sample_rate} Hz but the run is set to "
                         f"{cfg.sample_rate} Hz: pass a matching --codec or --set sample_rate={codec.sample_rate}")
    arch = cfg.architecture()
    lm_cfg = LMConfig(**arch, n_q=codec.num_codebooks, card=codec.cardinality, text_dim=text_dim,
                      subcodes_context=cfg.subcodes_context, span_len=cfg.span_len,
                      frame_rate=int(round(codec.frame_rate)), segment_duration=cfg.segment_duration)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        lm = MagnetLM(lm_cfg)
    init_weights(lm, torch.Generator().manual_seed(step_seed(cfg.seed, "init")))
    text_cfg = TextConfig(name=cfg.text_encoder, dim=text_dim, kind=text_kind(cfg.text_encoder))
    return Setup(lm.to(device), lm_cfg, text_cfg, codec, package, None, "scratch")


def _continue_setup(spec: str, device: torch.device) -> Setup:
    """--continue-from: a run folder or run checkpoint (its EMA weights), or an exported model
    (hub id, directory or state_dict.bin) with its codec and text encoder."""
    from ..checkpoint import CODEC_FILE, LM_FILE, CheckpointError, lm_from_package, load_package, resolve_file

    path = Path(spec).expanduser()
    run_dir = path if (path / RUN_FILE).is_file() else None
    if path.is_file() and path.suffix == ".pt" and (path.parent.parent / RUN_FILE).is_file():
        run_dir = path.parent.parent
    if run_dir is not None:
        info = read_run(run_dir)
        lm_cfg, text_cfg = LMConfig(**info["lm_config"]), TextConfig(**info["text_config"])
        state = path_weights(path if path.is_file() else run_dir)
        with torch.device("meta"):
            lm = MagnetLM(lm_cfg)
        lm.load_state_dict(state, strict=True, assign=True)
        codec, package = load_codec(str(run_dir / CODEC_COPY), device)
        return Setup(lm.to(device).float(), lm_cfg, text_cfg, codec, package, info.get("base_xp"), str(spec))
    try:
        lm_file = resolve_file(spec, LM_FILE)
        pkg = load_package(lm_file)
        lm, lm_cfg, text_cfg = lm_from_package(pkg, str(lm_file), device, torch.float32)
        codec_file = lm_file.parent / CODEC_FILE if path.is_file() else resolve_file(spec, CODEC_FILE)
    except CheckpointError as exc:
        raise ValueError(f"--continue-from {spec}: {exc}") from None
    codec, package = load_codec(str(codec_file), device)
    from ..checkpoint import parse_xp_cfg

    base_xp = parse_xp_cfg(pkg["xp.cfg"], str(lm_file))
    return Setup(lm, lm_cfg, text_cfg, codec, package, base_xp, str(spec))


def read_run(run_dir: Path, what: str = "a training run folder", start: tp.Optional[str] = None) -> dict:
    """The RUN_FILE of a run folder (LM or codec); a missing one is an error naming the command
    (`start`, default `openmagnet train --out RUN_DIR ...`) that makes such a folder."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        start = start or f"openmagnet train --out {run_dir} ..."
        raise ValueError(f"{run_dir} is not {what} (no {RUN_FILE}); start one with `{start}`")
    return json.loads(path.read_text())


def check_resume_overrides(overrides: tp.Mapping[str, tp.Any], changeable: tp.Sequence[str],
                           flag: str = "--resume") -> dict:
    """On a resume the run's own config holds; only the `changeable` (bookkeeping) settings may change.
    Returns the overrides, or raises ValueError naming the ones that may not change."""
    fixed = sorted(set(overrides) - set(changeable))
    if fixed:
        raise ValueError(f"{flag} continues the run as it was configured; {', '.join(fixed)} cannot change "
                         f"(only {', '.join(changeable)} can)")
    return dict(overrides)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def latest_checkpoint(run_dir: Path) -> tp.Optional[Path]:
    files = sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt"))
    return files[-1] if files else None


def save_checkpoint(state: dict, run_dir: Path, step: int, keep_last: int) -> Path:
    """Write checkpoints/step_XXXXXXXX.pt atomically, then delete all but the last `keep_last`
    (shared by the LM solver and the codec trainer)."""
    path = checkpoint_path(run_dir, step)
    atomic_save(state, path)
    for old in sorted(path.parent.glob("step_*.pt"))[:-keep_last]:
        old.unlink()
    return path


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows of a metrics.jsonl logged after `step` (a resumed run logs them again)."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if json.loads(r).get("step", 0) <= step]
        atomic_write_text("".join(r + "\n" for r in kept), path)


def path_weights(path: Path) -> tp.Dict[str, torch.Tensor]:
    """The weights to export or fine-tune from: a run's best EMA state (best.pt), else the EMA of
    its latest checkpoint; or the EMA of the given run checkpoint file."""
    path = Path(path)
    if path.is_dir():
        if (path / BEST_FILE).is_file():
            return torch.load(path / BEST_FILE, map_location="cpu", weights_only=True)["best_state"]
        last = latest_checkpoint(path)
        if last is None:
            raise ValueError(f"{path} has no checkpoint yet: train at least `save_every` steps first")
        path = last
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("ema"):
        return state["ema"]["state"]
    if "best_state" in state:
        return state["best_state"]
    raise ValueError(f"{path} holds no EMA or best weights: it is not an openmagnet run checkpoint")


def empty_lm(lm_cfg: LMConfig, device: torch.device) -> MagnetLM:
    """An uninitialised MagnetLM, for weights loaded right after."""
    with torch.device("meta"):
        lm = MagnetLM(lm_cfg)
    return lm.to_empty(device=device)


def export_run(run: tp.Union[str, Path], out: tp.Union[str, Path]) -> Path:
    """Export a run folder (its best EMA weights) or one run checkpoint (its EMA weights) as a
    model folder in the released layout (see export.py)."""
    from .export import build_xp_cfg, export_model

    run = Path(run)
    run_dir = run.parent.parent if run.is_file() else run
    info = read_run(run_dir)
    cfg = TrainConfig(**info["config"])
    lm_cfg, text_cfg = LMConfig(**info["lm_config"]), TextConfig(**info["text_config"])
    state = path_weights(run)
    codec_package = torch.load(run_dir / CODEC_COPY, map_location="cpu", weights_only=True)
    codec_name = str(codec_package.get("pretrained", cfg.codec))
    xp = build_xp_cfg(lm_cfg, text_cfg, task=cfg.task, sample_rate=cfg.sample_rate, codec_checkpoint=codec_name,
                      cfg_dropout=cfg.cfg_dropout, word_dropout=cfg.word_dropout, base=info.get("base_xp"),
                      extra={"openmagnet": {"version": __version__, "run": str(run_dir.resolve()),
                                            "source": info.get("source", "scratch"), "config": cfg.to_dict()}})
    return export_model(out, state, xp, codec_package)
