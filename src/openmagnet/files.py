"""Writing files so that nothing is ever half-written: everything openmagnet saves (audio, manifests,
checkpoints, exports, adapters, token caches) goes through a complete temporary file in the same
folder, flushed to disk, then renamed over the target in one step (`os.replace`); a model folder's files are
all complete before the first is renamed (`write_all_atomically`). Also the names
of generated files (`slug`), shared by the command line and the app.
"""
from __future__ import annotations

import contextlib
import os
import re
import unicodedata
import uuid
import typing as tp
from pathlib import Path

PathLike = tp.Union[str, os.PathLike]


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
    any error it is removed and path keeps its old content (or stays absent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        yield tmp
        fsync(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj: tp.Any, path: PathLike) -> None:
    """torch.save, atomically."""
    import torch

    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(text: str, path: PathLike) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def torch_save(obj: tp.Any, path: PathLike) -> None:
    """torch.save into `path` (a writer for `write_all_atomically`)."""
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)


def safetensors_save(state: tp.Mapping[str, tp.Any], metadata: tp.Mapping[str, str], path: PathLike) -> None:
    """safetensors' save_file into `path` (a writer for `write_all_atomically`)."""
    from safetensors.torch import save_file

    save_file(dict(state), str(path), metadata=dict(metadata))


def write_all_atomically(out: Path, writers: tp.Mapping[str, tp.Callable[[Path], None]]) -> None:
    """Write every file `out/NAME` of writers {NAME: write(path)} to a temporary file in `out`, fsync it, then
    os.replace them all into place, in the writers' order. On any error the temporary files are removed and
    the existing files stay untouched."""
    temps: tp.Dict[str, Path] = {}
    try:
        for name, write in writers.items():
            temps[name] = _write_temp(out, name, write)
        for name, temp in temps.items():
            os.replace(temp, out / name)
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
