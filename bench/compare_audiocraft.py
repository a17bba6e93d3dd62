#!/usr/bin/env python
"""Time audiocraft 1.3.0 and openmagnet side by side on the same fabricated checkpoints.

    .venv/bin/python bench/compare_audiocraft.py --peer ../shared/peer-audiocraft \
        --cases tiny10 small10 small30 --batch 1 4 --runs 3

The peer harness (its own venv, see its README) builds each checkpoint once into bench/cache/ and
runs audiocraft through its run_reference.py; openmagnet runs in bench/_openmagnet_worker.py with
the same protocol: load (not timed), an untimed warm-up (1 s of audio, 1 step per codebook), then
one timed generation: (a) LM decoding, T5 included, and (b) codec decode. Every run is a fresh
process, runs alternate between the two implementations, same prompts, same settings, same torch
thread count, and the table reports medians. Peak RSS is the process's maximum resident set.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROMPTS = ["80s electronic track with melodic synthesizers, catchy beat and groovy bass",
           "calm acoustic guitar ballad with soft piano", "energetic EDM with a big drop at 128 bpm",
           "slow jazz with brushed drums and upright bass"]
# name -> (harness scale, segment duration, decoding steps)
CASES = {
    "tiny10": ("tiny", 10, [20, 10, 10, 10]),
    "small10": ("small", 10, [20, 10, 10, 10]),
    "small30": ("small", 30, [60, 10, 10, 10]),
    # A tenth of small30's steps with the same 2:1 mix of full-attention (codebook 0) and
    # restricted steps, for a cheaper measurement of the same per-step costs.
    "small30s": ("small", 30, [6, 1, 1, 1]),
}
MODES = ("float32", "bfloat16", "int8", "int8-all", "fast", "turbo", "fast+turbo", "fast+turbo+compile")


def run_measured(cmd, env=None):
    """Run a command; return (exit status, peak RSS in MB of that process)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{output[-3000:]}")
    return output, usage.ru_maxrss / 1024


def ensure_checkpoint(peer: Path, case: str) -> Path:
    scale, seconds, _ = CASES[case]
    out = HERE / "cache" / f"{scale}{seconds}"
    if not (out / "state_dict.bin").exists():
        subprocess.run([peer / ".venv/bin/python", peer / "make_reference.py", "--scale", scale,
                        "--segment-duration", str(seconds), "--out", out, "--force"], check=True)
    return out


def audiocraft_run(peer: Path, ref: Path, prompts, steps, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [peer / ".venv/bin/python", peer / "run_reference.py", "--ref", ref, "--out", tmp,
               "--prompts", *prompts, "--decoding-steps", *map(str, steps), "--threads", str(threads),
               "--repeat", "1", "--no-wav"]
        _, rss = run_measured(list(map(str, cmd)))
        r = json.loads((Path(tmp) / "timings.json").read_text())
    return {"lm_s": r["lm_generate_s"]["median"], "codec_s": r["codec_decode_s"]["median"],
            "total_s": r["total_s"]["median"], "rss_mb": rss, "samples": r["audio_shape"][-1],
            "sample_rate": r["sample_rate"]}


def openmagnet_run(ref: Path, prompts, steps, threads: int, mode: str) -> dict:
    cmd = [sys.executable, HERE / "_openmagnet_worker.py", "--ref", ref, "--threads", str(threads),
           "--mode", mode, "--steps", *map(str, steps), "--prompts", *prompts]
    output, rss = run_measured(list(map(str, cmd)))
    r = json.loads(output.strip().splitlines()[-1])
    r["rss_mb"] = rss
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", required=True, help="the peer-audiocraft harness folder, set up (bash setup.sh)")
    p.add_argument("--cases", nargs="+", default=["tiny10"], choices=list(CASES))
    p.add_argument("--batch", nargs="+", type=int, default=[1])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=["float32"], choices=MODES,
                   help="openmagnet modes to time: float32 (exact), bfloat16, int8 / int8-all (quantize=...), "
                        "fast (get_pretrained(fast=True): what this CPU runs fastest), turbo (exact kernels, "
                        "speed='turbo'), fast+turbo, fast+turbo+compile (compile=True: the warm-up pays the compile)")
    p.add_argument("--results", default=str(HERE / "results" / "compare_audiocraft.json"))
    p.add_argument("--table-only", action="store_true", help="print the table of --results and stop")
    p.add_argument("--append", action="store_true",
                   help="add these runs to the case's runs already in --results (same modes), e.g. one run per call")
    p.add_argument("--no-audiocraft", action="store_true",
                   help="time openmagnet's modes only (ratios then against openmagnet's exact mode)")
    a = p.parse_args()
    if a.table_only:
        print_table(json.loads(Path(a.results).read_text()))
        return
    peer = Path(a.peer).resolve()
    results = json.loads(Path(a.results).read_text()) if Path(a.results).exists() else {}
    from openmagnet.hardware import cpu_info, cpu_name

    results["machine"] = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": a.threads,
                          "python": platform.python_version(), "capability": cpu_info().describe()}
    for case in a.cases:
        ref = ensure_checkpoint(peer, case)
        steps = CASES[case][2]
        for batch in a.batch:
            prompts = (PROMPTS * batch)[:batch]
            key = f"{case}_b{batch}"
            runs = ({} if a.no_audiocraft else {"audiocraft": []}) | {f"openmagnet_{d}": [] for d in a.modes}
            if a.append and key in results:
                runs = {name: results[key]["runs"].get(name, []) for name in runs}
            for i in range(a.runs):  # interleaved
                if not a.no_audiocraft:
                    runs["audiocraft"].append(audiocraft_run(peer, ref, prompts, steps, a.threads))
                for d in a.modes:
                    runs[f"openmagnet_{d}"].append(openmagnet_run(ref, prompts, steps, a.threads, d))
                print(f"[{key}] run {i}: " + ", ".join(f"{k} {v[-1]['total_s']:.2f}s" for k, v in runs.items()),
                      flush=True)
            results[key] = {"steps": steps, "prompts": prompts, "runs": runs}
            Path(a.results).parent.mkdir(parents=True, exist_ok=True)
            Path(a.results).write_text(json.dumps(results, indent=1) + "\n")
    print_table(results)


def print_table(results: dict):
    """Medians over the runs; 'vs audiocraft' and 'vs exact' are the medians of the run-by-run ratios
    (each set ran back to back, so they hold when the machine's speed drifts), with their range."""
    machine = results.get("machine", {})
    print(f"\n{machine.get('cpu', '?')} ({machine.get('capability', 'capability not recorded')}), "
          f"{machine.get('threads', '?')} threads")
    print("\n| case | implementation | LM decode (s) | codec decode (s) | total (s) | vs audiocraft (range) "
          "| vs exact (range) | real-time factor | forward passes | CPU time (s), vs exact | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        if key == "machine":
            continue
        base = [x["total_s"] for x in r["runs"].get("audiocraft", [])]
        exact = [x["total_s"] for x in r["runs"].get("openmagnet_float32", [])]
        for impl, runs in r["runs"].items():
            med = {m: statistics.median(x[m] for x in runs) for m in ("lm_s", "codec_s", "total_s", "rss_mb")}
            audio_s = runs[0]["samples"] / runs[0]["sample_rate"]
            name = impl + (f" ({runs[0]['mode']})" if runs[0].get("mode") and "float32" not in impl else "")
            passes = runs[0].get("forward_passes", "-")
            print(f"| {key} | {name} | {med['lm_s']:.2f} | {med['codec_s']:.3f} | {med['total_s']:.2f} | "
                  f"{_ratio(base, runs) if base else '-'} | {_ratio(exact, runs) if exact else '-'} | "
                  f"{med['total_s'] / audio_s:.2f} | {passes} | {_cpu(r['runs'], runs)} | {med['rss_mb']:.0f} |")


def _cpu(all_runs: dict, runs: list) -> str:
    """Median process CPU time of the timed generation (all threads; a measure that a busy machine inflates
    far less than wall time), and exact's over this one's; '-' where not recorded (audiocraft)."""
    if not all("total_cpu_s" in x for x in runs):
        return "-"
    cpu = statistics.median(x["total_cpu_s"] for x in runs)
    exact = [x.get("total_cpu_s") for x in all_runs.get("openmagnet_float32", [])]
    if not exact or None in exact:
        return f"{cpu:.1f}"
    return f"{cpu:.1f}, {statistics.median(exact) / cpu:.2f}x"


def _ratio(base, runs) -> str:
    ratios = [b / x["total_s"] for b, x in zip(base, runs, strict=False)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


if __name__ == "__main__":
    main()
