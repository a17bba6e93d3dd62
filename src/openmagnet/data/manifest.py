"""Audio manifests: index a folder of audio files into `data.jsonl`, read it back.

The format is audiocraft's (`data/audio_dataset.py`, SPEC §4.3): one JSON object per line with exactly
the fields path, duration, sample_rate, amplitude, weight, info_path, in `data.jsonl` or
`data.jsonl.gz` inside a manifest folder. `index_audio_dir` writes the paths relative to the manifest's folder
(so that a dataset folder can move; audiocraft's own tools read them from the working directory, so run those
from the manifest's folder), and `read_manifest` reads relative and absolute ones alike, relative ones from the
manifest's folder. soundfile is imported inside `index_audio_dir`.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import typing as tp
import warnings
import zlib
from pathlib import Path

from ..config import show
from ..files import atomic_file

PathLike = tp.Union[str, os.PathLike]

AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.mp3')
MANIFEST_NAMES = ('data.jsonl', 'data.jsonl.gz')
_INDEX_HINT = "run `openmagnet data index AUDIO_DIR --out DIR` first"


@dataclasses.dataclass(frozen=True)
class AudioMeta:
    """One manifest line: an audio file and what its header says.

    path: the audio file (absolute as read_manifest returns it; relative to the manifest's folder in the file
    index_audio_dir writes); duration: seconds; sample_rate: Hz of the file;
    amplitude, weight: optional, unused by uniform sampling (kept for audiocraft compatibility);
    info_path: the side-car JSON of the file, or None.
    """
    path: str
    duration: float
    sample_rate: int
    amplitude: tp.Optional[float] = None
    weight: tp.Optional[float] = None
    info_path: tp.Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The manifest line for this file (no trailing newline)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: tp.Union[str, tp.Mapping[str, tp.Any]]) -> 'AudioMeta':
        """Parse a manifest line (a JSON string or an already decoded dict); unknown keys are ignored."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except RecursionError:
                raise ValueError("the JSON is nested too deeply") from None
        if not isinstance(data, tp.Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        missing = [name for name in ('path', 'duration', 'sample_rate') if name not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        if not isinstance(data['path'], str) or not data['path']:
            raise ValueError(f"'path' must be a non-empty string, got {show(data['path'])}")
        if not isinstance(data.get('info_path'), (str, type(None))):
            raise ValueError(f"'info_path' must be a string or null, got {show(data['info_path'])}")
        return cls(path=data['path'], duration=_number(data, 'duration'),
                   sample_rate=int(_number(data, 'sample_rate')), amplitude=_number(data, 'amplitude', True),
                   weight=_number(data, 'weight', True), info_path=data.get('info_path'))


def _number(data: tp.Mapping[str, tp.Any], name: str, nullable: bool = False) -> tp.Optional[float]:
    """data[name] as a float (None allowed when nullable); raises ValueError naming the field."""
    value = data.get(name)
    if value is None and nullable:
        return None
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int past float's range: JSON allows any number of digits
        number = math.inf
    if not 0 <= number < math.inf:
        raise ValueError(f"'{name}' must be a finite non-negative number, got {show(value)}")
    return number


@dataclasses.dataclass(frozen=True)
class IndexResult:
    """What `index_audio_dir` did: the manifest written, files indexed, and (path, reason) per skipped file."""
    path: Path
    indexed: int
    skipped: tp.List[tp.Tuple[str, str]]


def _find_audio(root: Path, extensions: tp.Sequence[str]) -> tp.List[Path]:
    """Every file under root whose suffix is in extensions (case-insensitive), sorted by path."""
    suffixes = {e.lower() if e.startswith('.') else '.' + e.lower() for e in extensions}
    return sorted((p for p in root.rglob('*') if p.suffix.lower() in suffixes and p.is_file()), key=str)


def _side_car(audio: Path, root: Path, info_dir: tp.Optional[Path]) -> tp.Optional[str]:
    """The side-car `<stem>.json` of audio: in the info_dir mirror when given, else next to the audio."""
    candidates = [audio.with_suffix('.json')]
    if info_dir is not None:
        candidates.insert(0, (info_dir / audio.relative_to(root)).with_suffix('.json'))
    return next((str(c) for c in candidates if c.is_file()), None)


def _read_header(path: Path) -> tp.Tuple[float, int]:
    """(duration s, sample rate) from the file header; ValueError with the reason if unreadable or empty."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, ValueError) as err:  # soundfile.LibsndfileError is a RuntimeError
        raise ValueError(getattr(err, 'error_string', None) or str(err)) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise ValueError("no audio samples in the file")
    return info.frames / info.samplerate, int(info.samplerate)


def _write_atomic(path: Path, lines: tp.Iterable[str]) -> None:
    """Write lines to path through a temporary file in the same folder and os.replace."""
    with atomic_file(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        for line in lines:
            f.write(line + '\n')


def index_audio_dir(audio_dir: PathLike, out_dir: PathLike, *, extensions: tp.Sequence[str] = AUDIO_EXTENSIONS,
                    info_dir: tp.Optional[PathLike] = None) -> IndexResult:
    """Index every audio file under audio_dir (recursively, sorted) into out_dir/data.jsonl.

    Files whose header cannot be read are skipped with a warning and listed in the result. The
    side-car of `song.wav` is `song.json` next to it, or at the same relative path under info_dir.
    """
    root = Path(audio_dir).resolve()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ValueError(f"audio folder {audio_dir} {what}; pass the folder that holds your audio files")
    files = _find_audio(root, extensions)
    if not files:
        raise ValueError(f"no audio files in {audio_dir} (looked for {', '.join(extensions)}); "
                         "add audio files or pass other extensions")
    info_root = Path(info_dir).resolve() if info_dir is not None else None
    metas, skipped = [], []
    for path in files:
        try:
            duration, sample_rate = _read_header(path)
        except ValueError as err:
            warnings.warn(f"skipping unreadable audio {path}: {err}", stacklevel=2)
            skipped.append((str(path), str(err)))
            continue
        metas.append(AudioMeta(str(path), duration, sample_rate, info_path=_side_car(path, root, info_root)))
    if not metas:
        first, reason = skipped[0]
        raise ValueError(f"none of the {len(files)} audio files in {audio_dir} could be read (e.g. {first}: "
                         f"{reason}); check that they are valid audio files")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST_NAMES[0]
    base = out.resolve()
    stored = (dataclasses.replace(m, path=os.path.relpath(m.path, base),
                                  info_path=m.info_path and os.path.relpath(m.info_path, base)) for m in metas)
    _write_atomic(manifest, (m.to_json() for m in stored))
    return IndexResult(manifest, len(metas), skipped)


def _manifest_file(path: Path) -> Path:
    """The manifest file for a manifest folder or file path; ValueError if there is none or two."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ValueError(f"no manifest at {path}; {_INDEX_HINT}")
    found = [path / name for name in MANIFEST_NAMES if (path / name).is_file()]
    if not found:
        raise ValueError(f"no data.jsonl or data.jsonl.gz in {path}; {_INDEX_HINT}")
    if len(found) > 1:
        raise ValueError(f"both data.jsonl and data.jsonl.gz are in {path}; delete the stale one")
    return found[0]


def _absolute(value: tp.Optional[str], base: Path) -> tp.Optional[str]:
    """value as an absolute path, relative paths being taken from base (the manifest's folder)."""
    if value is None:
        return None
    return value if os.path.isabs(value) else os.path.normpath(base.absolute() / value)  # '../audio/x.wav'


def read_manifest(path: PathLike) -> tp.List[AudioMeta]:
    """Read a manifest: a folder holding data.jsonl / data.jsonl.gz, or such a file.

    Relative paths in the manifest are taken relative to the manifest's folder. The audio files
    themselves are not checked here (the dataset skips unreadable ones).
    """
    file = _manifest_file(Path(path))
    opener = gzip.open if file.name.endswith('.gz') else open
    metas = []
    try:
        with opener(file, 'rt', encoding='utf-8') as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    meta = AudioMeta.from_json(line)
                except ValueError as err:  # json.JSONDecodeError is a ValueError
                    raise ValueError(f"{file}:{lineno}: malformed manifest line ({err}); re-create it with "
                                     "`openmagnet data index AUDIO_DIR --out DIR`") from None
                metas.append(dataclasses.replace(meta, path=_absolute(meta.path, file.parent),
                                                 info_path=_absolute(meta.info_path, file.parent)))
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as err:
        raise ValueError(f"cannot read manifest {file} ({err}); re-create it with "
                         "`openmagnet data index AUDIO_DIR --out DIR`") from None
    if not metas:
        raise ValueError(f"manifest {file} is empty; index a folder with audio files: "
                         "`openmagnet data index AUDIO_DIR --out DIR`")
    return metas
