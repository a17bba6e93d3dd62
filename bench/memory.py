#!/usr/bin/env python
"""Peak resident memory of loading a checkpoint (and of a short generation) in each mode.

    .venv/bin/python bench/memory.py --ckpt bench/cache/small10 [--modes float32 bfloat16 int8 int8-all]

Each mode runs in a fresh process: load with `MAGNeT.get_pretrained` (the released fp16
`state_dict.bin` is memory-mapped, so each tensor is converted once and nothing holds a second
full-precision copy), then 1 s of audio with one step per codebook. Prints the LM's parameter count,
the bytes its weights hold in that mode, and the process's peak RSS after loading and after the
generation (the T5 encoder and the codec are included in the latter).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

MODES = {"float32": dict(dtype="float32"), "bfloat16": dict(dtype="bfloat16"), "int8": dict(quantize="int8"),
         "int8-all": dict(quantize="int8-all")}


def child(ckpt: str, mode: str, generate: bool) -> None:
    os.environ.setdefault("HF_HUB_CACHE", str(Path(ckpt) / "hf_cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from openmagnet import MAGNeT

    torch.set_num_threads(2)
    model = MAGNeT.get_pretrained(ckpt, device="cpu", **MODES[mode])
    lm = model.lm
    params = sum(p.numel() for p in lm.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in lm.parameters() if not p.is_meta)
    for module in lm.modules():  # int8 kernels hold their packed weights outside the parameters
        for kernel in getattr(module, "kernels", {}).values():
            weight_bytes += kernel.out_features * kernel.in_features + 8 * kernel.out_features
    load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if generate:
        model.duration = 1.0
        model.set_generation_params(decoding_steps=[1, 1, 1, 1])
        model.generate(["warm synth pads"])
    print(json.dumps({"mode": mode, "params": params, "weight_mb": weight_bytes / 2 ** 20, "load_rss_mb": load_rss,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--no-generate", action="store_true", help="load only (no T5, no codec)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.ckpt, a.child, not a.no_generate)
        return
    size = (Path(a.ckpt) / "state_dict.bin").stat().st_size / 2 ** 20
    print(f"checkpoint {a.ckpt} (state_dict.bin {size:.0f} MiB)\n")
    print("| mode | LM parameters | LM weights (MiB) | peak RSS after load (MiB) | peak RSS after generating (MiB) |")
    print("|---|---|---|---|---|")
    for mode in a.modes:
        cmd = [sys.executable, __file__, "--ckpt", a.ckpt, "--child", mode]
        cmd += ["--no-generate"] if a.no_generate else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        gen = "-" if a.no_generate else f"{r['peak_rss_mb']:.0f}"
        print(f"| {mode} | {r['params'] / 1e6:.1f} M | {r['weight_mb']:.0f} | {r['load_rss_mb']:.0f} | {gen} |")


if __name__ == "__main__":
    main()
