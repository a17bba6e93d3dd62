"""`openmagnet eval model`: generate one clip per caption of a dataset at its reference's length with the
settings of audiocraft's evaluation grids, then score the set with `evaluate_objective`.

    items = dataset_items("musiccaps/")                   # a manifest: audio, duration, side-car description
    generate_set(model, items, "out/generated", settings=grid_settings(model))
    report = evaluate_model(...)                           # both steps, plus the model-card comparison

The grid settings (audiocraft's `magnet_32khz.yaml` / `audio_magnet_16khz.yaml`, SPEC 3.8): music temperature
3, top-p 0.9, CFG 10 -> 1; sound temperature 3.5, top-p 0.8, CFG 20 -> 1; 'nonoverlap' spans; first-stage
steps 20 per 10 s of the model's length ([20,10,10,10] for 10-s models, [60,10,10,10] for 30-s ones). Each
clip is generated for ceil(seconds x 50) frames (at most the model's length), loudness-normalised to -14 LUFS
without compressor, written atomically under its reference's relative name; clips already written are kept,
so an interrupted run resumes. Under torchrun each process generates every WORLD_SIZE-th batch and rank 0
scores.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import typing as tp
import zlib
from pathlib import Path

import torch

PathLike = tp.Union[str, os.PathLike]

MODEL_CARD = {  # model: (FAD, KLD, CLAP) on MusicCaps (music) or AudioCaps (sound), model_cards/MAGNET_MODEL_CARD.md
    "facebook/magnet-small-10secs": (4.22, 1.11, 0.28),
    "facebook/magnet-medium-10secs": (4.61, 1.14, 0.28),
    "facebook/magnet-small-30secs": (4.35, 1.17, 0.28),
    "facebook/magnet-medium-30secs": (4.63, 1.20, 0.28),
    "facebook/audio-magnet-small": (3.21, 1.42, None),
    "facebook/audio-magnet-medium": (2.32, 1.64, None),
}


@dataclasses.dataclass(frozen=True)
class EvalItem:
    name: str         # relative path of the reference under the dataset's root, without extension
    path: Path        # the reference audio
    seconds: float
    description: str


def dataset_items(manifest: PathLike, limit: tp.Optional[int] = None) -> tp.Tuple[Path, tp.List[EvalItem]]:
    """(root, items): the manifest's clips with their side-car 'description' (the first one when a list), named
    by their path relative to the common folder of all clips."""
    from ..data.info import find_info_path, read_info_json
    from ..data.manifest import read_manifest

    metas = read_manifest(manifest)
    if limit is not None:
        metas = metas[:limit]
    root = Path(os.path.commonpath([str(Path(m.path).parent) for m in metas]))
    items = []
    for meta in metas:
        info = find_info_path(meta.path, meta.info_path)
        data = read_info_json(info) if info is not None else {}
        text = data.get("description")
        text = next((t for t in text if isinstance(t, str)), None) if isinstance(text, list) else text
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{meta.path}: no side-car JSON with a 'description'; write "
                             f"{Path(meta.path).with_suffix('.json')} with the caption")
        name = str(Path(meta.path).relative_to(root).with_suffix(""))
        items.append(EvalItem(name, Path(meta.path), float(meta.duration), text.strip()))
    return root, items


def grid_settings(sample_rate: int, max_duration: float) -> dict:
    """set_generation_params() keywords of audiocraft's evaluation grid for a model of this kind."""
    sound = sample_rate == 16000
    return dict(use_sampling=True, top_k=0, top_p=0.8 if sound else 0.9, temperature=3.5 if sound else 3.0,
                max_cfg_coef=20.0 if sound else 10.0, min_cfg_coef=1.0,
                decoding_steps=[int(20 * max_duration // 10), 10, 10, 10], span_arrangement="nonoverlap")


def plan_batches(items: tp.Sequence[EvalItem], frame_rate: float, max_frames: int,
                 batch_size: int) -> tp.List[tp.Tuple[int, tp.List[EvalItem]]]:
    """[(frames, items)]: clips grouped by generated length (one length per batch), in a fixed order, so that
    a resumed or sharded run forms the same batches."""
    by_frames: tp.Dict[int, tp.List[EvalItem]] = {}
    for item in sorted(items, key=lambda i: i.name):
        frames = min(max_frames, math.ceil(item.seconds * frame_rate))
        by_frames.setdefault(max(frames, 1), []).append(item)
    return [(frames, group[i:i + batch_size]) for frames, group in sorted(by_frames.items())
            for i in range(0, len(group), batch_size)]


def output_path(out: Path, item: EvalItem) -> Path:
    return out / (item.name + ".wav")


def _check_settings(out: Path, record: dict) -> None:
    """The first run writes out/generation.json; a later run with other settings would mix two sets."""
    from ..files import atomic_write_text

    file = out / "generation.json"
    if file.is_file():
        previous = json.loads(file.read_text(encoding="utf-8"))
        if previous != record:
            changed = sorted(k for k in set(previous) | set(record) if previous.get(k) != record.get(k))
            raise ValueError(f"{out} holds clips generated with other settings ({', '.join(changed)} differ); pass "
                             f"a new --out or delete it")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(record, indent=1) + "\n", file)


def generate_set(model, items: tp.Sequence[EvalItem], out: PathLike, *, settings: dict, batch_size: int = 8,
                 seed: int = 0, rank: int = 0, world: int = 1, progress: bool = True) -> tp.Dict[str, int]:
    """Generate the clips of this process's batches that are not written yet; {'generated', 'kept'}."""
    from tqdm import tqdm

    from ..audio import audio_write
    from ..config import generation_params
    from ..request import Request, run

    out = Path(out)
    max_frames = int(model.max_duration * model.frame_rate)
    batches = plan_batches(items, model.frame_rate, max_frames, batch_size)
    mine = [b for i, b in enumerate(batches) if i % world == rank]
    params = generation_params(**settings)  # these settings alone (the API's defaults for the rest), per call
    counts = {"generated": 0, "kept": 0}
    for frames, batch in tqdm(mine, desc="generate", unit="batch", disable=not progress):
        todo = [item for item in batch if not output_path(out, item).is_file()]
        counts["kept"] += len(batch) - len(todo)
        if not todo:
            continue
        request = Request(prompts=[item.description for item in batch], duration=frames / model.frame_rate,
                          seed=seed * 1_000_003 + zlib.crc32(batch[0].name.encode()), params=params)
        wavs = run(model, request).audio
        for item, wav in zip(batch, wavs, strict=True):
            if item in todo:
                path = output_path(out, item)
                path.parent.mkdir(parents=True, exist_ok=True)
                audio_write(path, wav.cpu(), model.sample_rate, strategy="loudness", loudness_headroom_db=14,
                            loudness_compressor=False, add_suffix=False, log_clipping=False)
                counts["generated"] += 1
    return counts


def _distributed() -> tp.Tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and torch.distributed.is_available() and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def evaluate_model(model_name: str, dataset: PathLike, out: PathLike, *, metrics: tp.Optional[tp.Sequence[str]] = None,
                   fad_embedder: tp.Optional[str] = None, weights_dir: tp.Optional[str] = None, batch_size: int = 8,
                   seed: int = 0, limit: tp.Optional[int] = None, device: tp.Optional[str] = None,
                   settings: str = "grid", preset: tp.Optional[str] = None,
                   progress: bool = True) -> tp.Optional[dict]:
    """Generate (resumably, sharded under torchrun) and score; the report on rank 0, None on the others.
    settings: 'grid' (audiocraft's evaluation grid) or 'model' (the model's own recommended settings, e.g. the
    stored ones of the bundled demo model). preset: the metrics' preset (default by the model's sample rate)."""
    from ..api import MAGNeT
    from .objective import PRESETS, evaluate_objective

    root, items = dataset_items(dataset, limit)
    rank, world = _distributed()
    if world > 1 and device is None and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # one GPU per process
        torch.cuda.set_device(torch.device(device))
    model = MAGNeT.get_pretrained(model_name, device=device)
    if settings not in ("grid", "model"):
        raise ValueError(f"--settings must be 'grid' or 'model', got {settings!r}")
    params = grid_settings(model.sample_rate, model.max_duration) if settings == "grid" else \
        model.recommended_params()
    out = Path(out)
    record = {"model": str(model_name), "settings": params, "seed": seed, "batch_size": batch_size,
              "loudness": "-14 LUFS, no compressor"}
    if rank == 0:
        _check_settings(out, record)
    if world > 1:
        torch.distributed.barrier()
    counts = generate_set(model, items, out / "generated", settings=params, batch_size=batch_size, seed=seed,
                          rank=rank, world=world, progress=progress and rank == 0)
    if world > 1:
        torch.distributed.barrier()
        if rank != 0:
            return None
    preset = preset or ("audiocraft-sound" if model.sample_rate == 16000 else "audiocraft-music")
    metrics = tuple(metrics or PRESETS[preset]["metrics"])
    report = evaluate_objective(out / "generated", root, metrics=metrics, preset=preset, fad_embedder=fad_embedder,
                                weights_dir=weights_dir, captions={i.name: i.description for i in items},
                                seed=seed, progress=progress)
    report["generation"] = {**record, **counts, "n_items": len(items)}
    report["model_card"] = MODEL_CARD.get(str(model_name))
    return report


def model_card_table(report: dict) -> str:
    """Our numbers beside the model card's (where the model is one of the six released ones)."""
    card = report.get("model_card")
    lines = ["| | FAD | KLD | CLAP | n |", "|---|---|---|---|---|"]

    def cell(value: tp.Any) -> str:
        return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    lines.append(f"| openmagnet | {cell(report.get('fad'))} | {cell(report.get('kld'))} | {cell(report.get('clap'))} "
                 f"| {report['n_clips']} |")
    if card:
        data = 'AudioCaps' if card[2] is None else 'MusicCaps, 5,469'
        lines.append(f"| model card | {cell(card[0])} | {cell(card[1])} | {cell(card[2])} | {data} |")
    return "\n".join(lines)
