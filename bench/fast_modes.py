#!/usr/bin/env python
"""Fast modes against exact fp32 on one checkpoint: accuracy, speed of one LM forward, and the
achieved FLOP/s against what this CPU's matmuls can do.

    .venv/bin/python bench/fast_modes.py --ckpt bench/cache/small10 --greedy

Modes: fp32 (exact: dense attention masks, bit-identical to audiocraft), fp32+banded, bf16,
int8 (int8 feed-forward, bf16 attention projections), int8-all (every matrix int8); all but the
first with banded attention. For every mode:
  * teacher-forced accuracy: guided logits (CFG 3 and 10) of each codebook stage on the same
    inputs (random tokens below the stage, 50% masked at the stage, all masked above), against
    fp32: max abs error and argmax agreement;
  * with --greedy, free-running greedy decoding of the full segment with the released settings
    ([20,10,10,10] per 10 s, nonoverlap, CFG 10 -> 1), token agreement with fp32's decode;
  * time of one forward of the [cond; null] batch (median of --repeats, warm), at stage 0 (full
    attention) and stage 1 (restricted), the FLOPs it needs, and FLOP/s.
Prints a markdown table; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from openmagnet.api import MAGNeT  # noqa: E402
from openmagnet.modes import guided_logits_fn  # noqa: E402
from openmagnet.request import Request, text_tokens  # noqa: E402

PROMPTS = ["80s electronic track with melodic synthesizers, catchy beat and groovy bass",
           "calm acoustic guitar ballad with soft piano", "energetic EDM with a big drop at 128 bpm",
           "slow jazz with brushed drums and upright bass"]
MODES = {  # name -> get_pretrained overrides
    "fp32": dict(dtype=torch.float32),
    "fp32+banded": dict(dtype=torch.float32, banded_attention=True),
    "bf16": dict(dtype=torch.bfloat16),
    "int8": dict(quantize="int8"),
    "int8-all": dict(quantize="int8-all"),
    "fast": dict(fast=True),  # what get_pretrained(fast=True) picks on this CPU
}


def matmul_peaks(threads: int) -> dict:
    """GFLOP/s of a large [2048 x 1024] @ [1024 x 4096] product in each arithmetic."""
    torch.set_num_threads(threads)
    m, k, n = 2048, 1024, 4096
    x, w = torch.randn(m, k), torch.randn(n, k) * 0.02

    def rate(fn) -> float:
        fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 2 * m * k * n / min(times) / 1e9

    from openmagnet.hardware import int8_saturates
    from openmagnet.quantize import Int8Linear, int8_engine

    xb, wb = x.bfloat16(), w.bfloat16()
    int8 = Int8Linear(w, int8_engine(), int8_saturates())
    with torch.inference_mode():
        return {"fp32": rate(lambda: torch.nn.functional.linear(x, w)),
                "bf16": rate(lambda: torch.nn.functional.linear(xb, wb)),
                "int8": rate(lambda: int8(x))}


def forward_flops(cfg, rows: int, cond_rows: int, seq_len: int, text_len: int, stage: int, banded: bool) -> float:
    """FLOPs of one forward that decoding does (only the stage's head; the null rows skip the
    cross-attention). Restricted attention counts the window's keys only when banded."""
    d, h = cfg.dim, cfg.dim * cfg.hidden_scale
    keys = seq_len if stage == 0 or not banded else min(seq_len, 2 * cfg.subcodes_context + 1)
    per_layer = (2 * rows * seq_len * d * 3 * d + 4 * rows * seq_len * keys * d + 2 * rows * seq_len * d * d
                 + 2 * 2 * cond_rows * seq_len * d * d + 4 * cond_rows * seq_len * text_len * d
                 + 2 * 2 * rows * seq_len * d * h)
    return cfg.num_layers * per_layer + 2 * rows * seq_len * d * cfg.card


def stage_inputs(model, batch: int, generator: torch.Generator):
    """One input per stage: random tokens below it, half masked at it, all masked above."""
    cfg, seq_len = model.cfg, int(model.duration * model.frame_rate)
    inputs = []
    for stage in range(cfg.n_q):
        codes = torch.randint(0, cfg.card, (batch, cfg.n_q, seq_len), generator=generator)
        codes[:, stage + 1:] = cfg.card
        half = torch.rand(batch, seq_len, generator=generator) < 0.5
        codes[:, stage][half] = cfg.card
        inputs.append(codes)
    return inputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True, help="checkpoint directory (state_dict.bin + compression_state_dict.bin)")
    p.add_argument("--hf-cache", help="HF hub cache holding the T5 (default: CKPT/hf_cache)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--greedy", action="store_true", help="also compare full greedy decodes (slow)")
    p.add_argument("--json")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_CACHE", a.hf_cache or str(Path(a.ckpt) / "hf_cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    prompts = PROMPTS[:a.batch]

    peaks = matmul_peaks(a.threads)
    results, exact = {}, {}
    for mode in a.modes:
        try:
            model = MAGNeT.get_pretrained(a.ckpt, device="cpu", **MODES[mode])
        except ValueError as exc:  # bf16 on a CPU without native bf16
            print(f"{mode}: refused on this CPU: {exc}", flush=True)
            continue
        print(f"{mode}: {model.mode}", flush=True)
        cfg, seq_len = model.cfg, int(model.duration * model.frame_rate)
        with torch.inference_mode():
            cond = model.conditioner.cfg_condition(prompts)
            fn = guided_logits_fn(model.lm, cond, len(prompts))
            row = {"banded": model.lm.banded_attention}
            logits = {}
            for stage, codes in enumerate(stage_inputs(model, len(prompts), torch.Generator().manual_seed(0))):
                for coef in (3.0, 10.0):
                    logits[(stage, coef)] = fn(codes, stage, coef)
                times = []
                for _ in range(a.repeats if stage <= 1 else 0):
                    t0 = time.perf_counter()
                    fn(codes, stage, 3.0)
                    times.append(time.perf_counter() - t0)
                if times:
                    flops = forward_flops(cfg, 2 * len(prompts), len(prompts), seq_len, cond.shape[1], stage,
                                          model.lm.banded_attention)
                    row[f"stage{stage}_s"] = statistics.median(times)
                    row[f"stage{stage}_gflops"] = flops / statistics.median(times) / 1e9
            if mode == "fp32":
                exact["logits"] = logits
            elif "logits" in exact:
                errs = [(logits[key] - ref).abs().max().item() for key, ref in exact["logits"].items()]
                agree = [(logits[key].argmax(-1) == ref.argmax(-1)).float().mean().item()
                         for key, ref in exact["logits"].items()]
                row["max_logit_err"] = max(errs)
                row["logit_scale"] = max(ref.abs().max().item() for ref in exact["logits"].values())
                row["argmax_agreement"] = min(agree)
            row["finite"] = all(bool(torch.isfinite(v).all()) for v in logits.values())
            if a.greedy:
                model.set_generation_params(use_sampling=False, decoding_steps=[int(20 * model.duration / 10)]
                                            + [10, 10, 10])
                t0 = time.perf_counter()
                tokens = text_tokens(model, Request(prompts=prompts, duration=model.duration))
                row["greedy_s"] = time.perf_counter() - t0
                if mode == "fp32":
                    exact["tokens"] = tokens
                elif "tokens" in exact:
                    same = tokens == exact["tokens"]
                    row["greedy_agreement"] = same.float().mean().item()
                    row["greedy_agreement_per_codebook"] = same.float().mean(dim=(0, 2)).tolist()
        results[mode] = row
        del model

    from openmagnet.hardware import describe_machine

    print(f"checkpoint {a.ckpt}: {len(prompts)} prompt(s), {seq_len} frames, {a.threads} threads")
    print(describe_machine())
    print("matmul peaks (GFLOP/s, 2048x1024x4096): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    print()
    print("| mode | banded | stage-0 forward (s) | GFLOP/s (% of peak) | stage-1 forward (s) | GFLOP/s | "
          "max logit err (scale) | argmax agreement | greedy agreement | greedy decode (s) | finite |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        peak = peaks["int8" if mode in ("int8-all", "int8", "fast") else ("bf16" if mode == "bf16" else "fp32")]
        err = f"{r['max_logit_err']:.3g} ({r['logit_scale']:.3g})" if "max_logit_err" in r else "exact"
        agree = f"{100 * r['argmax_agreement']:.2f}%" if "argmax_agreement" in r else "-"
        greedy = f"{100 * r['greedy_agreement']:.2f}%" if "greedy_agreement" in r else "-"
        gs = f"{r['greedy_s']:.1f}" if "greedy_s" in r else "-"
        print(f"| {mode} | {r['banded']} | {r['stage0_s']:.3f} | {r['stage0_gflops']:.0f} "
              f"({100 * r['stage0_gflops'] / peak:.0f}%) | {r['stage1_s']:.3f} | {r['stage1_gflops']:.0f} | {err} | "
              f"{agree} | {greedy} | {gs} | {r['finite']} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"peaks": peaks, "results": results, "threads": a.threads,
                                            "torch": torch.__version__, "ckpt": str(a.ckpt)}, indent=1))


if __name__ == "__main__":
    main()
