"""kill -9 at random moments, then --resume: does training continue exactly?

    PYTHONPATH=src:. .venv/bin/python bench/kill_resume.py --trials 20 \
        --json bench/results/kill_resume.json --md bench/results/kill_resume.md

On the tiny fixture model and audio made here (tests/train_utils.py), `openmagnet train` runs once
uninterrupted with a fixed seed (the reference: its metrics.jsonl and final checkpoint). Each trial then
starts the same run in a fresh folder and SIGKILLs it in a chosen phase, made to last by the test-only
hook of openmagnet/train/faults.py (OPENMAGNET_FAULT_PAUSE=PHASE:N; N, and the delay before the kill,
drawn from a seeded generator):

    step        the N-th training step, after the backward pass, before the weights change
    checkpoint  the N-th checkpoint, its temporary file written, not yet renamed into place
    validation  the N-th validation, computed, neither best.pt nor its metrics row written
    timed       no hook: a uniformly random moment of the run (start-up included)
    export      `openmagnet export` of the finished reference run, one file renamed into place

then recovers as a user would: `openmagnet train --out RUN --resume` when a checkpoint exists, else the
first command again (export: the export again). A trial is OK when the recovery succeeds despite the
lock file the killed process left, every metrics row but the timings equals the reference's (training
losses, validation, learning rates), the final checkpoint's weights, optimiser state and EMA and best.pt
equal the reference's bit for bit, and no temporary file is left (export: the run folder is untouched,
each file of the killed export is absent or complete, and the re-export equals the reference export).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PHASES = ("step", "checkpoint", "validation", "timed", "export")
STEPS, SAVE_EVERY, VALID_EVERY = 8, 2, 3  # checkpoints at 2, 4, 6, 8; validations at 3, 6, 8
SETTINGS = dict(dim=32, num_heads=2, num_layers=1, save_every=SAVE_EVERY, valid_every=VALID_EVERY, valid_batches=1,
                log_every=1, keep_last=2, cfg_dropout=0.3, word_dropout=0.3, schedule="cosine", warmup=2,
                ema_every=2)
COUNTS = {"step": STEPS, "checkpoint": STEPS // SAVE_EVERY, "validation": STEPS // VALID_EVERY + 1}
ANNOUNCE = "openmagnet: fault pause: "


def temps(folder: Path) -> tp.List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


def timeless(rows: tp.List[dict]) -> tp.List[dict]:
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]


def metrics(run: Path) -> tp.List[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def max_diff(a: tp.Any, b: tp.Any) -> float:
    """The largest absolute difference between two nests of numbers / tensors (inf where they do not
    even have the same shape or keys)."""
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return float("inf")
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf")
        return max([max_diff(a[k], b[k]) for k in a] or [0.0])
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return float("inf")
        return max([max_diff(x, y) for x, y in zip(a, b, strict=False)] or [0.0])
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b))
    return 0.0 if a == b else float("inf")


class Harness:
    """The reference run and the trials, under `root` (fixture audio, an HF cache copy, run folders)."""

    def __init__(self, root: Path, seed: int = 0, pause_s: float = 120.0):
        self.root = Path(root)
        self.seed = seed
        self.pause_s = pause_s
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
                    "OMP_NUM_THREADS": "1", "OPENMAGNET_FAULT_SECONDS": str(pause_s)}
        self.env.pop("OPENMAGNET_FAULT_PAUSE", None)
        self.manifest = self.root / "manifest"
        self.ref = self.root / "reference"
        self.ref_seconds = 0.0

    # ------------------------------------------------------------------ commands
    def train_args(self, out: Path) -> tp.List[str]:
        args = ["train", "--data", str(self.manifest), "--out", str(out), "--model-scale", "tiny",
                "--codec", str(FIXTURES / "music10"), "--segment-duration", "1", "--batch-size", "2",
                "--max-steps", str(STEPS), "--num-workers", "0", "--seed", "7", "--quiet"]
        for k, v in SETTINGS.items():
            args += ["--set", f"{k}={v}"]
        return args

    def cli(self, args: tp.List[str], fault: tp.Optional[str] = None) -> subprocess.Popen:
        env = dict(self.env, **({"OPENMAGNET_FAULT_PAUSE": fault} if fault else {}))
        return subprocess.Popen([sys.executable, "-m", "openmagnet", *args], env=env, cwd=str(self.root),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def finish(self, args: tp.List[str]) -> tp.Tuple[int, str]:
        proc = self.cli(args)
        _, err = proc.communicate(timeout=900)
        return proc.returncode, err

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> None:
        from tests.train_utils import write_audio_set  # the fixture audio of the training tests

        from openmagnet.data.manifest import index_audio_dir

        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "hub").is_dir():
            shutil.copytree(FIXTURES / "hf_cache", self.root / "hub")  # nothing writes into tests/fixtures
        self.env["HF_HUB_CACHE"] = str(self.root / "hub")
        if not self.manifest.is_dir():
            index_audio_dir(write_audio_set(self.root / "audio"), self.manifest)
        if not (self.ref / "checkpoints" / f"step_{STEPS:08d}.pt").is_file():
            shutil.rmtree(self.ref, ignore_errors=True)
            t0 = time.perf_counter()
            rc, err = self.finish(self.train_args(self.ref))
            if rc != 0:
                raise RuntimeError(f"the reference run failed:\n{err}")
            (self.root / "reference_seconds").write_text(f"{time.perf_counter() - t0:.2f}\n")
        self.ref_seconds = float((self.root / "reference_seconds").read_text())
        if not (self.root / "reference_model").is_dir():
            rc, err = self.finish(["export", str(self.ref), "--out", str(self.root / "reference_model")])
            if rc != 0:
                raise RuntimeError(f"the reference export failed:\n{err}")

    # ------------------------------------------------------------------ trials
    def kill_in(self, proc: subprocess.Popen, delay: float) -> tp.Optional[str]:
        """Wait for the fault announcement, then `delay` s, then SIGKILL; returns the announcement (None
        when the process ended without one)."""
        seen = None
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(ANNOUNCE):
                seen = line[len(ANNOUNCE):].strip()
                break
        if seen is not None:
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        return seen

    def kill_after(self, proc: subprocess.Popen, seconds: float) -> bool:
        """SIGKILL after `seconds` unless the process ended first; True when killed."""
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            return True
        proc.communicate()
        return False

    def trial(self, index: int, phase: str, rng: random.Random) -> dict:
        run = self.root / f"trial_{index:03d}_{phase}"
        shutil.rmtree(run, ignore_errors=True)
        if phase == "export":
            return self.export_trial(index, run, rng)
        result: dict = {"trial": index, "phase": phase}
        t0 = time.perf_counter()
        if phase == "timed":
            at = rng.uniform(0.4, 1.0) * max(self.ref_seconds, 10.0)  # start-up takes about a third
            result["kill_after_s"] = round(at, 2)
            killed = self.kill_after(self.cli(self.train_args(run)), at)
            result["killed_in"] = f"{at:.1f} s" if killed else "(ended before the kill)"
        else:
            nth = rng.randint(1, COUNTS[phase])
            delay = rng.uniform(0.0, 0.5)
            seen = self.kill_in(self.cli(self.train_args(run), fault=f"{phase}:{nth}"), delay)
            result.update(nth=nth, delay_s=round(delay, 3), killed_in=seen or "(no pause reached)")
        from openmagnet.train.runs import latest_checkpoint

        last = latest_checkpoint(run)
        result["resumed_from"] = last.stem if last else None
        result["temps_after_kill"] = temps(run) if run.exists() else []
        result["lock_left"] = (run / ".lock").is_file()
        args = ["train", "--out", str(run), "--resume", "--quiet"] if last else self.train_args(run)
        rc, err = self.finish(args)
        result["recovery_rc"] = rc
        if rc != 0:
            result.update(ok=False, error=err.strip().splitlines()[-1] if err.strip() else "")
            return result
        result.update(self.compare(run))
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["ok"] = (result["rows_equal"] and result["max_weight_diff"] == 0.0 and not result["temps_left"])
        return result

    def compare(self, run: Path) -> dict:
        import torch

        a, b = timeless(metrics(self.ref)), timeless(metrics(run))
        ces = [abs(x["ce"] - y["ce"]) for x, y in zip(a, b, strict=False) if "ce" in x and "ce" in y]
        final = f"checkpoints/step_{STEPS:08d}.pt"
        ref_ckpt = torch.load(self.ref / final, weights_only=True)
        ckpt = torch.load(run / final, weights_only=True)
        keys = ("model", "optimizer", "scheduler", "ema", "best_valid")
        weights = max(max_diff(ref_ckpt[k], ckpt[k]) for k in keys)
        best = max_diff(torch.load(self.ref / "best.pt", weights_only=True),
                        torch.load(run / "best.pt", weights_only=True))
        first_bad = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        return {"rows_equal": a == b, "rows": len(b), "reference_rows": len(a),
                "first_different_row": None if first_bad is None else [a[first_bad], b[first_bad]],
                "max_ce_diff": max(ces + [0.0]) if len(a) == len(b) else float("inf"),
                "max_weight_diff": max(weights, best), "temps_left": temps(run)}

    def export_trial(self, index: int, run: Path, rng: random.Random) -> dict:
        """Kill `openmagnet export` with one file in place; the run folder must be untouched, each file
        of the killed export absent or complete, and the export run again equal to the reference."""
        import hashlib

        import torch

        shutil.copytree(self.ref, run)

        def digest(folder: Path) -> dict:
            return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in sorted(folder.rglob("*")) if p.is_file()}

        before = digest(run)
        model = run.parent / f"{run.name}_model"
        shutil.rmtree(model, ignore_errors=True)
        delay = rng.uniform(0.0, 0.5)
        seen = self.kill_in(self.cli(["export", str(run), "--out", str(model)], fault="export:1"), delay)
        result: dict = {"trial": index, "phase": "export", "nth": 1, "delay_s": round(delay, 3),
                        "killed_in": seen or "(no pause reached)", "temps_after_kill": temps(model)}
        complete = []
        for name in ("state_dict.bin", "compression_state_dict.bin", "model.safetensors"):
            path = model / name
            if path.is_file():
                if name.endswith(".safetensors"):
                    from safetensors.torch import load_file

                    load_file(str(path))
                else:
                    torch.load(path, weights_only=True)
                complete.append(name)
        result["in_place_after_kill"] = complete
        rc, err = self.finish(["export", str(run), "--out", str(model), "--overwrite"])  # files of the killed one
        result["recovery_rc"] = rc
        if rc != 0:
            result.update(ok=False, error=err.strip().splitlines()[-1] if err.strip() else "")
            return result
        ref = torch.load(self.root / "reference_model" / "state_dict.bin", weights_only=True)["best_state"]
        new = torch.load(model / "state_dict.bin", weights_only=True)["best_state"]
        result.update(run_folder_untouched=digest(run) == before, max_weight_diff=max_diff(ref, new),
                      temps_left=temps(model), rows_equal=True, max_ce_diff=0.0)
        result["ok"] = (result["run_folder_untouched"] and result["max_weight_diff"] == 0.0
                        and not result["temps_left"])
        shutil.rmtree(model, ignore_errors=True)
        return result

    def trials(self, n: int, phases: tp.Sequence[str] = PHASES, log: tp.Callable[[str], None] = print) -> tp.List[dict]:
        rng = random.Random(self.seed)
        order = [phases[i % len(phases)] for i in range(n)]
        rng.shuffle(order)
        results = []
        for i, phase in enumerate(order):
            result = self.trial(i, phase, rng)
            log(json.dumps({k: v for k, v in result.items() if k != "first_different_row"}))
            results.append(result)
            if result["ok"]:
                shutil.rmtree(self.root / f"trial_{i:03d}_{phase}", ignore_errors=True)
        return results


def summary(results: tp.List[dict]) -> tp.List[dict]:
    rows = []
    for phase in PHASES:
        rs = [r for r in results if r["phase"] == phase]
        if rs:
            rows.append({"phase": phase, "trials": len(rs), "resumed_ok": sum(r["ok"] for r in rs),
                         "max_ce_diff": max(r.get("max_ce_diff", float("inf")) for r in rs),
                         "max_weight_diff": max(r.get("max_weight_diff", float("inf")) for r in rs)})
    return rows


def markdown(results: tp.List[dict], args: argparse.Namespace, seconds: float) -> str:
    lines = ["# kill -9 at random moments, then --resume", "",
             f"`python bench/kill_resume.py --trials {args.trials} --seed {args.seed}` "
             f"({seconds / 60:.1f} min on this machine). Tiny fixture model (dim 32, 1 layer), {STEPS} steps, "
             f"checkpoints every {SAVE_EVERY}, validation every {VALID_EVERY}, cosine schedule, CFG and word "
             f"dropout on, seed 7; the reference is the same command uninterrupted. See the module docstring "
             f"for the phases and what a trial checks.", "",
             "| phase | trials | resumed OK | max loss diff | max weight diff |", "|---|---|---|---|---|"]
    for row in summary(results):
        lines.append(f"| {row['phase']} | {row['trials']} | {row['resumed_ok']} | {row['max_ce_diff']:g} | "
                     f"{row['max_weight_diff']:g} |")
    late = sum(r.get("killed_in") == "(ended before the kill)" for r in results)
    if late:
        lines += ["", f"{late} timed trial(s) ended before their kill time (the machine ran faster than during the "
                      f"reference run): they check only that a finished run resumes as finished."]
    lines += ["", "| trial | phase | killed in | resumed from | recovery | rows equal | left temp files (after "
              "kill -> after recovery) | ok |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['trial']} | {r['phase']} | {r.get('killed_in')} | {r.get('resumed_from', '-')} | "
                     f"rc {r.get('recovery_rc')} | {r.get('rows_equal')} | {len(r.get('temps_after_kill', []))} -> "
                     f"{len(r.get('temps_left', []))} | {'OK' if r['ok'] else 'FAILED'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    p.add_argument("--root", help="work folder (default: a new temporary one, removed at the end)")
    p.add_argument("--json")
    p.add_argument("--md")
    args = p.parse_args()
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="kill-resume-"))
    t0 = time.perf_counter()
    harness = Harness(root, seed=args.seed)
    try:
        harness.prepare()
        results = harness.trials(args.trials, args.phases)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    seconds = time.perf_counter() - t0
    for row in summary(results):
        print(row)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary(results), "trials": results}, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(markdown(results, args, seconds))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
