"""Side-car metadata: the `<audio>.json` next to each audio file, and the text it becomes.

Mirrors audiocraft `data/music_dataset.py` (`MusicInfo`, its normalizers, `augment_music_info_description`)
and `data/sound_dataset.py` (the sound `description`), SPEC §4.3. Only the description reaches the model.
All randomness comes from the `random.Random` passed in, never from the global RNG.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import typing as tp
from pathlib import Path

PathLike = tp.Union[str, os.PathLike]

KINDS = ('music', 'sound')
# The fields `augment_music_description` may turn into "field: value" pairs, in MusicInfo order.
MERGE_FIELDS = ('key', 'bpm', 'genre', 'moods', 'keywords', 'instrument')
_FIX = 'write <audio>.json with a "description" field next to each audio file (or in the external metadata folder)'


# --------------------------------------------------------------------------- finding and reading side-cars

def find_info_path(audio_path: PathLike, info_path: tp.Optional[PathLike] = None,
                   external_metadata_dir: tp.Optional[PathLike] = None) -> tp.Optional[Path]:
    """The side-car JSON of an audio file, or None: the manifest's info_path if it exists, else
    `<audio stem>.json` next to the audio, else `<audio stem>.json` in external_metadata_dir."""
    candidates = [Path(audio_path).with_suffix('.json')]
    if info_path is not None:
        candidates.insert(0, Path(info_path))
    if external_metadata_dir is not None:
        candidates.append(Path(external_metadata_dir) / (Path(audio_path).stem + '.json'))
    return next((c for c in candidates if c.is_file()), None)


def read_info_json(path: PathLike) -> dict:
    """The JSON object in a side-car file; ValueError naming the file if it is not valid JSON or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except json.JSONDecodeError as err:
        raise ValueError(f"cannot parse side-car JSON {path} ({err.msg} at line {err.lineno}); "
                         "fix the JSON syntax") from None
    except UnicodeDecodeError:
        raise ValueError(f"side-car JSON {path} is not UTF-8 text; save it as UTF-8") from None
    except (ValueError, RecursionError) as err:  # a number too long for int(), nesting deeper than Python's stack
        raise ValueError(f"cannot parse side-car JSON {path} ({str(err).split(':')[0]}); fix the JSON") from None
    except OSError as err:
        raise ValueError(f"cannot read side-car JSON {path} ({err.strerror or err}); check the file") from None
    if not isinstance(data, dict):
        raise ValueError(f"side-car JSON {path} holds a {type(data).__name__}, not an object; "
                         'write {"description": "..."}')
    return data


# --------------------------------------------------------------------------- music

def _string(value: tp.Any) -> tp.Optional[str]:
    """Stripped text; None for None, empty text or the text 'None'."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ('', 'None') else text


def _keyword(value: tp.Any) -> tp.Optional[str]:
    """Lowercased stripped text (a list is joined with ', '); None when empty."""
    if isinstance(value, (list, tuple)):
        value = ', '.join(str(v) for v in value)
    text = _string(value)
    return None if text is None else text.lower()


def _keyword_list(value: tp.Any) -> tp.Optional[tp.List[str]]:
    """A list of lowercased keywords from a list or a comma / space separated string; None when empty."""
    if value is None:
        return None
    items = re.split(r'[,\s]+', value) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        items = [items]
    words = [w for w in (_keyword(v) for v in items) if w is not None]
    return words or None


def _bpm(value: tp.Any) -> tp.Optional[float]:
    """The tempo as a float; None when missing or not a number."""
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float's range
        return None


def _musical_key(value: tp.Any) -> tp.Optional[str]:
    """Lowercased key ('c major'); None when missing or ambiguous (contains a comma)."""
    key = _keyword(value) if isinstance(value, str) else None
    return None if key is None or ',' in key else key


@dataclasses.dataclass(frozen=True)
class MusicInfo:
    """The music side-car fields, normalised as in SPEC §4.3 (every field may be None)."""
    title: tp.Optional[str] = None
    artist: tp.Optional[str] = None
    key: tp.Optional[str] = None
    bpm: tp.Optional[float] = None
    genre: tp.Optional[str] = None
    moods: tp.Optional[tp.List[str]] = None
    keywords: tp.Optional[tp.List[str]] = None
    description: tp.Optional[str] = None
    name: tp.Optional[str] = None
    instrument: tp.Optional[str] = None

    @classmethod
    def from_dict(cls, data: tp.Mapping[str, tp.Any]) -> 'MusicInfo':
        """Normalise a side-car dict; unknown keys are ignored, missing ones are None."""
        return cls(title=_string(data.get('title')), artist=_string(data.get('artist')),
                   key=_musical_key(data.get('key')), bpm=_bpm(data.get('bpm')),
                   genre=_keyword(data.get('genre')), moods=_keyword_list(data.get('moods')),
                   keywords=_keyword_list(data.get('keywords')), description=_string(data.get('description')),
                   name=_keyword(data.get('name')), instrument=_keyword(data.get('instrument')))


def load_music_info(path: PathLike) -> MusicInfo:
    """Read and normalise a music side-car JSON file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no side-car JSON at {path}; {_FIX}")
    return MusicInfo.from_dict(read_info_json(path))


def _pair_text(value: tp.Any) -> str:
    return ', '.join(value) if isinstance(value, list) else str(value)


def augment_music_description(info: MusicInfo, rng: random.Random, merge_text_p: float = 0.0,
                              drop_desc_p: float = 0.0, drop_other_p: float = 0.0) -> tp.Optional[str]:
    """The training text of a music item, with audiocraft's metadata augmentation (SPEC §4.3).

    With probability merge_text_p, "field: value" pairs are built from key, bpm, genre, moods, keywords
    and instrument, each KEPT with probability drop_other_p (the reference's reversed naming), shuffled
    and joined with '. '; then the description is dropped with probability drop_desc_p. The result is
    `description.rstrip('.') + '. ' + pairs`, stripped; without description, the pairs (if longer than
    one character) or None. With merge_text_p == 0 the plain description is returned.
    """
    if merge_text_p <= 0:
        return info.description
    description, meta = info.description, ''
    if rng.random() < merge_text_p:
        pairs = []
        for name in MERGE_FIELDS:
            keep = rng.random() < drop_other_p  # drawn for every field, so draws do not depend on the values
            value = getattr(info, name)
            if keep and value is not None:
                pairs.append(f'{name}: {_pair_text(value)}')
        rng.shuffle(pairs)
        meta = '. '.join(pairs)
        if rng.random() < drop_desc_p:
            description = None
    if description is None:
        return meta.strip() if len(meta) > 1 else None
    return '. '.join([description.rstrip('.'), meta]).strip() or None


# --------------------------------------------------------------------------- sound

def _sound_descriptions(data: tp.Mapping[str, tp.Any]) -> tp.List[str]:
    """The candidate descriptions of a sound side-car (one, or several to pick from); [] when none."""
    value = data.get('description')
    values = value if isinstance(value, list) else [value]
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def sound_description(data: tp.Mapping[str, tp.Any], rng: random.Random, source: str = 'side-car JSON') -> str:
    """The lowercased description of a sound item; a list of descriptions gives one chosen with rng."""
    candidates = _sound_descriptions(data)
    if not candidates:
        raise ValueError(f'{source} has no "description"; {_FIX}')
    return (candidates[0] if len(candidates) == 1 else rng.choice(candidates)).lower()


def load_sound_info(audio_path: PathLike, info_path: tp.Optional[PathLike] = None,
                    external_metadata_dir: tp.Optional[PathLike] = None) -> dict:
    """The side-car dict of a sound file, found with `find_info_path`; ValueError when there is none."""
    path = find_info_path(audio_path, info_path, external_metadata_dir)
    if path is None:
        raise ValueError(f'no side-car JSON for {audio_path}; write {Path(audio_path).with_suffix(".json")} '
                         'with a "description" field')
    return read_info_json(path)


# --------------------------------------------------------------------------- checking a whole manifest

def _has_description(data: tp.Mapping[str, tp.Any], kind: str) -> bool:
    if kind == 'music':
        return MusicInfo.from_dict(data).description is not None
    return bool(_sound_descriptions(data))


def check_metadata(metas: tp.Sequence[tp.Any], kind: str,
                   external_metadata_dir: tp.Optional[PathLike] = None) -> None:
    """Check, before training, that every file in metas (AudioMeta) has a side-car JSON with a description.

    Raises one ValueError naming how many files fail, the first three paths and the fix.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'music' or 'sound', got {kind!r}")
    no_json, no_desc, bad = [], [], []
    for meta in metas:
        path = find_info_path(meta.path, meta.info_path, external_metadata_dir)
        if path is None:
            no_json.append(meta.path)
            continue
        try:
            data = read_info_json(path)
        except ValueError as err:
            bad.append(str(err))
            continue
        if not _has_description(data, kind):
            no_desc.append(meta.path)
    if bad:
        more = f" (and {len(bad) - 1} more unparseable side-car files)" if len(bad) > 1 else ''
        raise ValueError(bad[0] + more)
    failing = no_json + no_desc
    if failing:
        examples = ', '.join(failing[:3]) + (', ...' if len(failing) > 3 else '')
        raise ValueError(f"{len(failing)} of {len(metas)} audio files lack a side-car JSON ({len(no_json)}) or a "
                         f"description ({len(no_desc)}): {examples}; {_FIX}")
