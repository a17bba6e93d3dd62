"""Choose the demo model's sampling settings on held-out prompts: a grid over max CFG and temperature, each
scored on what the issue asks of the demo model, and the tempo probe.

    python recipes/demo/choose_sampling.py --model MODEL_DIR --labels SYNTH/holdout \
        --classifier family_classifier.npz --out WORK/sampling [--prompts 32] [--cfg 1 3 5 10] [--temperature 1 2 3]

For every (max CFG, temperature), with stride1 and [20, 10, 10, 10] steps, min CFG 1, top-p 0.9:
- the first --prompts held-out descriptions are generated (seed per batch, resumable: clips already written are
  kept) into OUT/cfg<C>_t<T>/clip_*.wav, and scored by `openmagnet eval adherence` against their labels, next to
  the shuffled-prompt floor of the rendered clips, with the generated - floor margins and bootstrap intervals;
- collapse: the distinct codebook-0 codes over all its clips and the largest share one code takes of a clip;
- rhythm regularity: the median over its clips of the onset envelope's autocorrelation peak (0-1; rendered clips
  about 0.66, noise with transients 0.1-0.2; `openmagnet.evaluation.musicality`).
Then the tempo probe at each setting: 8 prompts asking for 160-180 bpm and 8 asking for 60-64 bpm (same styles
and instruments), onsets per second of each clip (librosa), fast minus slow with its bootstrap interval.

Writes OUT/grid.json and OUT/grid.md; the chosen setting is the one with the largest sum of the three margins'
lower bounds and the rhythm regularity median among those without collapse (at least 100 distinct codebook-0
codes, and the commonest code filling at most a quarter of a clip on average; the rendered clips: median 5 %),
printed last and written as
set_generation_params() keywords to OUT/chosen.json (for `openmagnet export --generation KEY=VALUE`).
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from openmagnet import MAGNeT, audio_write
from openmagnet.audio import audio_read
from openmagnet.decoding import top_code_share
from openmagnet.evaluation.adherence import (FamilyClassifier, bootstrap_margin, load_labels, margins, reference_rows,
                                             score_generated)
from openmagnet.evaluation.musicality import rhythm_regularity

STYLES = [("rock anthem", "electric guitar, bass and drums"), ("jazz tune", "saxophone, piano and upright bass"),
          ("pop song", "piano, bass and drums"), ("classical piece", "violin and strings"),
          ("folk tune", "acoustic guitar and fiddle"), ("electronic track", "lead synth and drum machine"),
          ("funk groove", "slap bass, brass and drums"), ("blues shuffle", "electric guitar and organ")]
COLLAPSED = 0.25  # mean share of a clip's commonest codebook-0 code above which a setting counts as collapsed
FAST = [f"a very fast {style} with {parts} at {bpm} bpm"
        for (style, parts), bpm in zip(STYLES, range(160, 184, 3), strict=True)]
SLOW = [f"a slow {style} with {parts} at {bpm} bpm"
        for (style, parts), bpm in zip(STYLES, [60, 61, 62, 63, 64, 60, 62, 64], strict=True)]


def generate(model, prompts, folder: Path, stems, batch: int, seed: int) -> list:
    """Write folder/<stem>.wav for each prompt (kept if present); returns the codebook-0 codes [T] of the new clips."""
    codes = []
    for start in range(0, len(prompts), batch):
        todo = [(s, p) for s, p in zip(stems[start:start + batch], prompts[start:start + batch], strict=True)
                if not (folder / f"{s}.wav").is_file()]
        if not todo:
            continue
        generator = torch.Generator(device=model.device).manual_seed(seed + start)
        wavs, tokens = model.generate([p for _, p in todo], generator=generator, return_tokens=True)
        for (stem, _), wav, tok in zip(todo, wavs, tokens, strict=True):
            audio_write(folder / stem, wav.cpu(), model.sample_rate, strategy="peak")
            np.save(folder / f"{stem}.codes.npy", tok.cpu().numpy())
            codes.append(tok)
    return codes


def rhythm(path: Path) -> float:
    wav, sr = audio_read(path)
    return rhythm_regularity(wav.mean(0).numpy(), sr)


def onset_rate(path: Path) -> float:
    import librosa

    wav, sr = audio_read(path)
    y = wav.mean(0).numpy()
    return len(librosa.onset.onset_detect(y=y, sr=sr, units="time")) / (len(y) / sr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--labels", required=True, help="held-out synth folder (audio/clip_*.json)")
    p.add_argument("--classifier", default=None,
                   help="family classifier (.npz from `openmagnet eval train-classifier`)")
    p.add_argument("--out", required=True)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0, 5.0, 10.0])
    p.add_argument("--temperature", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    p.add_argument("--remask-noise", type=float, nargs="+", default=[0.0],
                   help="re-masking noise (set_generation_params remask_noise; 0 = the reference's sampler)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    model = MAGNeT.get_pretrained(a.model)
    classifier = FamilyClassifier.load(a.classifier) if a.classifier else None
    clips = load_labels(a.labels)[:a.prompts]
    floor = reference_rows(a.labels, classifier, seed=a.seed)["shuffled prompts (floor)"]
    out, results, settings = Path(a.out), {}, {}
    grid = [(cfg, temperature, noise) for cfg in a.cfg for temperature in a.temperature for noise in a.remask_noise]
    for cfg, temperature, noise in grid:
        name = f"cfg{cfg:g}_t{temperature:g}" + (f"_n{noise:g}" if noise else "")
        settings[name] = dict(temperature=temperature, max_cfg_coef=cfg, remask_noise=noise)
        folder = out / name
        model.set_generation_params(span_arrangement="stride1", decoding_steps=[20, 10, 10, 10], top_p=0.9,
                                    temperature=temperature, max_cfg_coef=cfg, min_cfg_coef=1.0,
                                    remask_noise=noise)
        stems = [path.stem for path, _ in clips]
        generate(model, [labels["description"] for _, labels in clips], folder, stems, a.batch, a.seed)
        tokens = torch.stack([torch.from_numpy(np.load(folder / f"{s}.codes.npy")) for s in stems])  # [N, K, T]
        generated = score_generated(folder, a.labels, classifier)
        row = {k: v for k, v in generated.items() if k != "per_clip"}
        row["margins"] = margins(generated, floor, seed=a.seed)
        row["distinct_codes_0"] = int(tokens[:, 0].unique().numel())
        row["max_code_share_0"] = float(top_code_share(tokens)[:, 0].max())
        row["mean_code_share_0"] = float(top_code_share(tokens)[:, 0].mean())
        row["rhythm_regularity"] = float(np.median([rhythm(folder / f"{s}.wav") for s in stems]))
        tempo = out / "tempo" / name
        generate(model, FAST + SLOW, tempo, [f"fast_{i}" for i in range(8)] + [f"slow_{i}" for i in range(8)],
                 a.batch, a.seed)
        fast = [onset_rate(tempo / f"fast_{i}.wav") for i in range(8)]
        slow = [onset_rate(tempo / f"slow_{i}.wav") for i in range(8)]
        row["onsets_per_s"] = {"fast": float(np.mean(fast)), "slow": float(np.mean(slow)),
                               **bootstrap_margin(fast, slow, seed=a.seed)}
        results[name] = row
        print(name, json.dumps({k: row[k] for k in ("distinct_codes_0", "max_code_share_0", "mean_code_share_0",
                                                     "rhythm_regularity", "onsets_per_s")}),
              {k: round(m["low"], 3) for k, m in row["margins"].items()}, flush=True)
    (out / "grid.json").write_text(json.dumps({"floor": {k: v for k, v in floor.items() if k != "per_clip"},
                                               "settings": results}, indent=1) + "\n")
    lines = ["| setting | tempo acc2 | key MIREX | family detected | margins' lower bounds | distinct codes (cb 0) |"
             " code share: max, mean | rhythm regularity | onsets/s fast - slow [95 %] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in results.items():
        lows = ", ".join(f"{m['low']:+.2f}" for m in row["margins"].values())
        o = row["onsets_per_s"]
        lines.append(f"| {name} | {row['tempo_acc2']:.2f} | {row['key_weighted']:.2f} | "
                     f"{row.get('family_detected', float('nan')):.2f} | {lows} | {row['distinct_codes_0']} | "
                     f"{row['max_code_share_0']:.2f}, {row['mean_code_share_0']:.2f} | "
                     f"{row['rhythm_regularity']:.2f} | {o['margin']:+.2f} [{o['low']:+.2f}, {o['high']:+.2f}] |")
    (out / "grid.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    usable = {n: r for n, r in results.items()
              if r["distinct_codes_0"] >= 100 and r["mean_code_share_0"] <= COLLAPSED} or results
    best = max(usable, key=lambda n: sum(m["low"] for m in usable[n]["margins"].values())
               + usable[n]["rhythm_regularity"])
    chosen = dict(span_arrangement="stride1", decoding_steps=[20, 10, 10, 10], top_p=0.9, min_cfg_coef=1.0,
                  **settings[best])
    (out / "chosen.json").write_text(json.dumps(chosen) + "\n")
    print(f"chosen: {best} -> {out / 'chosen.json'}; store it with "
          + " ".join(f"--generation {k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in chosen.items()))


if __name__ == "__main__":
    main()
