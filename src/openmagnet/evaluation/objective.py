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
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import typing as tp
from pathlib import Path

import numpy as np
import torch

from .frechet import FrechetStats, fad_inf, frechet_distance
from .kld import KLDAccumulator

PathLike = tp.Union[str, os.PathLike]
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
PRESETS = {"audiocraft-music": {"kld": "20s", "fad": "vggish", "metrics": ("fad", "kld", "clap")},
           "audiocraft-sound": {"kld": "10s", "fad": "vggish", "metrics": ("fad", "kld")}}
METRICS = ("fad", "kld", "clap", "chroma")
EMBEDDERS = ("vggish", "crepe")


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


def _read(path: Path) -> tp.Tuple[torch.Tensor, int]:
    from ..audio import audio_read

    wav, sr = audio_read(path)
    if wav.shape[-1] == 0:
        raise ValueError(f"{path} holds 0 samples; remove it or regenerate it")
    if not torch.isfinite(wav).all():
        raise ValueError(f"{path} holds NaN or inf samples; regenerate it")
    return wav, sr


CLIP_STATS_BYTES = 1 << 30  # per-clip Frechet sums kept for the bootstrap up to this size (VGGish: 8000 clips)


def _bootstrap(values: np.ndarray, statistic: tp.Callable[[np.ndarray], float], draws: int,
               seed: int, desc: tp.Optional[str] = None) -> tp.Optional[tp.Dict[str, float]]:
    """95 % percentile interval of statistic(indices of clips) over `draws` resamples of the clips; a progress
    bar named `desc` where given (the FAD's resamples take seconds each)."""
    n = len(values)
    if draws <= 0 or n < 2:
        return None
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    draws_bar = tqdm(range(draws), desc=desc, unit="draw", disable=desc is None)
    stats = np.array([statistic(rng.integers(0, n, n)) for _ in draws_bar])
    stats = stats[np.isfinite(stats)]
    return {"low": float(np.percentile(stats, 2.5)), "high": float(np.percentile(stats, 97.5)), "draws": draws}


def evaluate_objective(generated: PathLike, reference: PathLike, *, metrics: tp.Sequence[str] = ("fad", "kld"),
                       preset: str = "audiocraft-music", fad_embedder: tp.Optional[str] = None,
                       weights_dir: tp.Optional[str] = None, fad_infinity: bool = False,
                       save_embeddings: tp.Optional[PathLike] = None, bootstrap: int = 200, seed: int = 0,
                       captions: tp.Optional[tp.Mapping[str, str]] = None, progress: bool = True) -> dict:
    """The report (a JSON-able dict): top-level `fad`, `kld` (KL(ref || gen)), `kld_gen_ref`, `kld_both`,
    `clap`, `n_clips`, `intervals`, `per_clip` rows, `settings` (preset, embedders, weights' fingerprints)."""
    from tqdm import tqdm

    from ..audio import convert_audio

    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose among {', '.join(METRICS)}")
    fad_embedder = fad_embedder or PRESETS[preset]["fad"]
    if fad_embedder not in EMBEDDERS:
        raise ValueError(f"--fad-embedder must be one of {', '.join(EMBEDDERS)}, got {fad_embedder!r}")
    pairs = pair_clips(generated, reference)
    settings: dict = {"preset": preset, "metrics": list(metrics), "generated": str(generated),
                      "reference": str(reference)}
    embedder = passt = clap = None
    if "fad" in metrics:
        if fad_embedder == "vggish":
            from .vggish import VGGish

            embedder = VGGish.load(weights_dir=weights_dir)
            embed = embedder.embed_fad
        else:
            from .crepe import Crepe

            embedder = Crepe.load(weights_dir=weights_dir)
            embed = embedder.embed
        settings["fad_embedder"] = {"name": fad_embedder, "weights": embedder.fingerprint}
    if "kld" in metrics:
        from .passt import PaSST

        passt = PaSST.load(PRESETS[preset]["kld"], weights_dir=weights_dir)
        settings["kld_model"] = {"name": f"passt-{passt.variant}", "weights": passt.fingerprint}
    chroma = None
    if "chroma" in metrics:
        from .chroma import Chroma

        chroma = Chroma(argmax=True)
        settings["chroma"] = {"n_fft": chroma.n_fft, "hop": chroma.hop, "argmax": True}
    chroma_rows: tp.List[tp.Tuple[float, int]] = []
    if "clap" in metrics:
        from .clap import ClapScorer

        if captions is None:
            raise ValueError("the CLAP score needs the captions: pass --captions MANIFEST (data.jsonl with "
                             "'path' and 'description', or a folder of side-car JSON)")
        clap = ClapScorer.load(weights_dir=weights_dir, seed=seed)
        settings["clap_model"] = {"weights": clap.fingerprint, "crop": f"10-s window at a random offset, seed {seed}"}
    rows: tp.List[dict] = []
    gen_frames: tp.List[torch.Tensor] = []
    ref_frames: tp.List[torch.Tensor] = []
    kld = KLDAccumulator()
    kld_rows: tp.List[tp.Tuple[float, float, int]] = []
    for pair in tqdm(pairs, desc="eval", unit="clip", disable=not progress):
        ref_wav, ref_sr = _read(pair.reference)
        gen_wav, gen_sr = _read(pair.generated)
        length = int(round(ref_wav.shape[-1] / ref_sr * gen_sr))  # the reference's duration
        gen_wav = gen_wav[:, :length]
        row: dict = {"name": pair.name, "reference_seconds": ref_wav.shape[-1] / ref_sr,
                     "generated_seconds": gen_wav.shape[-1] / gen_sr, "reference_sr": ref_sr, "generated_sr": gen_sr}
        if embedder is not None:
            g, r = embed(gen_wav, gen_sr), embed(ref_wav, ref_sr)
            gen_frames.append(g)
            ref_frames.append(r)
            row["fad_frames"] = int(g.shape[0])
        if passt is not None:
            pg, pr = passt.label_distributions(gen_wav, gen_sr), passt.label_distributions(ref_wav, ref_sr)
            if pg.shape[0] != pr.shape[0]:
                raise ValueError(f"{pair.name}: {pg.shape[0]} PaSST segments generated against {pr.shape[0]} in "
                                 f"the reference; the generated clip is shorter than its reference")
            if pg.shape[0]:
                pq = kld.update(pg, pr)
                kld_rows.append((float(pq.sum()), float(kld.rows[-1][:, 1].sum()), int(pq.shape[0])))
                row["kld"] = float(pq.mean())
            else:
                kld_rows.append((0.0, 0.0, 0))
        if chroma is not None:
            resampled = gen_wav if gen_sr == ref_sr else convert_audio(gen_wav[None], gen_sr, ref_sr,
                                                                       gen_wav.shape[0])[0]
            total, frames = chroma.similarity(resampled, ref_wav, ref_sr)
            chroma_rows.append((total, frames))
            row["chroma"] = total / frames if frames else float("nan")
        if clap is not None:
            text = captions.get(pair.name) if captions else None
            if text is None:
                raise ValueError(f"{pair.name}: no caption for this clip in --captions")
            row["clap"] = clap.score(gen_wav, gen_sr, text)
        rows.append(row)
    report: dict = {"n_clips": len(pairs), "settings": settings, "per_clip": rows, "intervals": {}}
    report["seconds"] = {"reference": float(sum(r["reference_seconds"] for r in rows)),
                         "generated": float(sum(r["generated_seconds"] for r in rows))}
    report["sample_rates"] = {"reference": sorted({r["reference_sr"] for r in rows}),
                              "generated": sorted({r["generated_sr"] for r in rows})}
    if embedder is not None:
        g_all, r_all = torch.cat(gen_frames), torch.cat(ref_frames)
        g_stats, r_stats = FrechetStats.of(g_all), FrechetStats.of(r_all)
        report["fad"] = frechet_distance(g_stats, r_stats)
        report["fad_frames"] = {"generated": g_stats.n, "reference": r_stats.n}
        dim = g_all.shape[1]
        if 2 * len(rows) * dim * dim * 8 <= CLIP_STATS_BYTES:  # per-clip sums: a draw is a sum of matrices
            g_clip = [FrechetStats.of(f) if f.shape[0] else None for f in gen_frames]
            r_clip = [FrechetStats.of(f) if f.shape[0] else None for f in ref_frames]

            def draw(idx: np.ndarray) -> tp.Tuple[tp.Optional[FrechetStats], tp.Optional[FrechetStats]]:
                gs = [g_clip[i] for i in idx if g_clip[i] is not None]
                rs = [r_clip[i] for i in idx if r_clip[i] is not None]
                return (FrechetStats.merge(gs) if gs else None), (FrechetStats.merge(rs) if rs else None)
        else:  # too many D x D matrices to hold: each draw's sums from the frames
            def draw(idx: np.ndarray) -> tp.Tuple[tp.Optional[FrechetStats], tp.Optional[FrechetStats]]:
                counts = np.bincount(idx, minlength=len(rows))
                try:
                    return FrechetStats.resampled(gen_frames, counts), FrechetStats.resampled(ref_frames, counts)
                except ValueError:
                    return None, None

        def fad_of(idx: np.ndarray) -> float:
            a, b = draw(idx)
            if a is None or b is None:
                return float("nan")
            return frechet_distance(a, b) if a.n > 1 and b.n > 1 else float("nan")

        report["intervals"]["fad"] = _bootstrap(np.arange(len(rows)), fad_of, bootstrap, seed,
                                                "FAD interval" if progress else None)
        if fad_infinity:
            fit = fad_inf(g_all, r_stats, seed=seed)
            report["fad_inf"] = {"value": fit.value, "slope": fit.slope, "r2": fit.r2, "sizes": list(fit.sizes)}
        if save_embeddings:
            out = Path(save_embeddings)
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / "generated.npy", g_all.numpy())
            np.save(out / "reference.npy", r_all.numpy())
    if passt is not None:
        out = kld.compute()
        report.update(kld=out["kld"], kld_gen_ref=out["kld_qp"], kld_both=out["kld_both"],
                      kld_segments=out["n_segments"])
        sums = np.array(kld_rows, dtype=np.float64)

        def kld_of(idx: np.ndarray) -> float:
            n = sums[idx, 2].sum()
            return float(sums[idx, 0].sum() / n) if n else float("nan")

        report["intervals"]["kld"] = _bootstrap(np.arange(len(rows)), kld_of, bootstrap, seed)
    if chroma is not None:
        sums = np.array(chroma_rows, dtype=np.float64)
        report["chroma"] = float(sums[:, 0].sum() / sums[:, 1].sum())
        report["intervals"]["chroma"] = _bootstrap(
            np.arange(len(rows)), lambda idx: float(sums[idx, 0].sum() / sums[idx, 1].sum()), bootstrap, seed)
    if clap is not None:
        scores = np.array([r["clap"] for r in rows])
        report["clap"] = float(scores.mean())
        report["intervals"]["clap"] = _bootstrap(scores, lambda idx: float(scores[idx].mean()), bootstrap, seed)
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
    for key, label in (("fad", "FAD"), ("kld", "KLD (ref -> gen)"), ("kld_gen_ref", "KLD (gen -> ref)"),
                       ("clap", "CLAP"), ("chroma", "chroma cosine")):
        if key in report:
            ci = report["intervals"].get(key)
            interval = f"[{ci['low']:.4f}, {ci['high']:.4f}]" if ci else ""
            lines.append(f"| {label} | {report[key]:.4f} | {interval} |")
    if "fad_inf" in report:
        f = report["fad_inf"]
        lines.append(f"| FAD-inf | {f['value']:.4f} | slope {f['slope']:.1f}, r2 {f['r2']:.3f} |")
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
