"""Writing files so that nothing is ever half-written: everything openmagnet saves (audio, manifests,
checkpoints, exports, adapters, token caches) goes through a complete temporary file in the same
folder, flushed to disk, then renamed over the target in one step (`os.replace`); a model folder's files are
all complete before the first is renamed (`write_all_atomically`). A process killed mid-write leaves such a
temporary file behind, never a half-written target (`remove_stale_temps` clears them where one process owns
the folder). A full disk is an OSError with errno ENOSPC (or EDQUOT), whatever the writer (`save_torch`).
Also the names of generated files (`slug`), shared by the command line and the app.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import unicodedata
import uuid
import typing as tp
from pathlib import Path

PathLike = tp.Union[str, os.PathLike]
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a full quota
TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # what temp_beside names


class DiskFullError(OSError):
    """No space left (or no quota left) while writing: the message says what was being written and
    what to do; `errno` is the underlying ENOSPC / EDQUOT."""

    def __init__(self, message: str, code: int = errno.ENOSPC):
        super().__init__(message)
        self.errno = code


def _raise_if_disk_full(exc: OSError, target: Path, left: str) -> None:
    """Re-raise a full disk or quota met while writing `target` as a DiskFullError that says so and what was left
    (`left`); any other error goes on as it was."""
    if exc.errno not in NO_SPACE or isinstance(exc, DiskFullError):
        return
    raise DiskFullError(f"{os.strerror(exc.errno).lower()} while writing {target}: free space or write it elsewhere "
                        f"({left})", exc.errno) from None


def _default_mode() -> int:
    """The mode a plain `open(path, 'w')` gives a new file (0o666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _default_mode()  # some writers (safetensors) create private 0600 files


def slug(text: tp.Optional[str], index: int) -> str:
    """A file stem for the `index`-th generated clip of prompt `text`: `03_happy_rock`, lowercase
    ASCII letters, digits and underscores only (at most 48 of them from the prompt; accents are
    dropped, `Café` -> `cafe`, other non-ASCII text, slashes, dots and control characters become _)."""
    ascii_text = unicodedata.normalize("NFKD", text or "unconditional").encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")[:48]
    return f"{index:02d}_{words or 'prompt'}"


def unused_stem(stem: PathLike, suffix: str) -> Path:
    """`stem` when `stem + suffix` does not exist yet, else the first free `stem-2`, `stem-3`, ...: a rerun into the
    same folder adds clips instead of replacing the earlier ones."""
    stem = Path(stem)
    candidate, number = stem, 1
    while Path(f"{candidate}{suffix}").exists():
        number += 1
        candidate = stem.with_name(f"{stem.name}-{number}")
    return candidate


def check_out_dir(out: PathLike, flag: str = "--out") -> tp.Callable[[], None]:
    """Make sure files can be written into the folder `out` before any work: create it (and its parents) and write
    and remove a probe file. A one-line ValueError in the words of `flag` otherwise. Returns a function that removes
    the folders this created while they are still empty (for a run that then fails)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out}: is a file, not a folder; name a folder (it is created if needed)")
    created = []
    for folder in reversed([out, *out.parents]):
        if not folder.exists():
            created.append(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = temp_beside(out / "probe")
        probe.touch()
        probe.unlink()
    except OSError as exc:
        _remove_empty(created)
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        where = "" if exc.filename in (None, str(out)) else f" ({exc.filename})"
        raise ValueError(f"{flag} {out}: cannot write there: {why}{where}; name a folder you can write to") from None
    return lambda: _remove_empty(created)


def _remove_empty(folders: tp.List[Path]) -> None:
    for folder in reversed(folders):  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return


def temp_beside(path: PathLike) -> Path:
    """A fresh, not yet existing temporary path `.NAME.XXXXXXXXXXXX.tmp` in path's folder (the writer
    creates it, so exclusive-create writers work and the file gets the usual permissions)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def fsync(path: PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: PathLike) -> tp.Iterator[Path]:
    """`with atomic_file(path) as tmp: write(tmp)`: on success tmp is synced and renamed to path; on
    any error it is removed and path keeps its old content (or stays absent). A full disk raises
    DiskFullError naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        yield tmp
        fsync(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        _raise_if_disk_full(exc, path, f"{path.name} is as it was")
        raise
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(folder: PathLike) -> tp.List[Path]:
    """Delete the temporary files (`temp_beside` names) under `folder`, at any depth, left by a process
    killed while writing; returns them. Only for a folder no other process writes into (a run folder
    whose lock this process holds)."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if TEMP_NAME.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class _Writes:
    """A binary file that remembers the OSError a write raised: torch.save reports a failed write as a
    RuntimeError ("unexpected pos ...") that no longer says why."""

    def __init__(self, f: tp.BinaryIO):
        self.f = f
        self.error: tp.Optional[OSError] = None

    def write(self, data: tp.Any) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def save_torch(obj: tp.Any, path: PathLike) -> None:
    """torch.save to a new file `path` (not atomic: see atomic_save); a failed write raises its own
    OSError (ENOSPC on a full disk), not torch's RuntimeError."""
    import torch

    with open(path, "wb") as f:
        writes = _Writes(f)
        try:
            torch.save(obj, writes)
        except RuntimeError:
            if writes.error is None:
                raise
            raise writes.error from None


def atomic_save(obj: tp.Any, path: PathLike) -> None:
    """torch.save, atomically."""
    with atomic_file(path) as tmp:
        save_torch(obj, tmp)


def atomic_write_text(text: str, path: PathLike) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def safetensors_save(state: tp.Mapping[str, tp.Any], metadata: tp.Mapping[str, str], path: PathLike) -> None:
    """safetensors' save_file into `path` (a writer for `write_all_atomically`)."""
    from safetensors.torch import save_file

    save_file(dict(state), str(path), metadata=dict(metadata))


def write_all_atomically(out: Path, writers: tp.Mapping[str, tp.Callable[[Path], None]],
                         after_first: tp.Optional[tp.Callable[[], None]] = None) -> None:
    """Write every file `out/NAME` of writers {NAME: write(path)} to a temporary file in `out`, fsync it, then
    os.replace them all into place, in the writers' order (`after_first()` runs once the first is in place). On
    any error the temporary files are removed and the existing files stay untouched. Temporary files of these
    names that a killed writer left behind are removed first."""
    for name in writers:
        for stale in out.glob(f".{name}.*.tmp"):
            if TEMP_NAME.match(stale.name):
                stale.unlink(missing_ok=True)
    temps: tp.Dict[str, Path] = {}
    try:
        for name, write in writers.items():
            temps[name] = _write_temp(out, name, write)
        for i, (name, temp) in enumerate(temps.items()):
            os.replace(temp, out / name)
            if i == 0 and after_first is not None:
                after_first()
    finally:
        for temp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def _write_temp(out: Path, name: str, write: tp.Callable[[Path], None]) -> Path:
    """A complete, fsynced temporary file `out/.NAME.XXXX.tmp` written by `write(path)`."""
    temp = temp_beside(out / name)
    try:
        write(temp)
        fsync(temp)
        os.chmod(temp, FILE_MODE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return temp


def check_new_folder(out: PathLike) -> None:
    """ValueError unless `out` is absent or an empty folder (nothing is ever written over)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not an empty folder: give a new folder (nothing is "
                         f"overwritten)")


@contextlib.contextmanager
def new_folder(out: PathLike) -> tp.Iterator[Path]:
    """`with new_folder(out) as tmp:` write a whole folder into tmp (created beside `out`); on success tmp is renamed
    to `out`, which must be absent or empty (`check_new_folder`), on any error it is removed: `out` is never left
    half-written. A full disk raises DiskFullError naming `out`."""
    out = Path(out)
    check_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        check_new_folder(out)
        if out.is_dir():
            out.rmdir()  # empty: the rename needs it gone
        os.rename(tmp, out)
    except OSError as exc:
        _raise_if_disk_full(exc, out, "nothing was left there")
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
