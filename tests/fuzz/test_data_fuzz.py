"""Fuzzed data files (openmagnet/audio.py audio_read, data/manifest.py, data/info.py): WAV files whose header
lies (channels, rate, sizes, format), random bytes under audio extensions, manifest lines with wrong types,
missing fields, huge numbers and duplicate paths, and side-car JSON of any shape. Each either reads or raises one
ValueError / OSError on one line naming the file."""
import gzip
import json
import random
import struct

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from openmagnet.audio import audio_read
from openmagnet.data.info import (MusicInfo, augment_music_description, check_metadata, read_info_json,
                                  sound_description)
from openmagnet.data.manifest import AudioMeta, read_manifest
from tests.fuzz.conftest import budget, check_one_line, guard, out_of_time

FILE_ERRORS = (ValueError, OSError)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


# ---------------------------------------------------------------------------------------------- audio files
U16 = st.one_of(st.integers(0, 70), st.sampled_from([255, 2 ** 15, 2 ** 16 - 1]))
U32 = st.one_of(st.integers(0, 100), st.sampled_from([8000, 32000, 44100, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]))


@st.composite
def wav_files(draw):
    """A RIFF/WAVE file whose every header field may lie about the rest."""
    fmt = draw(st.sampled_from([1, 3, 6, 7, 2, 0x11, 0xFFFE, 0, 0x55]))
    channels, rate, bits = draw(U16), draw(U32), draw(st.sampled_from([0, 1, 8, 12, 16, 24, 32, 64, 2 ** 16 - 1]))
    block = draw(st.one_of(st.just((channels * bits // 8) & 0xFFFF), U16))
    byte_rate = draw(st.one_of(st.just((rate * block) & 0xFFFFFFFF), U32))
    extra = draw(st.one_of(st.just(b""), st.binary(min_size=2, max_size=24)))
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, byte_rate, block, bits) + extra
    fmt_size = draw(st.one_of(st.just(len(fmt_chunk)), st.sampled_from([0, 14, 16, 18, 40, 2 ** 31])))
    data = draw(st.binary(max_size=2048))
    data_size = draw(st.one_of(st.just(len(data)), U32))
    body = b"WAVE" + b"fmt " + struct.pack("<I", fmt_size) + fmt_chunk + b"data" + struct.pack("<I", data_size) + data
    riff_size = draw(st.one_of(st.just(len(body)), U32))
    return b"RIFF" + struct.pack("<I", riff_size) + body


def check_audio(path, seek, duration, pad):
    try:
        wav, rate = audio_read(path, seek_time=seek, duration=duration, pad=pad)
    except FILE_ERRORS as exc:
        check_one_line(exc, str(path), types=FILE_ERRORS)
        return
    assert wav.dtype == torch.float32 and wav.dim() == 2 and isinstance(rate, int) and rate > 0


reads = dict(seek=st.sampled_from([0.0, 0.001, 1.0, 1e9]), duration=st.sampled_from([-1.0, 0.0, 0.01, 1.0]),
             pad=st.booleans())


@budget(20, 10000, deadline=10)
@given(data=wav_files(), **reads)
def test_wav_headers_that_lie(folder, data, seek, duration, pad):
    out_of_time("data: audio_read wav headers")
    path = folder / "lie.wav"
    path.write_bytes(data)
    with guard("data: audio_read wav headers"):
        check_audio(path, seek, duration, pad)


@budget(10, 5000, deadline=10)
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".aiff", ""]), **reads)
def test_random_bytes_as_audio(folder, data, suffix, seek, duration, pad):
    out_of_time("data: audio_read random bytes")
    path = folder / f"noise{suffix}"
    path.write_bytes(data)
    with guard("data: audio_read random bytes"):
        check_audio(path, seek, duration, pad)


# ---------------------------------------------------------------------------------------------- manifests
field_values = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from([10 ** 400, -(10 ** 400)]),
                         st.floats(), st.text(max_size=12), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def manifest_lines(draw):
    """One line: a good entry with fields dropped or replaced, or any JSON, or no JSON at all."""
    kind = draw(st.sampled_from(["entry", "entry", "entry", "json", "text", "deep"]))
    if kind == "text":
        return draw(st.text(max_size=80)).replace("\n", " ")
    if kind == "deep":
        n = draw(st.integers(10, 100_000))
        return "[" * n + "]" * n
    if kind == "json":
        return json.dumps(draw(st.one_of(field_values, st.lists(field_values, max_size=3))))
    entry = dict(path=draw(st.sampled_from(["a.wav", "/abs/a.wav", "sub/../a.wav", "a.wav", "\x00.wav", ""])),
                 duration=2.5, sample_rate=32000, amplitude=None, weight=None, info_path=None)
    for name in draw(st.lists(st.sampled_from(sorted(entry)), max_size=3)):
        if draw(st.booleans()):
            entry.pop(name, None)
        else:
            entry[name] = draw(field_values)
    text = json.dumps(entry, allow_nan=True)
    return text.replace("2.5", draw(st.sampled_from(["2.5", "1e400", "-1e400", "NaN", "Infinity", "9" * 5000])), 1)


@budget(20, 10000, deadline=10)
@given(lines=st.lists(manifest_lines(), min_size=0, max_size=5), packing=st.sampled_from(["plain", "gz", "bad gz"]),
       duplicate=st.booleans())
def test_manifests(folder, lines, packing, duplicate):
    out_of_time("data: manifests")
    if duplicate and lines:
        lines = lines + lines  # every path twice
    text = "\n".join(lines) + "\n"
    for stale in folder.glob("data.jsonl*"):
        stale.unlink()
    if packing == "plain":
        path = folder / "data.jsonl"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        path = folder / "data.jsonl.gz"
        packed = gzip.compress(text.encode("utf-8", "surrogatepass"))
        path.write_bytes(packed if packing == "gz" else packed[:10] + bytes(b ^ 0x5A for b in packed[10:]))
    with guard("data: manifests"):
        try:
            metas = read_manifest(folder)
        except FILE_ERRORS as exc:
            check_one_line(exc, str(path), types=FILE_ERRORS)
            return
    assert metas and all(isinstance(m, AudioMeta) for m in metas)
    for meta in metas:
        assert isinstance(meta.path, str) and 0 <= meta.duration < float("inf") and meta.sample_rate >= 0


# ---------------------------------------------------------------------------------------------- side-car JSON
json_values = st.recursive(field_values, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
side_car_keys = st.sampled_from(["description", "title", "artist", "key", "bpm", "genre", "moods", "keywords", "name",
                                 "instrument", "other"])


@st.composite
def side_cars(draw):
    kind = draw(st.sampled_from(["object", "object", "object", "json", "text", "bytes", "deep", "big int"]))
    if kind == "object":
        return json.dumps(draw(st.dictionaries(side_car_keys, json_values, max_size=6))).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "text":
        return draw(st.text(max_size=100)).encode("utf-8", "surrogatepass")
    if kind == "deep":
        n = draw(st.integers(10, 100_000))
        return ('{"description": ' + "[" * n + "]" * n + "}").encode()
    if kind == "big int":
        return ('{"bpm": ' + "9" * draw(st.integers(300, 6000)) + "}").encode()
    return draw(st.binary(max_size=200))


@budget(20, 10000, deadline=10)
@given(content=side_cars(), seed=st.integers(0, 3), as_folder=st.booleans())
def test_side_car_json(folder, content, seed, as_folder):
    out_of_time("data: side-car json")
    audio = folder / "song.wav"
    path = folder / "song.json"
    if path.is_dir():
        path.rmdir()
    if as_folder and seed == 0:  # a folder where the side-car should be
        path.unlink(missing_ok=True)
        path.mkdir()
    else:
        path.write_bytes(content)
    rng = random.Random(seed)
    with guard("data: side-car json"):
        try:
            data = read_info_json(path)
        except FILE_ERRORS as exc:
            check_one_line(exc, str(path), types=FILE_ERRORS)
            return
        info = MusicInfo.from_dict(data)
        augment_music_description(info, rng, merge_text_p=1.0, drop_desc_p=0.5, drop_other_p=0.5)
        try:
            sound_description(data, rng, source=str(path))
        except ValueError as exc:
            check_one_line(exc, str(path))
        for kind in ("music", "sound"):
            try:
                check_metadata([AudioMeta(str(audio), 1.0, 32000, info_path=str(path))], kind)
            except ValueError as exc:
                check_one_line(exc)
