"""The training data pipeline: manifest indexing, side-car metadata, segment dataset, step sampling, CLI."""
import gzip
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from openmagnet.cli import main
from openmagnet.data import (AudioMeta, MusicInfo, SegmentDataset, SkipCounter, StepSampler,
                             augment_music_description, check_metadata, index_audio_dir, load_music_info,
                             load_sound_info, make_loader, read_manifest, sound_description)

FIELDS = ["path", "duration", "sample_rate", "amplitude", "weight", "info_path"]


def tone(freq, seconds, sr, channels=1, amp=0.3):
    """A sine tone [T, C] (each channel a little detuned)."""
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([amp * np.sin(2 * np.pi * freq * (1 + 0.01 * c) * t) for c in range(channels)], axis=1)


def write_json(path, data):
    path.write_text(json.dumps(data))


@pytest.fixture
def audio_dir(tmp_path):
    """Good files at several rates and channel counts, one in a sub-folder, side-cars for two of them."""
    root = tmp_path / "audio"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(root / "b_stereo44k.wav", tone(440, 1.5, 44100, channels=2), 44100)
    sf.write(root / "a_mono16k.wav", tone(220, 2.0, 16000), 16000)
    sf.write(root / "sub" / "noise.flac", 0.1 * rng.standard_normal((24000, 1)), 48000)
    chord = sum(tone(f, 0.5, 32000) for f in (261.6, 329.6, 392.0)) / 3
    sf.write(root / "sub" / "chord.wav", chord, 32000)
    (root / "notes.txt").write_text("not audio")
    write_json(root / "a_mono16k.json", {"description": "Low hum.", "genre": "Ambient", "bpm": "60"})
    write_json(root / "sub" / "chord.json", {"description": ["A C Major CHORD", "Piano Chord"]})
    return root


def index(audio_dir, tmp_path, **kw):
    return index_audio_dir(audio_dir, tmp_path / "manifest", **kw)


# --------------------------------------------------------------------------- manifest

def test_index_fields_order_and_atomic_write(audio_dir, tmp_path):
    result = index(audio_dir, tmp_path)
    assert result.path == tmp_path / "manifest" / "data.jsonl" and result.indexed == 4 and result.skipped == []
    assert os.listdir(tmp_path / "manifest") == ["data.jsonl"]  # no temporary file left behind
    rows = [json.loads(line) for line in result.path.read_text().splitlines()]
    assert all(list(row) == FIELDS for row in rows)
    root = str(audio_dir.resolve())
    assert [r["path"] for r in rows] == [f"{root}/a_mono16k.wav", f"{root}/b_stereo44k.wav",
                                         f"{root}/sub/chord.wav", f"{root}/sub/noise.flac"]
    assert [(r["duration"], r["sample_rate"]) for r in rows] == [(2.0, 16000), (1.5, 44100), (0.5, 32000),
                                                                 (0.5, 48000)]
    assert [r["info_path"] for r in rows] == [f"{root}/a_mono16k.json", None, f"{root}/sub/chord.json", None]
    assert all(r["amplitude"] is None and r["weight"] is None for r in rows)
    metas = read_manifest(tmp_path / "manifest")
    assert metas == [AudioMeta.from_json(r) for r in rows] and read_manifest(result.path) == metas
    assert index(audio_dir, tmp_path).path.read_text() == result.path.read_text()  # deterministic


def test_index_info_dir_mirror(audio_dir, tmp_path):
    info = tmp_path / "info" / "sub"
    info.mkdir(parents=True)
    write_json(info / "noise.json", {"description": "white noise"})
    metas = read_manifest(index(audio_dir, tmp_path, info_dir=tmp_path / "info").path)
    assert metas[3].info_path == str((info / "noise.json").resolve())


def test_index_skips_corrupt_files(audio_dir, tmp_path):
    (audio_dir / "broken.wav").write_bytes(np.random.default_rng(1).bytes(4000))
    with pytest.warns(UserWarning, match="skipping unreadable audio .*broken.wav"):
        result = index(audio_dir, tmp_path)
    assert result.indexed == 4 and [p for p, _ in result.skipped] == [str(audio_dir.resolve() / "broken.wav")]
    assert len(read_manifest(result.path)) == 4


def test_index_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as err:
        index_audio_dir(tmp_path / "empty", tmp_path / "m")
    assert str(err.value) == (f"no audio files in {tmp_path / 'empty'} (looked for .wav, .flac, .ogg, .mp3); "
                              "add audio files or pass other extensions")
    with pytest.raises(ValueError) as err:
        index_audio_dir(tmp_path / "missing", tmp_path / "m")
    assert str(err.value) == (f"audio folder {tmp_path / 'missing'} does not exist; "
                              "pass the folder that holds your audio files")
    (tmp_path / "empty" / "x.wav").write_bytes(b"RIFF garbage")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"none of the 1 audio files .* could be read"):
        index_audio_dir(tmp_path / "empty", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_read_manifest_errors_and_gzip(tmp_path):
    with pytest.raises(ValueError) as err:
        read_manifest(tmp_path / "nothing")
    assert str(err.value) == (f"no manifest at {tmp_path / 'nothing'}; "
                              "run `openmagnet data index AUDIO_DIR --out DIR` first")
    with pytest.raises(ValueError, match="no data.jsonl or data.jsonl.gz in .*run `openmagnet data index"):
        read_manifest(tmp_path)
    (tmp_path / "data.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="manifest .*data.jsonl is empty"):
        read_manifest(tmp_path)
    good = AudioMeta("/x/a.wav", 1.0, 16000).to_json()
    (tmp_path / "data.jsonl").write_text(good + "\n{\"path\": \"/x/b.wav\"}\n")
    with pytest.raises(ValueError) as err:
        read_manifest(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'data.jsonl'}:2: malformed manifest line (missing field(s) "
                                     "duration, sample_rate)")
    (tmp_path / "data.jsonl").unlink()
    with gzip.open(tmp_path / "data.jsonl.gz", "wt") as f:
        f.write(good + "\n" + json.dumps({"path": "rel/b.wav", "duration": 2, "sample_rate": 8000}) + "\n")
    metas = read_manifest(tmp_path)
    assert metas[0] == AudioMeta("/x/a.wav", 1.0, 16000) and metas[1].path == str(tmp_path / "rel" / "b.wav")


# --------------------------------------------------------------------------- side-car metadata

def test_music_normalizers(tmp_path):
    write_json(tmp_path / "s.json", {"title": "  Song ", "artist": "None", "key": "C Major", "bpm": "120",
                                     "genre": "Rock", "moods": "Happy, upbeat energetic", "keywords": ["Guitar", ""],
                                     "description": "  ", "name": "NAME", "instrument": "Piano", "extra": 1})
    info = load_music_info(tmp_path / "s.json")
    assert info == MusicInfo(title="Song", artist=None, key="c major", bpm=120.0, genre="rock",
                             moods=["happy", "upbeat", "energetic"], keywords=["guitar"], description=None,
                             name="name", instrument="piano")
    assert MusicInfo.from_dict({"key": "C, G", "bpm": "fast", "description": "None"}) == MusicInfo()


FULL = MusicInfo(description="Calm piano piece.", key="c major", bpm=90.0, genre="classical",
                 moods=["calm", "soft"], keywords=["piano"], instrument="piano", title="t", name="n")


def test_augmentation_keeps_every_pair():
    text = augment_music_description(FULL, random.Random(0), merge_text_p=1, drop_desc_p=0, drop_other_p=1)
    assert text.startswith("Calm piano piece. ")
    pairs = text[len("Calm piano piece. "):].split(". ")
    assert sorted(pairs) == sorted(["key: c major", "bpm: 90.0", "genre: classical", "moods: calm, soft",
                                    "keywords: piano", "instrument: piano"])
    assert text == text.strip() and not text.endswith(".")
    shuffled = {augment_music_description(FULL, random.Random(s), 1, 0, 1) for s in range(20)}
    assert len(shuffled) > 1  # the pairs are shuffled


def test_augmentation_edge_cases():
    assert augment_music_description(FULL, random.Random(0), 0.0, 1.0, 1.0) == "Calm piano piece."
    plain = MusicInfo(description="no full stop")
    assert augment_music_description(plain, random.Random(0), 0.0) == "no full stop"
    assert augment_music_description(plain, random.Random(0), 1.0, 0.0, 1.0) == "no full stop."  # no pairs
    assert augment_music_description(plain, random.Random(0), 1.0, 1.0, 1.0) is None  # nothing left
    assert augment_music_description(MusicInfo(genre="jazz"), random.Random(0), 1, 1, 1) == "genre: jazz"


def test_augmentation_statistics():
    rng = random.Random(1234)
    texts = [augment_music_description(FULL, rng, 0.5, 0.5, 0.4) for _ in range(4000)]
    frac = lambda pred: sum(map(pred, texts)) / len(texts)  # noqa: E731
    assert frac(lambda t: t is not None and t.startswith("Calm")) == pytest.approx(0.75, abs=0.03)
    assert frac(lambda t: t is not None and "genre: classical" in t) == pytest.approx(0.2, abs=0.03)
    assert frac(lambda t: t == "Calm piano piece.") == pytest.approx(0.5 + 0.25 * 0.6 ** 6, abs=0.03)


def test_sound_description_and_lookup(tmp_path):
    assert sound_description({"description": "A Dog BARKS"}, random.Random(0)) == "a dog barks"
    picks = {sound_description({"description": ["One", "TWO"]}, random.Random(s)) for s in range(20)}
    assert picks == {"one", "two"}
    with pytest.raises(ValueError, match='side-car JSON has no "description"'):
        sound_description({"description": []}, random.Random(0))
    ext = tmp_path / "ext"
    ext.mkdir()
    write_json(ext / "dog.json", {"description": "dog"})
    assert load_sound_info(tmp_path / "audio" / "dog.wav", None, ext) == {"description": "dog"}
    with pytest.raises(ValueError, match="no side-car JSON for .*dog.wav"):
        load_sound_info(tmp_path / "audio" / "dog.wav")


def test_check_metadata_messages(audio_dir, tmp_path):
    metas = read_manifest(index(audio_dir, tmp_path).path)
    with pytest.raises(ValueError) as err:
        check_metadata(metas, "sound")
    root = audio_dir.resolve()
    assert str(err.value) == (f"2 of 4 audio files lack a side-car JSON (2) or a description (0): "
                              f"{root}/b_stereo44k.wav, {root}/sub/noise.flac; write <audio>.json with a "
                              '"description" field next to each audio file (or in the external metadata folder)')
    write_json(audio_dir / "b_stereo44k.json", {"genre": "rock"})
    write_json(tmp_path / "noise.json", {"description": "noise"})
    with pytest.raises(ValueError, match=r"^1 of 4 audio files lack a side-car JSON \(0\) or a description \(1\): "):
        check_metadata(metas, "music", external_metadata_dir=tmp_path)
    write_json(audio_dir / "b_stereo44k.json", {"description": "rock"})
    check_metadata(metas, "music", external_metadata_dir=tmp_path)
    (audio_dir / "b_stereo44k.json").write_text("{bad json")
    with pytest.raises(ValueError, match=r"cannot parse side-car JSON .*b_stereo44k.json \(Expecting"):
        check_metadata(metas, "sound", external_metadata_dir=tmp_path)


# --------------------------------------------------------------------------- dataset and loader

def make_dataset(metas, **kw):
    args = dict(kind="music", segment_duration=1.0, sample_rate=32000, channels=1, seed=7)
    return SegmentDataset(metas, **{**args, **kw})


def test_item_shape_rate_and_determinism(audio_dir, tmp_path):
    metas = read_manifest(index(audio_dir, tmp_path).path)
    stereo = [m for m in metas if m.sample_rate == 44100]
    item = make_dataset(stereo)[3]
    assert item["wav"].shape == (1, 32000) and item["wav"].dtype == torch.float32
    assert item["path"] == stereo[0].path and item["description"] is None and item["skipped"] == []
    two = make_dataset(stereo, channels=2, segment_duration=2.0)[0]  # longer than the 1.5 s file: zero-padded
    assert two["wav"].shape == (2, 64000) and two["wav"][:, 48100:].abs().max() == 0
    a, b = make_dataset(metas), make_dataset(metas)
    for i in (0, 5, 123456789):
        x, y = a[i], b[i]
        assert torch.equal(x["wav"], y["wav"]) and x["path"] == y["path"]
    assert len({a[i]["path"] for i in range(20)}) > 1
    other = make_dataset(metas, seed=8)
    assert [a[i]["path"] for i in range(8)] != [other[i]["path"] for i in range(8)]  # the seed matters


def test_item_descriptions(audio_dir, tmp_path):
    metas = read_manifest(index(audio_dir, tmp_path).path)
    by_name = {os.path.basename(m.path): m for m in metas}
    music = make_dataset([by_name["a_mono16k.wav"]], merge_text_p=1.0, drop_other_p=1.0)
    assert music[0]["description"] in ("Low hum. bpm: 60.0. genre: ambient", "Low hum. genre: ambient. bpm: 60.0")
    sound = make_dataset([by_name["chord.wav"]], kind="sound", sample_rate=16000, min_segment_ratio=1.0)
    assert {sound[i]["description"] for i in range(12)} == {"a c major chord", "piano chord"}


def test_corrupt_file_is_skipped_and_counted(audio_dir, tmp_path):
    metas = read_manifest(index(audio_dir, tmp_path).path)
    bad = metas[1].path
    with open(bad, "wb") as f:
        f.write(np.random.default_rng(2).bytes(5000))  # corrupted after indexing
    dataset = make_dataset(metas[:2])
    items = [dataset[i] for i in range(12)]
    assert all(item["path"] == metas[0].path and item["wav"].shape == (1, 32000) for item in items)
    skipped = [p for item in items for p in item["skipped"]]
    assert skipped and set(skipped) == {bad}
    counter = SkipCounter()
    with pytest.warns(UserWarning, match=r"skipped unreadable audio .*b_stereo44k.wav \(1 skipped so far\)"):
        counter.update({"skipped": [bad]})
    counter.update(skipped)
    assert counter.count == 1 + len(skipped) and counter.paths == {bad}
    with pytest.raises(ValueError, match=r"sample 0: 3 tries found no readable audio \(last: cannot read"):
        make_dataset([metas[1]], max_retries=2)[0]


def test_step_sampler_indices_and_resume():
    it = iter(StepSampler(0, 3, rank=1, world_size=2))
    assert [next(it) for _ in range(9)] == [3, 4, 5, 9, 10, 11, 15, 16, 17]
    sampler = StepSampler(5, 4, rank=2, world_size=3)
    assert list(sampler.step_indices(5)) == [5 * 12 + 8 + i for i in range(4)]
    with pytest.raises(ValueError, match="rank must be in"):
        StepSampler(0, 2, rank=2, world_size=2)


def test_loader_resume_and_workers(audio_dir, tmp_path):
    metas = read_manifest(index(audio_dir, tmp_path).path)
    dataset = make_dataset(metas, segment_duration=0.5, sample_rate=16000)
    full = [batch for _, batch in zip(range(5), make_loader(dataset, 2, start_step=0), strict=False)]
    assert full[0]["wav"].shape == (2, 1, 8000) and len(full[0]["path"]) == 2 and full[0]["skipped"] == []
    resumed = [batch for _, batch in zip(range(2), make_loader(dataset, 2, start_step=3), strict=False)]
    loader = make_loader(dataset, 2, start_step=0, num_workers=2)
    workers = [batch for _, batch in zip(range(5), loader, strict=False)]
    for a, b in zip(full[3:] + full, resumed + workers, strict=True):
        assert torch.equal(a["wav"], b["wav"]) and a["path"] == b["path"] and a["description"] == b["description"]


def test_import_is_light():
    code = ("import sys, openmagnet.data; "
            "print([m for m in ('soundfile', 'julius', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- CLI

def test_cli_data_index(audio_dir, tmp_path, capsys):
    (audio_dir / "broken.wav").write_bytes(b"\0" * 100)
    out_dir = tmp_path / "manifest"
    assert main(["data", "index", str(audio_dir), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"indexed 4 files (1 skipped) -> {out_dir}/data.jsonl"
    assert out[1].startswith(f"skipped {audio_dir.resolve()}/broken.wav: ") and len(out) == 2
    assert main(["data", "index", str(tmp_path / "nope"), "--out", str(out_dir)]) == 2
    assert capsys.readouterr().err == (f"openmagnet: error: audio folder {tmp_path / 'nope'} does not exist; "
                                       "pass the folder that holds your audio files\n")
