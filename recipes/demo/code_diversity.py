"""Does the model's sampling collapse? Distinct codebook-0 codes over 16 clips of 8 held-out prompts.

    python recipes/demo/code_diversity.py --model openmagnet/demo --labels SYNTH/holdout [--prompts 8] [--seeds 2]

Generates each of the first --prompts held-out descriptions with --seeds seeds at the model's stored settings and
prints (and with --json writes) the distinct codebook-0 codes over all the clips, the largest and the mean share
the commonest code takes of a clip, and the same counts for the rendered clips of those prompts through the
model's codec (what the data gives). The issue's gate: at least 100 distinct codes over 16 clips of 8 prompts.
"""
import argparse
import json
from pathlib import Path

import torch

from openmagnet import MAGNeT
from openmagnet.audio import audio_read, convert_audio
from openmagnet.decoding import top_code_share


def summary(tokens: torch.Tensor) -> dict:
    """tokens [N, K, T] -> distinct codebook-0 codes and the commonest code's share of a clip (max, mean)."""
    share = top_code_share(tokens)[:, 0]
    return {"clips": int(tokens.shape[0]), "distinct_codes_0": int(tokens[:, 0].unique().numel()),
            "max_code_share_0": round(float(share.max()), 3), "mean_code_share_0": round(float(share.mean()), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="openmagnet/demo")
    p.add_argument("--labels", required=True, help="the held-out synth folder (holds audio/clip_*.json)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args()
    model = MAGNeT.get_pretrained(a.model, device="cpu")
    model.set_generation_params(**model.recommended_params())
    sidecars = sorted((Path(a.labels) / "audio").glob("clip_*.json"))[:a.prompts]
    texts = [json.loads(f.read_text())["description"] for f in sidecars]
    generated = []
    for seed in range(a.seeds):
        generator = torch.Generator(device=model.device).manual_seed(seed)
        _, tokens = model.generate(texts, generator=generator, return_tokens=True)
        generated.append(tokens.cpu())
    rendered = []
    codec = model.compression_model
    for sidecar in sidecars:
        wav, sr = audio_read(sidecar.with_suffix(".wav"))
        wav = convert_audio(wav[None], sr, model.sample_rate, model.audio_channels)
        with torch.inference_mode():
            rendered.append(codec.encode(wav[..., :int(model.duration * model.sample_rate)]).cpu())  # [1, K, T]
    width = min(t.shape[-1] for t in rendered)
    result = {"model": a.model, "settings": model.stored_generation,
              "generated": summary(torch.cat(generated)),
              "rendered through the codec": summary(torch.cat([t[..., :width] for t in rendered]))}
    print(json.dumps(result, indent=1, default=str))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
