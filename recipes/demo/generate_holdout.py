"""Generate one clip per held-out prompt, named like its label file, for `openmagnet eval adherence`.

    python recipes/demo/generate_holdout.py --model openmagnet/demo --labels SYNTH/holdout --out GENERATED [--batch 8]

Reads SYNTH/holdout/audio/clip_*.json (the side-car of each held-out rendered clip), generates from its
`description` with the model's recommended settings (its stored ones for the bundled model, else the demos':
stride1, [20, 10, 10, 10]; seed per clip), and writes
GENERATED/clip_*.wav, so that the adherence table compares generated audio with the same labels as the
rendered clips (ceiling) and shuffled labels (floor).
"""
import argparse
import json
from pathlib import Path

import torch

from openmagnet import MAGNeT, audio_write


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="openmagnet/demo")
    p.add_argument("--labels", required=True, help="the held-out synth folder (holds audio/clip_*.json)")
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default: the model's stored setting, else the demos' 3.0)")
    p.add_argument("--max-cfg", type=float, default=None,
                   help="CFG coefficient at the start of each stage (default: the model's stored setting, else 10)")
    a = p.parse_args()
    model = MAGNeT.get_pretrained(a.model)
    model.set_generation_params(**model.recommended_params(temperature=a.temperature, max_cfg_coef=a.max_cfg))
    print(f"generation settings: {model.generation_params}", flush=True)
    items = [(f.stem, json.loads(f.read_text())["description"])
             for f in sorted((Path(a.labels) / "audio").glob("clip_*.json"))]
    out = Path(a.out)
    for start in range(0, len(items), a.batch):
        chunk = [(stem, text) for stem, text in items[start:start + a.batch] if not (out / f"{stem}.wav").is_file()]
        if not chunk:
            continue
        generator = torch.Generator(device=model.device).manual_seed(a.seed + start)
        wavs = model.generate([text for _, text in chunk], generator=generator)
        for (stem, _), wav in zip(chunk, wavs, strict=True):
            audio_write(out / stem, wav.cpu(), model.sample_rate, strategy="peak")
        print(f"{min(start + a.batch, len(items))} / {len(items)}", flush=True)


if __name__ == "__main__":
    main()
