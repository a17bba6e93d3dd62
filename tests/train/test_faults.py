"""Training faults: two trainings pointed at one run folder (runs.RunLock), a full disk while
checkpointing (runs.save_checkpoint, files.save_torch), a process killed at any moment and resumed
(solver.py's order of work per step; bench/kill_resume.py, a few trials here, the full table in
bench/results/kill_resume.md). Every error here is one line."""
import errno
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train.conftest import CODEC, SMALL, _metrics, _solver

SRC = Path(__file__).resolve().parents[2] / "src"


def _timeless(rows):
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]


def _temps(folder: Path):
    return sorted(p.relative_to(folder) for p in folder.rglob(".*.tmp"))


def _train_args(manifest, run, steps, *extra):
    return ["train", "--data", str(manifest), "--out", str(run), "--model-scale", "tiny", "--codec", CODEC,
            "--segment-duration", "1", "--batch-size", "2", "--max-steps", str(steps), "--num-workers", "0",
            "--quiet", "--set", "dim=32", "--set", "num_heads=2", "--set", "num_layers=1", "--set", "save_every=1",
            "--set", "valid_every=1000", "--set", "valid_batches=1", "--set", "keep_last=3", "--set", "log_every=1",
            *extra]


# ------------------------------------------------------------------------------------ the lock
HOLDER = """import os, sys, time
from openmagnet.train.runs import RunLock
lock = RunLock(sys.argv[1]).acquire()
child = os.fork()  # like a DataLoader worker: it inherits the open lock file
if child == 0:
    time.sleep(300)
    os._exit(0)
print(os.getpid(), child, flush=True)
time.sleep(300)
"""


def test_one_training_per_folder_and_a_killed_holder_blocks_nothing(manifest, tmp_path, capsys):
    from openmagnet.cli import main

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    pid, child = map(int, holder.stdout.readline().split())
    try:
        in_use = (f"run folder {run} is in use by process {pid} on {socket.gethostname()} (lock file {run}/.lock): "
                  f"wait for it to end or stop it, or use another --out")
        with pytest.raises(ValueError) as err:
            _solver(manifest, run, max_steps=1)
        assert str(err.value) == in_use
        assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
        assert capsys.readouterr().err == f"openmagnet: error: {in_use}\n"
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing else touched
        os.kill(pid, signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # its forked child lives on (with its copy of the lock file), and so does the file:
        assert (run / ".lock").is_file()  # neither blocks the next training
        first = _solver(manifest, run, max_steps=1, save_every=1, valid_every=1)
    finally:
        for p in (pid, child):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        holder.wait()
    # in one process too, and the lock goes when the run ends
    with pytest.raises(ValueError, match=f"^run folder {run} is in use by process {os.getpid()} on "):
        _solver(manifest, run, resume=True)
    first.run()
    assert _solver(manifest, run, resume=True).step == 1


def test_only_the_main_process_takes_the_lock(manifest, tmp_path, monkeypatch):
    from openmagnet.train.runs import RunLock

    run = tmp_path / "run"
    held = RunLock(run).acquire()  # as rank 0 of the same torchrun job holds it
    monkeypatch.setenv("RANK", "1")
    try:
        solver = _solver(manifest, run, max_steps=1)  # rank 1 neither waits for it nor refuses
        assert solver.lock is None
    finally:
        held.release()


def test_a_torchrun_job_on_a_folder_in_use_ends_at_once(manifest, tmp_path):
    """Rank 0 alone takes the lock; refused, it fails and torchrun stops the other ranks (waiting in
    the process group for it): the job ends with the one-line error, nothing hangs."""
    from openmagnet.train.runs import RunLock

    held = RunLock(tmp_path).acquire()
    worker = Path(__file__).parent / "ddp_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
           str(manifest), str(tmp_path), json.dumps({**SMALL, "max_steps": 1})]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        held.release()
    assert done.returncode != 0
    assert (f"ValueError: run folder {tmp_path} is in use by process {os.getpid()} on {socket.gethostname()} "
            f"(lock file {tmp_path}/.lock): wait for it to end or stop it, or use another --out") in done.stderr


def test_codec_training_takes_the_lock_too(manifest, tmp_path):
    from openmagnet.train.codec.trainer import train_codec
    from openmagnet.train.runs import RunLock

    run = tmp_path / "codec"
    held = RunLock(run).acquire()
    try:
        with pytest.raises(ValueError, match=f"^run folder {run} is in use by process {os.getpid()} on .*: wait for "
                                             f"it to end or stop it, or use another --out$"):
            train_codec(manifest, run, steps=1)
    finally:
        held.release()
    with pytest.raises(ValueError, match="is not a"):  # a failed start leaves no folder it made
        train_codec(None, tmp_path / "nothing", resume=True)
    assert not (tmp_path / "nothing").exists()


# ------------------------------------------------------------------------------- a full disk
class _Disk:
    """files.py's open() on a disk with `room` bytes left: a write past it writes what fits, then
    fails with ENOSPC, as a real full disk does."""

    def __init__(self, room: int):
        self.room = room

    def open(self, path, mode="r", *args, **kwargs):
        f = io.open(path, mode, *args, **kwargs)
        return _Full(f, self) if "w" in mode and "b" in mode else f


class _Full:
    def __init__(self, f, disk):
        self.f, self.disk = f, disk

    def write(self, data):
        data = memoryview(data).cast("B")
        n = min(len(data), self.disk.room)
        self.f.write(data[:n])
        self.disk.room -= n
        if n < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def flush(self):
        self.f.flush()

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(manifest, tmp_path, monkeypatch, capsys):
    from openmagnet import files
    from openmagnet.cli import main

    run = tmp_path / "run"
    assert main(_train_args(manifest, run, 2)) == 0
    previous = (run / "checkpoints" / "step_00000002.pt").read_bytes()
    capsys.readouterr()
    best = (run / "best.pt").stat().st_size
    monkeypatch.setattr(files, "open", _Disk(room=best + 100_000).open, raising=False)  # best.pt fits, no more
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "3", "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"openmagnet: error: no space left on device while writing checkpoint {run}/checkpoints/step_00000003.pt: "
        f"free space or point --out elsewhere; the previous checkpoint step_00000002 is intact\n")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000001.pt", "step_00000002.pt"]
    assert _temps(run) == []
    assert (run / "checkpoints" / "step_00000002.pt").read_bytes() == previous
    monkeypatch.undo()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "3", "--quiet"]) == 0  # space again
    assert [r["step"] for r in _metrics(run) if "ce" in r] == [1, 2, 3]
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "3", "--quiet"]) == 0  # nothing to do
    assert capsys.readouterr().out == (f"{run} is already trained to step 3 (max_steps 3): nothing to do "
                                       f"(pass --resume --max-steps N with a larger N to train further)\n")


def test_full_disk_anywhere_else_is_one_line(tmp_path, monkeypatch):
    from openmagnet import files

    monkeypatch.setattr(files, "open", _Disk(room=10).open, raising=False)
    with pytest.raises(files.DiskFullError) as err:
        files.atomic_save({"x": torch.zeros(1000)}, tmp_path / "best.pt")
    assert str(err.value) == (f"no space left on device while writing {tmp_path}/best.pt: free space or write it "
                              f"elsewhere (best.pt is as it was)")
    assert err.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []
    # torch.save alone hides the cause: "RuntimeError: [enforce fail at inline_container.cc] unexpected pos"
    with pytest.raises(OSError, match="No space left on device"):
        files.save_torch({"x": torch.zeros(1000)}, tmp_path / "plain.pt")


def test_full_disk_while_logging_is_one_line(tmp_path, monkeypatch):
    import builtins

    from openmagnet.train.runs import MetricsLog

    real_open = builtins.open
    disk = _Disk(room=20)
    monkeypatch.setattr(builtins, "open", lambda path, mode="r", *a, **kw: (
        _Text(real_open(path, "ab"), disk) if mode == "a" else real_open(path, mode, *a, **kw)))
    with pytest.raises(OSError) as err:
        MetricsLog(tmp_path).write({"step": 1, "ce": 7.0})
    monkeypatch.undo()
    assert str(err.value) == (f"no space left on device while writing {tmp_path}/metrics.jsonl: free space, then "
                              f"--resume from the last checkpoint")


class _Text(_Full):
    def write(self, text):
        return super().write(text.encode())


def _mount_tmpfs(folder: Path, size: int) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def test_full_tmpfs_while_checkpointing(manifest, tmp_path, capsys):
    """The same on a real full file system, where one can be mounted (root in a container that allows it)."""
    from openmagnet.cli import main

    dry = tmp_path / "dry"
    assert main(_train_args(manifest, dry, 1)) == 0
    used = sum(p.stat().st_size for p in dry.rglob("*") if p.is_file())
    ckpt = (dry / "checkpoints" / "step_00000001.pt").stat().st_size
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, used + ckpt + ckpt // 2 + 65536):  # room for a second checkpoint, not a third
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = disk / "run"
        assert main(_train_args(manifest, run, 2)) == 0
        capsys.readouterr()
        assert main(["train", "--out", str(run), "--resume", "--max-steps", "3", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err == (f"openmagnet: error: no space left on device while writing checkpoint {run}/checkpoints/"
                       f"step_00000003.pt: free space or point --out elsewhere; the previous checkpoint "
                       f"step_00000002 is intact\n")
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000001.pt", "step_00000002.pt"]
        assert _temps(run) == []
        assert torch.load(run / "checkpoints" / "step_00000002.pt", weights_only=True)["step"] == 2
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ---------------------------------------------------------------------- killed, then resumed
def test_truncate_metrics_drops_a_torn_row(tmp_path):
    from openmagnet.train.runs import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "ce": 7.0}\n{"step": 2, "ce": 6.5}\n{"step": 3, "ce"')  # a write cut short
    truncate_metrics(path, 2)
    assert path.read_text() == '{"step": 1, "ce": 7.0}\n{"step": 2, "ce": 6.5}\n'


def test_a_start_clears_the_temporary_files_a_killed_run_left(manifest, tmp_path):
    run = tmp_path / "run"
    _solver(manifest, run, max_steps=1, save_every=1, valid_every=1).run()
    stale = [run / "checkpoints" / ".step_00000002.pt.0123456789ab.tmp", run / ".best.pt.abcdef012345.tmp",
             run / "samples" / "step_00000002" / ".00.wav.00112233aabb.tmp"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a file")
    (run / ".notes.tmp").write_text("not ours")
    assert _solver(manifest, run, resume=True).step == 1
    assert not any(p.exists() for p in stale) and (run / ".notes.tmp").is_file()


def test_killed_in_validation_redoes_the_step(manifest, tmp_path, monkeypatch):
    """Regression: the checkpoint of a step was written before its validation, so a run killed in that
    validation resumed after it: its row never logged, best.pt never considered. And the logged mean
    loss of a window cut by the resume covered only the steps after it."""
    from openmagnet.train.validation import Validator

    common = dict(max_steps=8, save_every=3, valid_every=3, log_every=2, cfg_dropout=0.5, word_dropout=0.3,
                  schedule="cosine", warmup=2, ema_every=2)
    whole = _solver(manifest, tmp_path / "whole", **common)
    whole.run()
    validate = Validator.__call__

    def killed_in_validation_6(self, lm, step):
        if step == 6:
            raise KeyboardInterrupt
        return validate(self, lm, step)

    monkeypatch.setattr(Validator, "__call__", killed_in_validation_6)
    with pytest.raises(KeyboardInterrupt):
        _solver(manifest, tmp_path / "part", **common).run()
    monkeypatch.undo()
    resumed = _solver(manifest, tmp_path / "part", resume=True)
    assert resumed.step == 3 and resumed.log_window  # step 3's loss waits for the row of step 4
    resumed.run()
    assert _timeless(_metrics(tmp_path / "part")) == _timeless(_metrics(tmp_path / "whole"))
    a = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "best.pt", weights_only=True)
    assert a["step"] == b["step"] and all(torch.equal(v, b["best_state"][k]) for k, v in a["best_state"].items())


def test_kill_9_then_resume(tmp_path):
    """bench/kill_resume.py with one trial per phase: SIGKILL in a step, a checkpoint write, a validation,
    an export; the recovered run equals the uninterrupted one bit for bit."""
    from bench.kill_resume import Harness

    harness = Harness(tmp_path, seed=1)
    harness.prepare()
    results = harness.trials(4, phases=("step", "checkpoint", "validation", "export"), log=lambda line: None)
    assert sorted(r["phase"] for r in results) == ["checkpoint", "export", "step", "validation"]
    for r in results:
        assert r["ok"], json.dumps(r)
        assert r["killed_in"].startswith(r["phase"])  # the kill landed in the phase
