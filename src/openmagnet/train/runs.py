"""A training run's folder: its files, its checkpoints, its metrics log, the weights it exports and
the export itself (shared by the LM solver and the codec trainer). How a run starts is in setup.py.

Run folder layout:
    .lock                       held (flock) by the process training in the folder: one at a time
    run.json                    what the run is (config, architecture, data, codec, base checkpoint)
    compression_state_dict.bin  the frozen codec, as it will be exported
    checkpoints/step_XXXXXXXX.pt  the last `keep_last` full training states
    best.pt                     EMA weights with the lowest validation cross-entropy
    metrics.jsonl               one JSON object per logged step / validation
    samples/step_XXXXXXXX/      audio generated during training
    tokens/                     the token cache (token_cache=true)
    adapters.safetensors        LoRA adapters alone (LoRA runs)
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import typing as tp
import warnings
import weakref
from pathlib import Path

import torch

from .. import __version__
from ..checkpoint.write import from_scratch
from ..config import LMConfig, TextConfig
from ..files import NO_SPACE, DiskFullError, atomic_file, atomic_save, atomic_write_text, save_torch
from .export import build_xp_cfg, export_model, with_generation
from .faults import fault_pause
from .presets import TrainConfig

LOCK_FILE = ".lock"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "best.pt"
CHECKPOINT_DIR = "checkpoints"
CODEC_COPY = "compression_state_dict.bin"


def step_seed(*parts: tp.Any) -> int:
    """A 63-bit seed from any parts, the same on every machine and Python run."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def read_run(run_dir: Path, what: str = "a training run folder", start: tp.Optional[str] = None) -> dict:
    """The RUN_FILE of a run folder (LM or codec); a missing one is an error naming the command
    (`start`, default `openmagnet train --out RUN_DIR ...`) that makes such a folder."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        start = start or f"openmagnet train --out {run_dir} ..."
        raise ValueError(f"{run_dir} is not {what} (no {RUN_FILE}); start one with `{start}`")
    return json.loads(path.read_text())


def check_resume_overrides(overrides: tp.Mapping[str, tp.Any], changeable: tp.Sequence[str],
                           configured: tp.Mapping[str, tp.Any], flag: str = "--resume") -> dict:
    """On a resume the run's own config (`configured`, as run.json stores it) holds; only the
    `changeable` (bookkeeping) settings may change, the others may only be restated with the values
    the run has (so that a script can rerun one command line). Returns the overrides, or raises
    ValueError naming the ones that would change."""
    def plain(value: tp.Any) -> tp.Any:
        return list(value) if isinstance(value, tuple) else value

    fixed = sorted(k for k in set(overrides) - set(changeable)
                   if k not in configured or plain(overrides[k]) != plain(configured[k]))
    if fixed:
        raise ValueError(f"{flag} continues the run as it was configured; {', '.join(fixed)} cannot change "
                         f"(only {', '.join(changeable)} can)")
    return dict(overrides)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def latest_checkpoint(run_dir: Path) -> tp.Optional[Path]:
    files = sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt"))
    return files[-1] if files else None


def save_checkpoint(state: dict, run_dir: Path, step: int, keep_last: int) -> Path:
    """Write checkpoints/step_XXXXXXXX.pt atomically, then delete all but the last `keep_last`
    (shared by the LM solver and the codec trainer). On a full disk nothing is left behind and the
    earlier checkpoints stay as they were: DiskFullError says so."""
    path = checkpoint_path(run_dir, step)
    previous = latest_checkpoint(run_dir)
    try:
        with atomic_file(path) as tmp:
            save_torch(state, tmp)
            fault_pause("checkpoint")  # test-only (faults.py): written, not yet in place
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        kept = f"the previous checkpoint {previous.stem} is intact" if previous else "there is no earlier checkpoint"
        raise DiskFullError(f"{os.strerror(exc.errno).lower()} while writing checkpoint {path}: free space or "
                            f"point --out elsewhere; {kept}", exc.errno) from None
    for old in sorted(path.parent.glob("step_*.pt"))[:-keep_last]:
        old.unlink()
    return path


_HELD: "weakref.WeakSet[RunLock]" = weakref.WeakSet()  # this process's locks, closed in forked children


def _close_in_child() -> None:
    """After a fork (DataLoader workers): the child closes its copy of every held lock, so that only the
    process that took a lock holds it (flock: closing one copy leaves the parent's lock in place)."""
    for lock in list(_HELD):
        lock.release()


class RunLock:
    """The lock of a run folder: an exclusive flock on RUN_DIR/.lock (holding the holder's pid and host),
    taken before anything in the folder is written and held while the run trains. The OS drops it when
    the holder ends, however it ends (kill -9 included), so a lock file left behind blocks nothing.
    Where the platform or file system has no flock the run goes on unlocked, with a warning."""

    _fork_hook = False

    def __init__(self, run_dir: tp.Union[str, Path]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._file: tp.Optional[tp.TextIO] = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> "RunLock":
        """Take the lock (creating the folder), or raise ValueError naming the process that holds it."""
        if self._file is not None:
            return self
        try:
            import fcntl
        except ImportError:  # Windows: no flock
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ValueError(f"run folder {self.run_dir} is in use by {holder} (lock file {self.path}): wait for "
                             f"it to end or stop it, or use another --out") from None
        except OSError as exc:
            f.close()
            warnings.warn(f"cannot lock {self.path} ({exc.strerror}): nothing stops a second training from using "
                          f"{self.run_dir} at the same time", stacklevel=2)
            return self
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        _HELD.add(self)
        if not RunLock._fork_hook:
            os.register_at_fork(after_in_child=_close_in_child)
            RunLock._fork_hook = True
        return self

    def release(self) -> None:
        """Let the folder go (closing the file drops the flock); the lock file stays, harmless."""
        if self._file is not None:
            self._file.close()
            self._file = None
        _HELD.discard(self)

    def discard(self) -> None:
        """Release, then remove the lock file and the folder if nothing else is in it (a run that
        failed before writing anything leaves no folder)."""
        self.release()
        self.path.unlink(missing_ok=True)
        try:
            self.run_dir.rmdir()
        except OSError:
            pass


def write_run_folder(run_dir: Path, info: dict, codec_package: dict) -> None:
    """Start a run folder: its RUN_FILE (`info`), the copy of its frozen codec, no metrics yet."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_save(codec_package, run_dir / CODEC_COPY)
    atomic_write_text(json.dumps(info, indent=2, default=str) + "\n", run_dir / RUN_FILE)
    (run_dir / METRICS_FILE).unlink(missing_ok=True)


class MetricsLog:
    """A run's metrics: one JSON row per line in METRICS_FILE, mirrored to TensorBoard (RUN_DIR/tensorboard)
    while open and where tensorboard is installed. Writes nothing unless `enabled` (the main process)."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tensorboard: tp.Any = None

    def open(self) -> None:
        if not self.enabled or self._tensorboard is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # tensorboard is optional
        except ImportError:
            return
        self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        path = self.run_dir / METRICS_FILE
        try:
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as exc:  # a torn row is dropped by truncate_metrics on --resume
            if exc.errno not in NO_SPACE:
                raise
            raise DiskFullError(f"{os.strerror(exc.errno).lower()} while writing {path}: free space, then --resume "
                                f"from the last checkpoint", exc.errno) from None
        if self._tensorboard is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tensorboard.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows of a metrics.jsonl logged after `step` (a resumed run logs them again), and a
    torn last row (a write cut short by a full disk)."""
    if path.is_file():
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text("".join(r + "\n" for r in kept), path)


def path_weights(path: Path) -> tp.Dict[str, torch.Tensor]:
    """The weights to export or fine-tune from: a run's best EMA state (best.pt), else the EMA of
    its latest checkpoint; or the EMA of the given run checkpoint file."""
    path = Path(path)
    if path.is_dir():
        if (path / BEST_FILE).is_file():
            return torch.load(path / BEST_FILE, map_location="cpu", weights_only=True)["best_state"]
        last = latest_checkpoint(path)
        if last is None:
            raise ValueError(f"{path} has no checkpoint yet: train at least `save_every` steps first")
        path = last
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("ema"):
        return state["ema"]["state"]
    if "best_state" in state:
        return state["best_state"]
    raise ValueError(f"{path} holds no EMA or best weights: it is not an openmagnet run checkpoint")


def export_run(run: tp.Union[str, Path], out: tp.Union[str, Path], generation: tp.Optional[dict] = None) -> Path:
    """Export a run folder (its best EMA weights) or one run checkpoint (its EMA weights) as a
    model folder in the released layout (see export.py); `generation`: settings the model stores for
    itself (set_generation_params() keywords; MAGNeT.get_pretrained applies them)."""
    run = Path(run)
    run_dir = run.parent.parent if run.is_file() else run
    info = read_run(run_dir)
    cfg = TrainConfig(**info["config"])
    lm_cfg, text_cfg = LMConfig(**info["lm_config"]), TextConfig(**info["text_config"])
    state = path_weights(run)
    codec_package = torch.load(run_dir / CODEC_COPY, map_location="cpu", weights_only=True)
    codec_name = str(codec_package.get("pretrained", cfg.codec))
    xp = build_xp_cfg(lm_cfg, text_cfg, task=cfg.task, sample_rate=cfg.sample_rate, codec_checkpoint=codec_name,
                      cfg_dropout=cfg.cfg_dropout, word_dropout=cfg.word_dropout, base=info.get("base_xp"),
                      extra={"openmagnet": {"version": __version__, "run": str(run_dir.resolve()),
                                            "source": info.get("source", "scratch"), "config": cfg.to_dict(),
                                            **({"lineage": "scratch"} if from_scratch(info.get("base_xp")) else {})}})
    if generation:
        xp = with_generation(xp, generation)
    return export_model(out, state, xp, codec_package,
                        after_first=lambda: fault_pause("export"))  # test-only (faults.py): one file in place
