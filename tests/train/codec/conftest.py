"""Shared by the codec-training tests: a tiny codec config, a two-file 16 kHz manifest, one thread."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from openmagnet.train.codec.trainer import codec_config


SR = 16000


def tiny_cfg(lstm: int = 1):
    return codec_config(SR, n_filters=4, dimension=16, lstm=lstm, n_q=4, bins=64)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (a 25-step LSTM takes 1 ms on one, up to 0.4 s on two busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Two 2 s files at 16 kHz (a chord, a noisy tone) indexed into a manifest folder."""
    import soundfile as sf

    from openmagnet.data.manifest import index_audio_dir

    root = tmp_path_factory.mktemp("codec_data")
    t = np.arange(2 * SR) / SR
    rng = np.random.default_rng(0)
    (root / "audio").mkdir()
    sf.write(root / "audio" / "chord.wav", 0.2 * (np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 330 * t)), SR)
    sf.write(root / "audio" / "noisy.wav", 0.3 * np.sin(2 * np.pi * 880 * t) + 0.05 * rng.standard_normal(t.size), SR)
    index_audio_dir(root / "audio", root / "manifest")
    return root / "manifest"


def clip(seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return (0.3 * torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.sin(2 * math.pi * 1234 * t))[None, None]


# ------------------------------------------------------------------------------------------------
# Runs: resume, export, evaluation
# ------------------------------------------------------------------------------------------------
RUN = dict(cfg=tiny_cfg(), batch_size=2, segment_seconds=0.5, lr=1e-3, seed=3, adversarial=True,
           progress=False, log_every=1, disc_filters=4)


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]
