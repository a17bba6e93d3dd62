"""The manifest (openmagnet/data/manifest.py): indexing an audio folder, reading manifests, and the
`openmagnet data index` command on top of it. Side-car metadata and the dataset are tested in
tests/data/test_info.py and tests/data/test_dataset.py."""
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from openmagnet.cli import main
from openmagnet.data import AudioMeta, index_audio_dir, read_manifest
from tests.data.conftest import index, write_json

FIELDS = ["path", "duration", "sample_rate", "amplitude", "weight", "info_path"]


# --------------------------------------------------------------------------- manifest

def test_index_fields_order_and_atomic_write(audio_dir, tmp_path):
    result = index(audio_dir, tmp_path)
    assert result.path == tmp_path / "manifest" / "data.jsonl" and result.indexed == 4 and result.skipped == []
    assert os.listdir(tmp_path / "manifest") == ["data.jsonl"]  # no temporary file left behind
    rows = [json.loads(line) for line in result.path.read_text().splitlines()]
    assert all(list(row) == FIELDS for row in rows)
    root = os.path.relpath(audio_dir.resolve(), (tmp_path / "manifest").resolve())  # relative to the manifest
    assert [r["path"] for r in rows] == [f"{root}/a_mono16k.wav", f"{root}/b_stereo44k.wav",
                                         f"{root}/sub/chord.wav", f"{root}/sub/noise.flac"]
    assert [(r["duration"], r["sample_rate"]) for r in rows] == [(2.0, 16000), (1.5, 44100), (0.5, 32000),
                                                                 (0.5, 48000)]
    assert [r["info_path"] for r in rows] == [f"{root}/a_mono16k.json", None, f"{root}/sub/chord.json", None]
    assert all(r["amplitude"] is None and r["weight"] is None for r in rows)
    metas = read_manifest(tmp_path / "manifest")
    absolute = str(audio_dir.resolve())
    assert [m.path for m in metas] == [f"{absolute}/a_mono16k.wav", f"{absolute}/b_stereo44k.wav",
                                       f"{absolute}/sub/chord.wav", f"{absolute}/sub/noise.flac"]
    assert [m.info_path for m in metas] == [f"{absolute}/a_mono16k.json", None, f"{absolute}/sub/chord.json", None]
    assert read_manifest(result.path) == metas
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


# --------------------------------------------------------------------------- dataset and loader


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


def test_index_writes_relative_paths_so_the_dataset_can_move(tmp_path):
    """data.jsonl holds paths relative to its folder (they were absolute, so moving a dataset broke it); a moved
    dataset reads back whole, and a manifest with absolute paths (older indexes, audiocraft's) still reads."""
    import shutil

    import numpy as np
    import soundfile

    from openmagnet.data.manifest import index_audio_dir, read_manifest

    root = tmp_path / "set"
    (root / "audio" / "a").mkdir(parents=True)
    soundfile.write(root / "audio" / "a" / "x.wav", np.zeros(1600, dtype="float32"), 16000)
    (root / "audio" / "a" / "x.json").write_text('{"description": "quiet"}')
    index_audio_dir(root / "audio", root / "index")
    line = json.loads((root / "index" / "data.jsonl").read_text())
    assert (line["path"], line["info_path"]) == ("../audio/a/x.wav", "../audio/a/x.json")
    moved = tmp_path / "elsewhere" / "set"
    shutil.move(str(root), str(moved))
    (meta,) = read_manifest(moved / "index")
    assert meta.path == str(moved / "audio" / "a" / "x.wav") and Path(meta.path).is_file()
    assert Path(meta.info_path).read_text() == '{"description": "quiet"}'
    absolute = dict(line, path=str(moved / "audio" / "a" / "x.wav"), info_path=None)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "data.jsonl").write_text(json.dumps(absolute) + "\n")
    assert read_manifest(tmp_path / "old")[0].path == str(moved / "audio" / "a" / "x.wav")
