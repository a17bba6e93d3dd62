#!/usr/bin/env python
"""Each speed setting's time, forward passes and quality by distribution (issue 30).

    .venv/bin/python bench/speedups.py --labels SYNTH/holdout --prompts 64 --out bench/results/speedups
    .venv/bin/python bench/speedups.py --labels SYNTH/holdout --prompts 8 --bootstrap 30 --out /tmp/sp  # quick
    .venv/bin/python bench/speedups.py --out bench/results/speedups --table-only    # reprint the table

A changed sampler gives a different but possibly equally good sample, so a setting is judged by the
distribution of what it makes, against what reseeding exact decoding changes. On --model (default: the bundled
demo model), for the first --prompts held-out prompts of --labels (an `openmagnet data synth --holdout` folder:
audio/clip_*.wav rendered references with clip_*.json labels), each setting generates one clip per prompt (its
stored generation settings, one seed per batch as recipes/demo/generate_holdout.py), and the table gives:

  time       seconds per clip of the whole generation (LM decoding, T5 and codec), this machine, batch --batch
  passes     forward-pass equivalents per generation (one pass of the conditional rows; the reference does 2 a
             step: 100 at [20, 10, 10, 10])
  FAD refs   FAD-CREPE of the setting's clips against the rendered references (95% bootstrap interval over
             prompts, centred on the estimate: see fad_with_interval): within the exact row's interval = as
             close to the data as exact decoding; "minus exact's" is the paired difference (every FAD draws
             the same resamples of the prompts), its interval holding 0 = no difference 64 prompts can show
  FAD exact  FAD-CREPE of the setting's clips against the exact set (same prompts); the "exact-reseed" row
             is the reseed floor (exact decoding with other seeds): within its interval, and the paired
             difference's interval holding 0 = indistinguishable from reseeding
  margins    adherence margins over the shuffled-prompt floor (tempo acc2, key MIREX, and the prompted family
             with --classifier), as `openmagnet eval adherence` computes them, with 95% intervals

Settings: exact (float32, the reference's decoding), exact-reseed, fast (fast=True), turbo (speed='turbo'),
fast+turbo, and each turbo ingredient alone (guidance reuse, fewer fine steps), plus the adaptive confidence
stop. Everything is written to --out (clips per setting, results.json); a rerun reuses the clips already made
(delete the folder to start over). The full 64-prompt run takes hours on 2 CPU cores (CREPE embeddings, and
the bootstrap: each FAD resample is a 2048-d eigendecomposition, about 2.5 s).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from openmagnet import MAGNeT, audio_write  # noqa: E402
from openmagnet.decoding import planned_passes  # noqa: E402

# name -> (get_pretrained options, set_generation_params speed options, seed offset)
SETTINGS = {
    "exact": ({}, {}, 0),
    "exact-reseed": ({}, {}, 1000),
    "fast": ({"fast": True}, {}, 0),
    "turbo": ({}, {"speed": "turbo"}, 0),
    "fast+turbo": ({"fast": True}, {"speed": "turbo"}, 0),
    "guidance reuse (k=3)": ({}, {"guidance_every": 3}, 0),
    "fine steps x0.5": ({}, {"fine_step_share": 0.5}, 0),
    "confidence stop 0.9": ({}, {"confidence_stop": 0.9}, 0),
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def held_out(labels: Path, count: int) -> list:
    """(stem, description) of the first `count` held-out clips."""
    sidecars = sorted((labels / "audio").glob("clip_*.json"))[:count]
    if len(sidecars) < 2:
        raise SystemExit(f"{labels}/audio holds {len(sidecars)} labelled clips: pass a synth holdout folder")
    return [(f.stem, json.loads(f.read_text())["description"]) for f in sidecars]


def generate_set(model: MAGNeT, items: list, out: Path, seed: int, batch: int) -> dict:
    """One clip per item into out/, timed; returns {'seconds_per_clip', 'passes'} (None when all existed)."""
    out.mkdir(parents=True, exist_ok=True)
    times, passes = [], []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        if all((out / f"{stem}.wav").is_file() for stem, _ in chunk):
            continue
        generator = torch.Generator(device=model.device).manual_seed(seed + start)
        before = model.forward_passes
        t0 = time.perf_counter()
        wavs = model.generate([text for _, text in chunk], generator=generator)
        times.append((time.perf_counter() - t0) / len(chunk))
        passes.append(model.forward_passes - before)
        for (stem, _), wav in zip(chunk, wavs, strict=True):
            audio_write(out / stem, wav.cpu(), model.sample_rate, strategy="peak")
        print(f"  {out.name}: {min(start + batch, len(items))} / {len(items)}", flush=True)
    if not times:
        return {}
    return {"seconds_per_clip": statistics.median(times), "passes": statistics.median(passes)}


def embed_set(crepe, folder: Path, stems: list, cache: Path) -> list:
    """CREPE frames [n, 2048] of each clip, kept in `cache` (.npz) so that a rerun reuses them."""
    from openmagnet.audio import audio_read

    if cache.is_file():
        with np.load(cache) as kept:
            if all(stem in kept for stem in stems):
                return [torch.from_numpy(kept[stem]).double() for stem in stems]
    frames = []
    for stem in stems:
        wav, sr = audio_read(folder / f"{stem}.wav")
        frames.append(crepe.embed(wav, sr).double())
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, **{stem: f.numpy() for stem, f in zip(stems, frames, strict=True)})
    tmp.replace(cache)
    return frames


def fad_with_interval(a: list, b: list, draws: int, seed: int = 0) -> dict:
    """FAD-CREPE between two sets of per-prompt frames, with a 95% bootstrap interval over prompts (the same
    prompts drawn on both sides; every call draws the same resamples, so two calls' draws are paired).

    A resample repeats some clips and leaves others out, which raises a Frechet distance by itself (fewer
    distinct clips), so the plain percentile interval of the draws sits above the estimate (for two exact
    sets: estimate 0.02, draws 0.03-0.04). The interval is therefore taken from the draws shifted by their
    mean bias (estimate - mean of the draws); `samples` keeps the draws for paired comparisons."""
    from openmagnet.evaluation.frechet import FrechetStats, frechet_distance

    ones = [1] * len(a)
    value = frechet_distance(FrechetStats.resampled(a, ones), FrechetStats.resampled(b, ones))
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(draws):
        counts = np.bincount(rng.integers(0, len(a), len(a)), minlength=len(a))
        stats.append(frechet_distance(FrechetStats.resampled(a, counts), FrechetStats.resampled(b, counts)))
    return {"fad": value, **bias_corrected(value, stats, floor=0.0), "draws": draws, "samples": stats}


def bias_corrected(value: float, samples: list, floor: tp.Optional[float] = None) -> dict:
    """The 95% interval of `samples` shifted so that their mean is `value` (clipped at `floor`)."""
    if not samples:
        return {"low": float("nan"), "high": float("nan")}
    shifted = np.asarray(samples) - (float(np.mean(samples)) - value)
    low, high = np.percentile(shifted, [2.5, 97.5])
    if floor is not None:
        low, high = max(low, floor), max(high, floor)
    return {"low": float(low), "high": float(high)}


def paired_difference(row: dict, base: dict) -> dict:
    """row - base for two FADs computed on the same bootstrap draws: the estimate and its 95% interval
    (containing 0: no difference this many prompts can show)."""
    value = row["fad"] - base["fad"]
    diffs = [x - y for x, y in zip(row["samples"], base["samples"], strict=True)]
    return {"fad": value, **bias_corrected(value, diffs)}


def adherence(labels: Path, folder: Path, floor: dict, classifier) -> dict:
    from openmagnet.evaluation.adherence import margins, score_generated

    return margins(score_generated(folder, labels, classifier), floor)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="openmagnet/demo")
    p.add_argument("--labels", help="held-out synth folder (audio/clip_*.wav + .json)")
    p.add_argument("--prompts", type=int, default=64, help="the first N held-out prompts (default 64)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap draws per FAD interval")
    p.add_argument("--classifier", default=None, help="family classifier (.npz) for the family margin")
    p.add_argument("--no-quality", action="store_true", help="time and count only")
    p.add_argument("--table-only", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if a.table_only:
        print_table(results)
        return
    if not a.labels:
        raise SystemExit("--labels is required (an `openmagnet data synth --holdout` folder)")
    torch.set_num_threads(a.threads)
    labels = Path(a.labels)
    items = held_out(labels, a.prompts)
    stems = [stem for stem, _ in items]
    results.setdefault("settings", {})
    results["model"], results["prompts"] = a.model, len(items)
    from openmagnet.hardware import cpu_info, cpu_name

    results["machine"] = f"{cpu_name()} ({cpu_info().describe()}), {a.threads} threads, torch {torch.__version__}"
    models: dict = {}
    for name in ["exact"] + [s for s in a.settings if s != "exact"]:
        load, speed, seed = SETTINGS[name]
        key = json.dumps(load, sort_keys=True)
        if key not in models:
            models[key] = model = MAGNeT.get_pretrained(a.model, device="cpu", **load)
            model.set_generation_params(**{**model.recommended_params(), "decoding_steps": [1, 1, 1, 1]})
            model.duration = 1.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # one step per codebook may collapse: it is only a warm-up
                model.generate([items[0][1]])  # warm-up (loads the text encoder), not timed
            model.duration = model.max_duration
        model = models[key]
        model.set_generation_params(**model.recommended_params(), **speed)
        print(f"{name}: {model.mode}; {model.generation_params}", flush=True)
        made = generate_set(model, items, out / slug(name), seed, a.batch)
        row = results["settings"].setdefault(name, {})
        row.update(made)
        row["planned_passes"] = planned_passes(model.params, model.cfg.n_q)
        row["mode"], row["params"] = model.mode, model.generation_params
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    if not a.no_quality:
        quality(a, labels, stems, out, results)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    print_table(results)


def quality(a, labels: Path, stems: list, out: Path, results: dict) -> None:
    from openmagnet.evaluation.adherence import FamilyClassifier, reference_rows
    from openmagnet.evaluation.crepe import Crepe

    crepe = Crepe.load()
    refs = embed_set(crepe, labels / "audio", stems, out / "crepe" / "references.npz")
    names = ["exact"] + [s for s in a.settings if s != "exact"]
    frames = {name: embed_set(crepe, out / slug(name), stems, out / "crepe" / f"{slug(name)}.npz")
              for name in names}
    classifier = FamilyClassifier.load(a.classifier) if a.classifier else None
    floor = reference_rows(labels, classifier)["shuffled prompts (floor)"]
    for name in names:
        row = results["settings"][name]
        row["fad_refs"] = fad_with_interval(frames[name], refs, a.bootstrap)
        if name != "exact":
            row["fad_exact"] = fad_with_interval(frames[name], frames["exact"], a.bootstrap)
        row["margins"] = adherence(labels, out / slug(name), floor, classifier)
        print(f"{name}: FAD refs {row['fad_refs']['fad']:.3f}", flush=True)
    rows = results["settings"]
    for name in names[1:]:
        row = rows[name]
        row["fad_refs_minus_exact"] = paired_difference(row["fad_refs"], rows["exact"]["fad_refs"])
        if "exact-reseed" in rows and "fad_exact" in rows["exact-reseed"] and name != "exact-reseed":
            row["fad_exact_minus_reseed"] = paired_difference(row["fad_exact"], rows["exact-reseed"]["fad_exact"])


def _interval(d: dict, key: str = "fad", fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(d[key])} ({fmt.format(d['low'])} to {fmt.format(d['high'])})"


def print_table(results: dict) -> None:
    rows = results.get("settings", {})
    if not rows:
        print("no results yet")
        return
    print(f"\n{results.get('machine', '')}; model {results.get('model')}, {results.get('prompts')} held-out prompts\n")
    metrics = sorted({k for r in rows.values() for k in r.get("margins", {})})
    header = ["setting", "s / clip", "forward passes", "FAD-CREPE vs references", "minus exact's (paired)",
              "FAD-CREPE vs exact set", "minus the reseed floor's (paired)"]
    header += [f"{m} margin" for m in metrics]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    exact_time = rows.get("exact", {}).get("seconds_per_clip")
    for name, r in rows.items():
        t = r.get("seconds_per_clip")
        time_text = "-" if t is None else f"{t:.2f}" + (f" ({exact_time / t:.2f}x)" if exact_time else "")
        passes = r.get("passes", r.get("planned_passes"))
        passes = "-" if passes is None else f"{passes:g}"
        cells = [_interval(r[k], fmt="{:+.3f}" if "minus" in k else "{:.3f}") if k in r else "-"
                 for k in ("fad_refs", "fad_refs_minus_exact", "fad_exact", "fad_exact_minus_reseed")]
        if name == "exact":
            cells[2] = "0 (itself)"
        margins = [(_interval(r["margins"][m], "margin", "{:+.2f}") if m in r.get("margins", {}) else "-")
                   for m in metrics]
        print("| " + " | ".join([name, time_text, passes, *cells, *margins]) + " |")


if __name__ == "__main__":
    main()
