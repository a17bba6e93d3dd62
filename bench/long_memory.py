#!/usr/bin/env python
"""Peak resident memory and time of generating past the model's window (issue 17: memory stays bounded).

    .venv/bin/python bench/long_memory.py [--model openmagnet/demo] [--durations 10 25 60] [--steps 20 10 10 10]

Each duration runs in a fresh process: load the model, set `model.duration`, generate one clip (windows of the
model's length, each prompted with the end of the previous one) and report the process's peak RSS after loading
and after generating, the wall time and the number of windows. The windows' tokens are decoded once at the end,
so what should grow with the duration is only the codes and the audio (a few MB a minute), not the activations.
Writes a markdown table to stdout (and --json).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(model_id: str, duration: float, steps: list) -> None:
    import torch

    from openmagnet import MAGNeT

    torch.set_num_threads(2)
    model = MAGNeT.get_pretrained(model_id, device="cpu")
    load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model.set_generation_params(**model.recommended_params(decoding_steps=steps))
    model.duration = duration
    windows = []
    model.set_custom_progress_callback(lambda step, total: windows.append(total))
    start = time.perf_counter()
    wav = model.generate(["a calm piano piece at 80 bpm"], progress=True, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    print(json.dumps({"duration": duration, "audio_s": wav.shape[-1] / model.sample_rate, "seconds": seconds,
                      "steps": windows[-1] if windows else None, "load_rss_mb": load_rss,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="openmagnet/demo")
    p.add_argument("--durations", type=float, nargs="+", default=[10.0, 25.0, 60.0])
    p.add_argument("--steps", type=int, nargs=4, default=[20, 10, 10, 10])
    p.add_argument("--json", default=None)
    p.add_argument("--child", type=float, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child is not None:
        child(a.model, a.child, a.steps)
        return
    rows = []
    for duration in a.durations:
        cmd = [sys.executable, __file__, "--model", a.model, "--steps", *map(str, a.steps), "--child", str(duration)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
    print(f"model {a.model}, decoding steps {a.steps}, 2 threads\n")
    print("| duration (s) | audio (s) | decoding steps in all | wall time (s) | peak RSS after load (MiB) "
          "| peak RSS after generating (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['duration']:g} | {r['audio_s']:.1f} | {r['steps']} | {r['seconds']:.0f} | {r['load_rss_mb']:.0f} "
              f"| {r['peak_rss_mb']:.0f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
