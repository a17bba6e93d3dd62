"""What `openmagnet app` guards, without the web: who may log in, the warning when the page is
reachable beyond this machine, which models a visitor may load, how large an upload may be, and
names of generated files that cannot leave the output folder.

Every refusal is one sentence naming the problem and the fix: `AppError` for what a visitor sees on
the page, `ValueError` for the server's own flags (the command line prints it as one error line).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import secrets
import typing as tp
from pathlib import Path

from ..files import slug

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_UPLOAD_MB = 50.0  # defaults of --max-upload-mb / --max-upload-seconds
MAX_UPLOAD_SECONDS = 120.0
MIB = 1024 * 1024  # gradio's "mb" (max_file_size) is a mebibyte


class AppError(ValueError):
    """A problem the user can fix, told in one sentence."""


def _shown(text: str, limit: int = 60) -> str:
    """`text` for a one-line message: quoted with escapes (no newline or control character gets
    through) and cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ---------------------------------------------------------------------------------------------- logins
def parse_login(value: str, source: str = "--auth") -> tp.Tuple[str, str]:
    """(user, password) from `USER:PASSWORD` (the password may hold colons). `source` names where the
    value came from in the error, which never repeats the value (it holds a password)."""
    user, colon, password = value.partition(":")
    if not colon or not user.strip() or not password:
        raise ValueError(f"{source} is not USER:PASSWORD (a user name, a colon, a password): "
                         f"write it as alice:s3cret")
    return user.strip(), password


def read_auth_file(path: tp.Union[str, os.PathLike]) -> tp.List[tp.Tuple[str, str]]:
    """The logins of an --auth-file: one USER:PASSWORD per line; blank lines and lines starting
    with # are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"--auth-file {path}: cannot be read ({reason}): give a UTF-8 text file with "
                         f"one USER:PASSWORD per line") from None
    logins = [parse_login(line.strip(), f"--auth-file {path} line {i}") for i, line in enumerate(lines, 1)
              if line.strip() and not line.lstrip().startswith("#")]
    if not logins:
        raise ValueError(f"--auth-file {path} holds no login: write one USER:PASSWORD per line")
    return logins


def is_local(host: str) -> bool:
    """Whether `host` (the address the server listens on) is reachable from this machine only."""
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, has_auth: bool, share: bool = False) -> tp.Optional[str]:
    """The paragraph printed when the page can be reached from other machines without a login."""
    if has_auth or (is_local(host) and not share):
        return None
    where = "a public gradio.live link" if share else f"every network this machine is on (--host {host})"
    return (f"openmagnet: WARNING: the app is served to {where} with no login. Anyone who can reach it "
            f"can run generations on this machine, fill its disk under --out and load any model the "
            f"page allows. Add --auth USER:PASSWORD or --auth-file FILE, or serve on --host 127.0.0.1 "
            f"and reach it through an SSH tunnel.")


def check_share(share: bool, has_auth: bool, share_unsafe: bool) -> None:
    """--share publishes the page on the internet: refused without a login unless --share-unsafe."""
    if share and not has_auth and not share_unsafe:
        raise ValueError("--share publishes the page on a public gradio.live link and no login is set: "
                         "add --auth USER:PASSWORD or --auth-file FILE (or --share-unsafe to share it open)")


# ---------------------------------------------------------------------------------------------- policy
@dataclasses.dataclass(frozen=True)
class Policy:
    """What visitors of one app may do. The defaults are the safe ones: only the listed models, 50 MB
    and 120 s uploads."""
    model_dirs: tp.Tuple[Path, ...] = ()  # folders whose model directories may be typed in the page
    allow_any_model: bool = False  # any path or hub id (--allow-any-model)
    known_models: tp.Tuple[str, ...] = ()  # allowed besides the bundled and released ids: the server's --model
    max_upload_mb: float = MAX_UPLOAD_MB
    max_upload_seconds: float = MAX_UPLOAD_SECONDS

    def __post_init__(self):
        for flag, value, default in (("--max-upload-mb", self.max_upload_mb, MAX_UPLOAD_MB),
                                     ("--max-upload-seconds", self.max_upload_seconds, MAX_UPLOAD_SECONDS)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{flag} must be a number above 0, got {value!r}: e.g. {flag} {default:g}")
        for folder in self.model_dirs:
            if not Path(folder).expanduser().is_dir():
                raise ValueError(f"--model-dir {folder}: no such folder: create it or give the folder that "
                                 f"holds your model directories")
        object.__setattr__(self, "model_dirs", tuple(Path(d).expanduser().resolve() for d in self.model_dirs))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)


def check_model(name: str, policy: Policy, listed: tp.Iterable[str]) -> str:
    """What to load for the model typed or chosen in the page: a `listed` name or one of the policy's
    known models as is, a folder inside a --model-dir as its resolved path (symbolic links followed,
    so none leads out), anything with --allow-any-model. Raises AppError otherwise."""
    name = name.strip()
    if name in set(listed) | set(policy.known_models) or policy.allow_any_model:
        return name
    fix = ("pick a listed model" + (", or a model directory inside the server's --model-dir folders"
                                    if policy.model_dirs else "")
           + " (whoever runs the app can allow more with --model-dir DIR or --allow-any-model).")
    try:
        path = Path(name).expanduser().resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symbolic-link loop
        path = None
    for root in policy.model_dirs if path is not None else ():
        if path == root or path.is_relative_to(root):
            return str(path)
    raise AppError(f"Model {_shown(name)} is not one this server offers: {fix}")


# ---------------------------------------------------------------------------------------------- uploads
def check_upload(path: tp.Union[str, os.PathLike], policy: Policy) -> float:
    """Refuse an uploaded prompt file above the policy's size or duration; returns its duration in
    seconds, read from the file's header (nothing is decoded)."""
    import soundfile

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise AppError(f"The uploaded file ({path.name}) is gone from the server: upload it again.") from None
    if size > policy.max_upload_bytes:
        raise AppError(f"The uploaded file ({path.name}) is {size / MIB:.3g} MB, above this server's "
                       f"{policy.max_upload_mb:g} MB limit: upload a shorter or more compressed recording.")
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, ValueError):
        raise AppError(f"The uploaded file ({path.name}) is not audio that can be read: "
                       f"upload a wav, flac, ogg or mp3 file.") from None
    seconds = info.frames / info.samplerate if info.samplerate > 0 else math.inf
    if not seconds <= policy.max_upload_seconds:
        raise AppError(f"The uploaded audio ({path.name}) lasts {seconds:.1f} s, above this server's "
                       f"{policy.max_upload_seconds:g} s limit: upload an excerpt of at most "
                       f"{policy.max_upload_seconds:g} s (only its start is used).")
    return seconds


# ---------------------------------------------------------------------------------------------- outputs
def output_stem(out_dir: tp.Union[str, os.PathLike], text: tp.Optional[str], index: int, stamp: str) -> Path:
    """Where the `index`-th clip of prompt `text` goes, without suffix: `out_dir/STAMP_NN_words_xxxxxxxx`,
    where words is the prompt folded to at most 48 lowercase ASCII letters, digits and underscores and
    xxxxxxxx a random suffix (two requests never overwrite each other). Checked, after resolving, to lie
    directly in out_dir."""
    root = Path(out_dir).resolve()
    stamp = re.sub(r"[^0-9A-Za-z-]", "", stamp)[:32]
    stem = root / f"{stamp}_{slug(text, index)}_{secrets.token_hex(4)}"
    if stem.resolve().parent != root:  # cannot happen with the slug above; kept as the last guard
        raise AppError(f"The output name for {_shown(text or '')} would leave the output folder: "
                       f"rephrase the prompt.")
    return stem
