"""Shared by the LM training tests: the tiny settings, a manifest of tones, chords and noise, and a
solver factory."""
import json

import pytest

from tests.conftest import FIXTURES
from tests.train_utils import write_audio_set
from openmagnet.train.presets import preset_config


CODEC = str(FIXTURES / "music10")  # the fixture's tiny 32 kHz EnCodec
SMALL = dict(model_scale="tiny", dim=32, num_heads=2, num_layers=2, codec=CODEC, segment_duration=1.0,
             batch_size=4, lr=3e-3, warmup=0, schedule="constant", cfg_dropout=0.0, word_dropout=0.0,
             num_workers=0, log_every=1, valid_every=1000, save_every=1000, valid_batches=1)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from openmagnet.data.manifest import index_audio_dir

    root = tmp_path_factory.mktemp("train")
    audio = write_audio_set(root / "audio")
    index_audio_dir(audio, root / "manifest")
    return root / "manifest"


def _solver(manifest, out, **kw):
    from openmagnet.train.solver import Solver

    solver_kw = {k: kw.pop(k) for k in ("continue_from", "resume", "overwrite", "valid") if k in kw}
    cfg = None if solver_kw.get("resume") else preset_config("magnet_32khz", **{**SMALL, **kw})
    return Solver(cfg, str(manifest), str(out), progress=False, **solver_kw)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
