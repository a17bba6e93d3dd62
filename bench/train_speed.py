"""Training throughput on this machine: optimiser steps per second and audio seconds per second
for a few scales and precisions, with audio encoded on the fly or read from the token cache.

    .venv/bin/python bench/train_speed.py --ckpt bench/cache/small10 --steps 4

--ckpt is a model folder whose codec (compression_state_dict.bin) and text encoder (its HF cache
under hf_cache/, or the hub) are used; the harness's `make_reference.py --scale small` gives the
official architectures with random weights. The audio is made here (tones, chords, noise).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--ckpt", required=True)
p.add_argument("--steps", type=int, default=4, help="timed steps per row (after 1 warm-up step)")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--rows", nargs="+", default=["tiny:8:fp32:audio", "tiny:8:auto:audio", "tiny:8:fp32:tokens",
                                              "small:1:fp32:tokens", "small:1:auto:tokens"],
               help="scale:batch:precision:audio|tokens (auto: bf16 where the CPU has it natively, else fp32; "
                    "an explicit bf16 row is skipped on a CPU without it)")
p.add_argument("--json")
a = p.parse_args()
os.environ.setdefault("HF_HUB_CACHE", str(Path(a.ckpt) / "hf_cache"))
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from train_utils import write_audio_set  # noqa: E402

from openmagnet.data.dataset import make_loader  # noqa: E402
from openmagnet.data.manifest import index_audio_dir  # noqa: E402
from openmagnet.train.presets import preset_config  # noqa: E402
from openmagnet.train.solver import Solver  # noqa: E402

torch.set_num_threads(a.threads)
root = Path(tempfile.mkdtemp(prefix="train-speed-"))
index_audio_dir(write_audio_set(root / "audio", seconds=30.0), root / "manifest")
results = []
try:
    for row in a.rows:
        scale, batch, precision, source = row.split(":")
        cfg = preset_config("magnet_32khz", model_scale=scale, codec=a.ckpt, batch_size=int(batch),
                            precision=precision, max_steps=10_000, warmup=100, num_workers=0,
                            token_cache=source == "tokens", log_every=10_000, valid_every=10_000,
                            save_every=10_000)
        out = root / row.replace(":", "_")
        try:
            solver = Solver(cfg, str(root / "manifest"), str(out), progress=False)
        except ValueError as exc:  # bf16 on a CPU without native bf16: refused, as a trap there
            print(f"{row}: skipped: {exc}", flush=True)
            continue
        # time the optimiser steps themselves (data, codec, text encoder, forward, backward, update),
        # after one warm-up step; no checkpoint or validation
        loader = iter(make_loader(solver.train_set, solver.local_batch, solver.step))
        solver.train_step(next(loader))
        t0 = time.perf_counter()
        for _ in range(a.steps):
            solver.train_step(next(loader))
        dt = (time.perf_counter() - t0) / a.steps
        params = sum(p.numel() for p in solver.lm.parameters())
        results.append(dict(row=row, params_m=params / 1e6, s_per_step=dt,
                            audio_s_per_s=int(batch) * cfg.segment_duration / dt))
        print(json.dumps(results[-1]), flush=True)
        del solver
finally:
    shutil.rmtree(root, ignore_errors=True)

print(f"\n{a.threads} threads, torch {torch.__version__}, 10-s segments\n")
print("| scale | batch | precision | data | parameters | s / step | audio s per s |")
print("|---|---|---|---|---|---|---|")
for r in results:
    scale, batch, precision, source = r["row"].split(":")
    print(f"| {scale} | {batch} | {precision} | {source} | {r['params_m']:.1f} M | {r['s_per_step']:.2f} | "
          f"{r['audio_s_per_s']:.1f} |")
if a.json:
    Path(a.json).write_text(json.dumps(results, indent=2))
