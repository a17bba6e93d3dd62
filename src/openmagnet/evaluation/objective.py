"""`openmagnet eval objective`: FAD, KLD (and CLAP, chroma) of a generated set against a reference set, as
audiocraft computes them, with the statistics a reader needs to trust them.

    report = evaluate_objective("generated/", "reference/", metrics=("fad", "kld"), preset="audiocraft-music",
                                fad_embedder="vggish")
    report["fad"], report["kld"], report["n_clips"], report["intervals"]

Generated and reference clips are paired by their path relative to their folder, without the extension
(`generated/rock/a.wav` <-> `reference/rock/a.flac`); each pair is compared at the reference's length (the
generated clip is cut to it, as audiocraft's evaluation passes the reference sizes). The presets:
`audiocraft-music` (FAD-VGGish, KLD with the 20-s PaSST, CLAP) and `audiocraft-sound` (FAD-VGGish, KLD with
the 10-s PaSST). Intervals are 95 % bootstrap intervals over clips (pairs resampled with replacement).

Each metric is a plug-in, one file in evaluation/metrics/ (fad, kld, clap, chroma): the registry there is what
this module, the `--metrics` choices and their help read; a new metric registers itself and needs no edit here.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import typing as tp
from pathlib import Path

import torch

from .metrics import PRESETS, Bootstrap, Clip, Options, choose, registered

PathLike = tp.Union[str, os.PathLike]
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


@dataclasses.dataclass(frozen=True)
class Pair:
    name: str
    generated: Path
    reference: Path


def _audio_files(folder: Path, what: str) -> tp.Dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"--{what} {folder}: no such folder; pass the folder of {what} audio")
    files = {str(p.relative_to(folder).with_suffix("")): p for p in sorted(folder.rglob("*"))
             if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()}
    if not files:
        raise ValueError(f"--{what} {folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in it")
    return files


def pair_clips(generated: PathLike, reference: PathLike) -> tp.List[Pair]:
    """The clips of both folders with the same relative name; a one-line error when none match."""
    gen, ref = _audio_files(Path(generated), "generated"), _audio_files(Path(reference), "reference")
    common = sorted(set(gen) & set(ref))
    if not common:
        raise ValueError(f"no clip of {generated} has a reference of the same name in {reference} (e.g. "
                         f"{next(iter(gen))!r} vs {next(iter(ref))!r}); name each generated clip like its reference")
    return [Pair(n, gen[n], ref[n]) for n in common]


def read_pair(pair: Pair) -> Clip:
    """Both clips of a pair, the generated one cut to the reference's duration."""
    ref_wav, ref_sr = _read(pair.reference)
    gen_wav, gen_sr = _read(pair.generated)
    length = int(round(ref_wav.shape[-1] / ref_sr * gen_sr))  # the reference's duration
    return Clip(pair.name, gen_wav[:, :length], gen_sr, ref_wav, ref_sr)


def _read(path: Path) -> tp.Tuple[torch.Tensor, int]:
    from ..audio import audio_read

    wav, sr = audio_read(path)
    if wav.shape[-1] == 0:
        raise ValueError(f"{path} holds 0 samples; remove it or regenerate it")
    if not torch.isfinite(wav).all():
        raise ValueError(f"{path} holds NaN or inf samples; regenerate it")
    return wav, sr


def evaluate_objective(generated: PathLike, reference: PathLike, *, metrics: tp.Sequence[str] = ("fad", "kld"),
                       preset: str = "audiocraft-music", fad_embedder: tp.Optional[str] = None,
                       weights_dir: tp.Optional[str] = None, fad_infinity: bool = False,
                       save_embeddings: tp.Optional[PathLike] = None, bootstrap: int = 200, seed: int = 0,
                       captions: tp.Optional[tp.Mapping[str, str]] = None, progress: bool = True) -> dict:
    """The report (a JSON-able dict): each metric's numbers at the top level (`fad`, `kld` (KL(ref || gen)),
    `kld_gen_ref`, `kld_both`, `clap`, `chroma`, ...), `n_clips`, `intervals`, `per_clip` rows, `settings`
    (preset, embedders, weights' fingerprints). The metrics are the plug-ins of evaluation/metrics/."""
    from tqdm import tqdm

    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    options = Options(preset=preset, weights_dir=weights_dir, seed=seed, captions=captions, progress=progress,
                      fad_embedder=fad_embedder, fad_infinity=fad_infinity, save_embeddings=save_embeddings)
    chosen = choose(metrics)
    for metric in chosen:
        metric.check(options)
    pairs = pair_clips(generated, reference)
    loaded = [metric.load(options) for metric in chosen]
    settings: dict = {"preset": preset, "metrics": list(metrics), "generated": str(generated),
                      "reference": str(reference)}
    rows: tp.List[dict] = []
    for metric in loaded:
        settings.update(metric.settings())
    for pair in tqdm(pairs, desc="eval", unit="clip", disable=not progress):
        clip = read_pair(pair)
        rows.append({"name": pair.name, "reference_seconds": clip.reference.shape[-1] / clip.reference_sr,
                     "generated_seconds": clip.generated.shape[-1] / clip.generated_sr,
                     "reference_sr": clip.reference_sr, "generated_sr": clip.generated_sr})
        for metric in loaded:
            rows[-1].update(metric.score(clip))
    report: dict = {"n_clips": len(pairs), "settings": settings, "per_clip": rows, "intervals": {},
                    "seconds": {"reference": float(sum(r["reference_seconds"] for r in rows)),
                                "generated": float(sum(r["generated_seconds"] for r in rows))},
                    "sample_rates": {"reference": sorted({r["reference_sr"] for r in rows}),
                                     "generated": sorted({r["generated_sr"] for r in rows})}}
    for metric in loaded:
        summary = metric.summarise(Bootstrap(bootstrap, seed, progress))
        report.update(summary.values)
        report["intervals"].update(summary.intervals)
    return report


def per_clip_csv(report: dict) -> str:
    rows = report["per_clip"]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def summary_table(report: dict) -> str:
    """A markdown table of the headline numbers with their intervals and n."""
    lines = ["| metric | value | 95 % interval (clips resampled) |", "|---|---|---|"]
    for metric in registered().values():
        lines += metric.table_rows(report)
    lines.append(f"\nn = {report['n_clips']} clip pairs, {report['seconds']['generated']:.1f} s generated, "
                 f"{report['seconds']['reference']:.1f} s reference")
    return "\n".join(lines)


def load_captions(source: PathLike) -> tp.Dict[str, str]:
    """Captions by clip name from: a JSON object {name: caption}; a JSONL manifest whose lines hold 'path' and
    'description' (named by the path's stem); a tab-separated 'name<TAB>caption' file; or a folder of side-car
    JSON files with a 'description' (named by their path relative to the folder, without .json)."""
    import json

    path = Path(source)
    if path.is_dir():
        out = {}
        for p in sorted(path.rglob("*.json")):
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(data, dict) and isinstance(data.get("description"), str):
                name = str(p.relative_to(path).with_suffix(""))
                out[name] = data["description"]
                out.setdefault(Path(name).name, data["description"])
        if not out:
            raise ValueError(f"--captions {path}: no side-car JSON with a 'description' in it")
        return out
    if not path.is_file():
        raise ValueError(f"--captions {path}: no such file or folder")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"--captions {path}: expected a JSON object of name -> caption")
        return {str(Path(k).with_suffix("")) if Path(k).suffix in AUDIO_EXTENSIONS else k: v for k, v in data.items()}
    if path.suffix == ".jsonl":
        out = {}
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if "path" not in row or not isinstance(row.get("description"), str):
                    raise ValueError(f"--captions {path}:{number}: a line needs 'path' and 'description'")
                out[Path(row["path"]).stem] = row["description"]
        return out
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)
