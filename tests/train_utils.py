"""Audio made in the tests for the training tests: tones, chords and noise with side-car JSON."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLIPS = [
    ("tone_a", "a calm sine tone at 440 hz", lambda t: 0.5 * np.sin(2 * np.pi * 440 * t)),
    ("chord_c", "a bright c major chord on a synth", lambda t: sum(0.2 * np.sin(2 * np.pi * f * t)
                                                                  for f in (261.6, 329.6, 392.0))),
    ("noise", "soft white noise like rain", lambda t: 0.1 * np.random.default_rng(0).standard_normal(t.shape)),
    ("pulse", "a slow pulsing bass at 60 bpm", lambda t: 0.5 * np.sin(2 * np.pi * 55 * t) * (np.sin(np.pi * t) > 0)),
]


def write_audio_set(folder: Path, seconds: float = 3.0, sample_rate: int = 32000, description: bool = True) -> Path:
    """Write the CLIPS as wav files with music side-car JSON into `folder`; returns it."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    for name, text, fn in CLIPS:
        soundfile.write(folder / f"{name}.wav", fn(t).astype(np.float32), sample_rate)
        info = {"title": name, "artist": "tests", "key": "c", "bpm": 60, "genre": "test", "moods": ["calm"],
                "name": name, "instrument": "synth"}
        if description:
            info["description"] = text
        (folder / f"{name}.json").write_text(json.dumps(info))
    return folder
