"""One timed openmagnet generation, with the protocol of the harness's run_reference.py:
load (not timed), warm-up (1 s of audio, 1 step per codebook, not timed), then one timed run.
Prints one JSON line. Used by compare_audiocraft.py."""
import argparse
import json
import os
import time

p = argparse.ArgumentParser()
p.add_argument("--ref", required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--mode", default="float32",
               choices=["float32", "bfloat16", "int8", "int8-all", "fast", "turbo", "fast+turbo", "fast+turbo+compile"])
p.add_argument("--steps", type=int, nargs=4, default=[20, 10, 10, 10])
p.add_argument("--prompts", nargs="+", required=True)
p.add_argument("--seed", type=int, default=42)
a = p.parse_args()
os.environ["HF_HUB_CACHE"] = os.path.join(a.ref, "hf_cache")
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

import openmagnet  # noqa: E402
from openmagnet import MAGNeT  # noqa: E402
from openmagnet.request import Request, text_tokens  # noqa: E402

torch.set_num_threads(a.threads)
parts = a.mode.split("+")
speed = "turbo" if "turbo" in parts else None
if "fast" in parts:
    options = dict(fast=True, compile="compile" in parts)
elif parts == ["turbo"]:
    options = {}
else:
    options = dict(quantize=a.mode) if a.mode.startswith("int8") else dict(dtype=a.mode)
load_started = time.perf_counter()
model = MAGNeT.get_pretrained(a.ref, device="cpu", **options)
load_s = time.perf_counter() - load_started
model.set_generation_params(decoding_steps=[1, 1, 1, 1])
model.duration = 1.0
torch.manual_seed(a.seed)
model.generate(a.prompts)  # warm-up: also loads T5
model.duration = model.max_duration
model.set_generation_params(decoding_steps=a.steps, speed=speed)
torch.manual_seed(a.seed)
passes = model.forward_passes
with torch.inference_mode():
    c0, t0 = time.process_time(), time.perf_counter()
    tokens = text_tokens(model, Request(prompts=list(a.prompts)))
    t1 = time.perf_counter()
    audio = model.generate_audio(tokens)
    c2, t2 = time.process_time(), time.perf_counter()
print(json.dumps({"lm_s": t1 - t0, "codec_s": t2 - t1, "total_s": t2 - t0, "total_cpu_s": c2 - c0,
                  "samples": audio.shape[-1],
                  "sample_rate": model.sample_rate, "tokens": list(tokens.shape),
                  "banded_attention": model.lm.banded_attention, "mode": model.mode + (f", {speed}" if speed else ""),
                  "forward_passes": model.forward_passes - passes, "load_s": load_s,
                  "fast_mode": None if model.fast_mode is None else model.fast_mode.why,
                  "openmagnet": openmagnet.__file__}))
