"""Shared by the data tests: audio made here (tones at several rates, side-cars) and the synth skip marker."""
import json

import numpy as np
import pytest
import soundfile as sf

from openmagnet.data import index_audio_dir
from openmagnet.data.synth import find_renderer, find_soundfont


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


def _synth_missing() -> str:
    """Why rendering cannot run here, or '' when it can."""
    try:
        import pretty_midi  # noqa: F401

        find_soundfont()
        find_renderer()
    except (ImportError, ValueError) as err:
        return str(err)
    return ''


needs_synth = pytest.mark.skipif(bool(_synth_missing()), reason=f"no synth renderer: {_synth_missing()}")


SHORT = (2.0, 2.0)  # seconds per clip in the rendering tests
