"""`openmagnet eval model`: the grid settings, batch planning (one length per batch, every clip in exactly one
shard), resumable generation with the bundled demo model, and the settings guard."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from openmagnet.evaluation.model_eval import (EvalItem, dataset_items, evaluate_model, grid_settings,
                                              model_card_table, plan_batches)

DEMO = Path(__file__).resolve().parents[2] / "src" / "openmagnet" / "assets" / "demo"


def test_grid_settings_are_audiocrafts():
    music10, music30, sound = grid_settings(32000, 10), grid_settings(32000, 30), grid_settings(16000, 10)
    assert music10 == dict(use_sampling=True, top_k=0, top_p=0.9, temperature=3.0, max_cfg_coef=10.0,
                           min_cfg_coef=1.0, decoding_steps=[20, 10, 10, 10], span_arrangement="nonoverlap")
    assert music30["decoding_steps"] == [60, 10, 10, 10]
    assert (sound["temperature"], sound["top_p"], sound["max_cfg_coef"]) == (3.5, 0.8, 20.0)


def test_batches_hold_one_length_and_shards_cover_every_clip():
    items = [EvalItem(f"c{i:02d}", Path(f"c{i:02d}.wav"), s, "x") for i, s in enumerate([10, 9.99, 4, 10, 12, 4.01])]
    batches = plan_batches(items, 50, 500, batch_size=2)
    assert [(f, [i.name for i in b]) for f, b in batches] == [
        (200, ["c02"]), (201, ["c05"]), (500, ["c00", "c01"]), (500, ["c03", "c04"])]  # ceil(9.99 x 50) = 500
    assert all(f == min(500, math.ceil(i.seconds * 50)) for f, b in batches for i in b)
    shards = [[i.name for k, (_, b) in enumerate(batches) if k % 3 == rank for i in b] for rank in range(3)]
    names = [n for shard in shards for n in shard]
    assert sorted(names) == sorted(i.name for i in items) and len(set(names)) == len(names)


def _dataset(folder: Path) -> Path:
    from openmagnet.audio import audio_write
    from openmagnet.data.manifest import index_audio_dir

    audio = folder / "audio"
    t = torch.arange(16000) / 16000
    for name, freq, seconds, text in [("a/piano", 440.0, 1.0, "a calm piano melody"),
                                      ("b/bass", 110.0, 0.6, "a deep bass line")]:
        path = audio / f"{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        wav = 0.3 * torch.sin(2 * math.pi * freq * t[:int(16000 * seconds)])
        audio_write(path, wav[None], 16000, add_suffix=False)
        path.with_suffix(".json").write_text(json.dumps({"description": text}))
    index_audio_dir(audio, folder / "manifest")
    return folder / "manifest"


def test_dataset_items_and_missing_caption(tmp_path):
    manifest = _dataset(tmp_path)
    root, items = dataset_items(manifest)
    assert root == tmp_path / "audio"
    assert [(i.name, i.description, round(i.seconds, 2)) for i in items] == [
        ("a/piano", "a calm piano melody", 1.0), ("b/bass", "a deep bass line", 0.6)]
    (tmp_path / "audio" / "b" / "bass.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bass.wav: no side-car JSON with a 'description'"):
        dataset_items(manifest)


def test_eval_model_generates_resumes_and_scores(tmp_path):
    manifest = _dataset(tmp_path)
    out = tmp_path / "eval"
    report = evaluate_model(str(DEMO), manifest, out, metrics=("chroma",), batch_size=1, device="cpu",
                            progress=False)
    files = sorted(p.relative_to(out / "generated") for p in (out / "generated").rglob("*.wav"))
    assert files == [Path("a/piano.wav"), Path("b/bass.wav")]
    assert report["generation"]["generated"] == 2 and report["n_clips"] == 2
    assert 0.0 <= report["chroma"] <= 1.0
    assert report["per_clip"][1]["generated_seconds"] == pytest.approx(0.6, abs=0.02)  # cut to the reference
    assert json.loads((out / "generation.json").read_text())["settings"]["span_arrangement"] == "nonoverlap"
    assert "| openmagnet |" in model_card_table(report) and "model card" not in model_card_table(report)
    stamp = (out / "generated" / "a" / "piano.wav").stat().st_mtime_ns
    again = evaluate_model(str(DEMO), manifest, out, metrics=("chroma",), batch_size=1, device="cpu", progress=False)
    assert again["generation"]["generated"] == 0 and again["generation"]["kept"] == 2
    assert (out / "generated" / "a" / "piano.wav").stat().st_mtime_ns == stamp
    assert again["chroma"] == report["chroma"]
    with pytest.raises(ValueError, match=r"holds clips generated with other settings \(batch_size differ\)"):
        evaluate_model(str(DEMO), manifest, out, metrics=("chroma",), batch_size=2, device="cpu", progress=False)
