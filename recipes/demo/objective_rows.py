"""FAD (CREPE) and chroma of the demo model's held-out generations, between a ceiling and a floor.

    python recipes/demo/objective_rows.py --model openmagnet/demo --labels SYNTH/holdout --generated GENERATED \
        --out WORK/objective

Rows, each scored with `evaluate_objective` against the rendered held-out clips (SYNTH/holdout/audio):
- ceiling: the rendered clips through the model's codec (encode, decode): the best any generation can score;
- model: the generations of `generate_holdout.py` (one per held-out prompt, named like its clip);
- floor: the same generations paired with the clips of other prompts (a fixed derangement). Pairwise metrics
  (chroma) fall to what ignoring the text gives; FAD compares sets and does not change with the pairing (the
  floor row repeats the model's, not recomputed), so for FAD the informative comparison is model against ceiling.
Writes OUT/{recon,shuffled}/ and OUT/objective.json, and prints the README table.
"""
import argparse
import json
import random
import shutil
import time
from pathlib import Path

import torch

from openmagnet import MAGNeT, audio_write
from openmagnet.audio import audio_read, convert_audio
from openmagnet.evaluation.objective import evaluate_objective


def reconstruct(model: MAGNeT, clips: list, out: Path) -> None:
    codec = model.compression_model
    for path in clips:
        target = out / f"{path.stem}.wav"
        if target.is_file():
            continue
        wav, sr = audio_read(path)
        wav = convert_audio(wav[None], sr, model.sample_rate, model.audio_channels)
        with torch.inference_mode():
            recon = codec.decode(codec.encode(wav.to(model.device)))[0, :, :wav.shape[-1]]
        audio_write(out / path.stem, recon.cpu(), model.sample_rate, strategy="peak")


def derange(names: list, seed: int = 0) -> dict:
    """name -> another name, no name kept (a shuffled-prompt pairing)."""
    rng = random.Random(seed)
    while True:
        perm = names[:]
        rng.shuffle(perm)
        if all(a != b for a, b in zip(names, perm, strict=True)):
            return dict(zip(names, perm, strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="openmagnet/demo")
    p.add_argument("--labels", required=True, help="the held-out synth folder (holds audio/clip_*.wav)")
    p.add_argument("--generated", required=True, help="generate_holdout.py's output")
    p.add_argument("--out", required=True)
    p.add_argument("--weights", default=None, help="folder holding CREPE's full.pth (default: the eval cache)")
    p.add_argument("--bootstrap", type=int, default=200,
                   help="resamples for the 95 %% intervals (each FAD resample costs a 2048-d Cholesky factor and "
                        "eigendecomposition, about 2.5 s on 2 cores)")
    a = p.parse_args()
    out = Path(a.out)
    reference = Path(a.labels) / "audio"
    clips = sorted(reference.glob("clip_*.wav"))
    model = MAGNeT.get_pretrained(a.model, device="cpu")
    (out / "recon").mkdir(parents=True, exist_ok=True)
    reconstruct(model, clips, out / "recon")
    shuffled = out / "shuffled"
    shuffled.mkdir(exist_ok=True)
    generated = sorted(Path(a.generated).glob("clip_*.wav"))
    for src, dst in derange([g.stem for g in generated]).items():
        shutil.copyfile(Path(a.generated) / f"{src}.wav", shuffled / f"{dst}.wav")
    rows = {}
    for row, folder in (("ceiling (codec reconstructions)", out / "recon"), ("model", Path(a.generated)),
                        ("floor (shuffled prompts)", shuffled)):
        floor = folder == shuffled  # FAD compares sets: the floor's equals the model's, only chroma is paired
        started = time.time()
        report = evaluate_objective(folder, reference, metrics=("chroma",) if floor else ("fad", "chroma"),
                                    fad_embedder="crepe", weights_dir=a.weights, progress=False,
                                    bootstrap=a.bootstrap)
        fad = rows["model"] if floor else {"fad_crepe": report["fad"], "fad_interval": report["intervals"]["fad"]}
        rows[row] = {"fad_crepe": fad["fad_crepe"], "fad_interval": fad["fad_interval"],
                     "chroma": report["chroma"], "chroma_interval": report["intervals"]["chroma"],
                     "n_clips": report["n_clips"], "seconds_taken": round(time.time() - started, 1)}
        print(f"{row}: {rows[row]}", flush=True)
    (out / "objective.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("| held-out set (n = %d) | FAD-CREPE (95 %% interval) | chroma cosine (95 %% interval) |" %
          rows["model"]["n_clips"])
    print("|---|---|---|")
    for row, r in rows.items():
        print(f"| {row} | {r['fad_crepe']:.2f} ({r['fad_interval']['low']:.2f}-{r['fad_interval']['high']:.2f}) | "
              f"{r['chroma']:.3f} ({r['chroma_interval']['low']:.3f}-{r['chroma_interval']['high']:.3f}) |")


if __name__ == "__main__":
    main()
