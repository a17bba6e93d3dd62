"""Side-car metadata (openmagnet/data/info.py): normalizers, description augmentation, sound
descriptions and the metadata check."""
import random

import pytest

from openmagnet.data import MusicInfo, augment_music_description, check_metadata, load_music_info, \
    load_sound_info, read_manifest, sound_description
from tests.data.conftest import index, write_json


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
