"""How seamless are loops? Spectral flux at the wrap point of a clip played twice, against the clip's median flux,
for loops (generate(loop=True)) and plain clips of the same prompts and seeds.

    python bench/loop_seam.py [--model openmagnet/demo] [--n 8] [--seam 1.0]

A ratio near 1 means the wrap is as smooth as the clip's own frame-to-frame changes; a click or a jump in texture
gives a ratio far above 1. Prints a markdown table (median and the 8 values) for the README.
"""
import argparse
import statistics

import torch

from openmagnet import MAGNeT

PROMPTS = ["a calm piano melody", "upbeat funk groove with slap bass and drums", "ambient synth pad",
           "fast rock anthem with electric guitar", "jazz trio with upright bass", "string ensemble waltz",
           "electronic track with a drum machine", "acoustic folk guitar"]


def seam_ratio(wav: torch.Tensor, n_fft: int = 1024, hop: int = 256) -> float:
    """wav [T] mono: flux across the wrap of [wav, wav] over the median flux inside wav."""
    doubled = torch.cat([wav, wav])
    spec = torch.stft(doubled, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True, center=False).abs()
    logmag = torch.log(spec + 1e-5)
    flux = (logmag[:, 1:] - logmag[:, :-1]).clamp(min=0).sum(0)  # [frames - 1]
    wrap = len(wav) // hop  # first frame whose window reaches past the wrap is near here
    around = flux[max(0, wrap - n_fft // hop):wrap + 1]
    inside = flux[:max(1, (len(wav) - n_fft) // hop)]
    return float(around.max() / inside.median())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="openmagnet/demo")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seam", type=float, default=1.0)
    a = p.parse_args()
    model = MAGNeT.get_pretrained(a.model, device="cpu")
    model.set_generation_params(**model.recommended_params())
    rows = {"plain": [], "loop": []}
    for i, prompt in enumerate(PROMPTS[:a.n]):
        for kind in rows:
            gen = torch.Generator().manual_seed(i)
            wav = model.generate([prompt], generator=gen, loop=kind == "loop", loop_seam=a.seam)[0].mean(0)
            rows[kind].append(seam_ratio(wav))
        print(f"{prompt}: plain {rows['plain'][-1]:.2f}, loop {rows['loop'][-1]:.2f}", flush=True)
    print(f"| clips ({model.name}, {a.n} prompts) | wrap flux / median flux, median | the {a.n} values |")
    print("|---|---|---|")
    for kind, values in rows.items():
        print(f"| {kind} | {statistics.median(values):.2f} | {' '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
