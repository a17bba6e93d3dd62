"""The segment dataset, step sampler and loader (openmagnet/data/dataset.py)."""
import os

import numpy as np
import pytest
import torch

from openmagnet.data import SegmentDataset, SkipCounter, StepSampler, make_loader, read_manifest
from tests.data.conftest import index


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
