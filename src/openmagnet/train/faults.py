"""A test-only hook for the kill -9 harness (bench/kill_resume.py, tests/train/test_faults.py): with
OPENMAGNET_FAULT_PAUSE=PHASE[:N] in its environment, a process reaching `fault_pause(PHASE)` for the
N-th time (default the first) says so on stderr and sleeps OPENMAGNET_FAULT_SECONDS (default 60), so
that the harness's SIGKILL lands inside that phase. Without the variable it does nothing.

The phases: `step` (gradients computed, weights not yet updated), `checkpoint` (the checkpoint's
temporary file written, not yet renamed into place), `validation` (the validation metrics computed,
neither best.pt nor the metrics row written), `export` (the first exported file renamed into place,
the others not).
"""
from __future__ import annotations

import os
import sys
import time

PHASES = ("step", "checkpoint", "validation", "export")
_reached: dict = {}  # phase -> times this process reached it (test-only bookkeeping)


def fault_pause(phase: str) -> None:
    wanted = os.environ.get("OPENMAGNET_FAULT_PAUSE")
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != phase:
        return
    _reached[phase] = count = _reached.get(phase, 0) + 1
    if count == int(nth or 1):
        print(f"openmagnet: fault pause: {phase} {count} (pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("OPENMAGNET_FAULT_SECONDS", "60")))
