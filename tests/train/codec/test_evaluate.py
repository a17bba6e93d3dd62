"""Codec evaluation (openmagnet/train/codec/evaluate.py): metrics and baselines on a tiny manifest."""
from __future__ import annotations

import math

import torch

from openmagnet.train.codec.quantizer import TrainableEncodec
from tests.train.codec.conftest import clip, tiny_cfg


def test_evaluate_codec_reports_metrics_and_baselines(manifest, tmp_path):
    from openmagnet.train.codec.evaluate import evaluate_codec

    model = TrainableEncodec(tiny_cfg())
    model.train()(clip(), torch.Generator().manual_seed(0))
    row = evaluate_codec(model.model.eval(), manifest, n_clips=3, seconds=0.5, batch_size=2)
    assert row["clips"] == 3
    for key in ("mel_distance", "si_sdr", "lowpass4k_mel_distance", "mulaw8_si_sdr", "used_3", "perplexity_0"):
        assert math.isfinite(row[key]), key
    assert row["mulaw8_si_sdr"] > 20 and row["mulaw8_mel_distance"] < row["mel_distance"]
    assert 0 < row["used_0"] <= 1 and 1 <= row["perplexity_0"] <= 64
