"""The CLAP score (openmagnet/evaluation/clap.py) against the official laion-clap 1.1.7 run through audiocraft's
CLAPTextConsistencyMetric by the peer-metrics harness, on random weights in the released layout
(fixtures/metrics_golden.pt, see metrics_golden.py); the weights are rebuilt here from the same seeded recipe
(the rebuilt state dict was checked tensor for tensor against the harness's file: all 505 equal)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from openmagnet.audio import convert_audio
from openmagnet.evaluation.clap import (WINDOW, ClapScorer, clap_from_state, load_clap, load_tokenizer,
                                        released_state_dict, window_audio)
from tests.evaluation.metrics_golden import CAPTIONS, CLIPS, clap_released_state, clip

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "metrics_golden.pt"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope="module")
def state():
    return clap_released_state()


@pytest.fixture(scope="module")
def weights(state, tmp_path_factory):
    """A --weights folder: the checkpoint in the released format (800 MB, as the harness saved it) and a
    roberta-base tokenizer folder."""
    folder = tmp_path_factory.mktemp("weights")
    torch.save({"epoch": 15, "name": "fabricated", "state_dict": {"module." + k: v for k, v in state.items()}},
               folder / "music_audioset_epoch_15_esc_90.14.pt")
    shutil.copytree(FIXTURES / "roberta-base-fabricated", folder / "roberta-base")
    return folder


@pytest.fixture(scope="module")
def scorer(weights):
    return ClapScorer.load(weights_dir=str(weights))


def test_the_released_layout(state):
    """505 tensors as in the released file, query/key/value fused back in the order they were split."""
    assert len(state) == 505 and state["text_branch.embeddings.position_ids"].shape == (1, 514)
    assert state["audio_branch.layers.2.blocks.0.attn.qkv.weight"].shape == (3 * 512, 512)
    assert sum(k.endswith("attn_mask") for k in state) == 8  # shifted blocks of stages 0-2; stage 3 is one window


def test_text_and_audio_embeddings_match_the_official_code(golden, scorer):
    names = sorted(CLIPS)
    ids, mask = scorer.tokenize([CAPTIONS[n] for n in names])
    assert torch.equal(ids, golden["clap/text/input_ids"]) and torch.equal(mask, golden["clap/text/attention_mask"])
    text = scorer.model.embed_text(ids, mask)
    torch.testing.assert_close(text, golden["clap/text/text_embeddings"], atol=1e-5, rtol=0)
    for i, name in enumerate(names):
        offset = int(golden["clap/per_clip/crop_offset"][i])  # -1: no crop (shorter than 10 s)
        offset = offset if offset >= 0 else None
        audio, used = scorer.audio_embedding(clip(name), 32000, offset)
        assert used == (offset or 0)
        torch.testing.assert_close(audio[None], golden[f"clap/per_clip/clip{i}/audio_embeddings"], atol=1e-5, rtol=0)
        assert scorer.score(clip(name), 32000, CAPTIONS[name], offset) == pytest.approx(
            float(golden["clap/per_clip/cosine"][i]), abs=1e-5)
    window, _ = window_audio(convert_audio(clip(names[0])[None], 32000, 48000, 1)[0, 0])
    features = scorer.model.audio(scorer.model.front(window[None])).pooler_output
    torch.testing.assert_close(features, golden["clap/per_clip/clip0/htsat_embedding"], atol=1e-4, rtol=0)


def test_audiocrafts_batch_padding_is_reproducible(golden, scorer):
    """audiocraft embeds a batch padded to its longest clip (sizes ignored): the same numbers from our parts."""
    names = sorted(CLIPS)
    wavs = [clip(n).mean(0, keepdim=True) for n in names]
    longest = max(w.shape[-1] for w in wavs)
    batch = torch.stack([F.pad(w, (0, longest - w.shape[-1])) for w in wavs])
    mono = convert_audio(batch, 32000, 48000, 1)[:, 0]
    offsets = golden["clap/batched/crop_offset"]
    windows = torch.stack([window_audio(m, int(o) if o >= 0 else None)[0] for m, o in zip(mono, offsets, strict=True)])
    audio = scorer.model.embed_audio(windows)
    torch.testing.assert_close(audio, golden["clap/batched/audio_embeddings"], atol=1e-5, rtol=0)
    text = scorer.model.embed_text(*scorer.tokenize([CAPTIONS[n] for n in names]))
    cosine = F.cosine_similarity(audio, text, dim=1, eps=1e-8)
    torch.testing.assert_close(cosine, golden["clap/batched/cosine"], atol=1e-5, rtol=0)
    assert float(cosine.mean()) == pytest.approx(float(golden["clap/batched/compute"]), abs=1e-5)


def test_window_audio_crops_and_repeat_pads():
    long = torch.arange(WINDOW + 10, dtype=torch.float32)
    window, offset = window_audio(long, 7)
    assert offset == 7 and torch.equal(window, long[7:7 + WINDOW])
    a, oa = window_audio(long, rng=__import__("numpy").random.default_rng(3))
    b, ob = window_audio(long, rng=__import__("numpy").random.default_rng(3))
    assert oa == ob and torch.equal(a, b) and 0 <= oa <= 10  # a seeded crop is reproducible
    short = torch.arange(1, 200001, dtype=torch.float32)  # 2 whole copies, then zeros
    window, _ = window_audio(short)
    assert torch.equal(window[:400000], short.repeat(2)) and (window[400000:] == 0).all()
    with pytest.raises(ValueError, match="outside 0..10"):
        window_audio(long, 11)
    with pytest.raises(ValueError, match="0 samples"):
        window_audio(torch.zeros(0))


def _prefixed(state):
    return {"state_dict": {"module." + k: v for k, v in state.items()}}


def test_strict_loading_names_the_problem(state, tmp_path):
    broken = dict(state)
    del broken["audio_branch.layers.0.blocks.0.attn.qkv.weight"]
    missing = r"\(missing audio_branch\.layers\.0\.blocks\.0\.attn\.qkv\.weight\)"
    with pytest.raises(ValueError, match=r"^CLAP: .* " + missing):
        clap_from_state(_prefixed(broken))
    extra = dict(state, **{"audio_branch.fusion_model.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected audio_branch\.fusion_model\.weight"):
        clap_from_state(_prefixed(extra))
    mask = dict(state, **{"audio_branch.layers.0.blocks.1.attn_mask": torch.zeros(64, 64, 64)})
    with pytest.raises(ValueError, match=r"holds a audio_branch\.layers\.0\.blocks\.1\.attn_mask unlike"):
        clap_from_state(_prefixed(mask))
    wrong = dict(state, **{"audio_projection.0.weight": torch.zeros(512, 768)})
    with pytest.raises(ValueError, match=r"does not match the model: audio_projection\.0\.weight has shape "
                                         r"\[512, 768\], expected \[512, 1024\]; is it the right file\?$"):
        clap_from_state(_prefixed(wrong))
    path = tmp_path / "music_audioset_epoch_15_esc_90.14.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"^CLAP: .* is not a readable weights file"):
        load_clap(str(path))


def test_round_trip_to_the_released_layout(state):
    model = clap_from_state(_prefixed(state))
    again = released_state_dict(model)
    assert set(again) == set(state)
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_tokenizer_from_the_hub_cache_or_a_one_line_error(tmp_path):
    snapshot = tmp_path / "hub" / "models--roberta-base" / "snapshots" / ("0" * 40)
    shutil.copytree(FIXTURES / "roberta-base-fabricated", snapshot)
    (tmp_path / "hub" / "models--roberta-base" / "refs").mkdir()
    (tmp_path / "hub" / "models--roberta-base" / "refs" / "main").write_text("0" * 40)
    tokenizer = load_tokenizer(None, cache_dir=str(tmp_path / "hub"))
    assert tokenizer(["white noise burst"])["input_ids"][0][0] == 0  # <s>
    with pytest.raises(FileNotFoundError, match=r"^CLAP: the roberta-base tokenizer .*`hf download roberta-base"):
        load_tokenizer(None, cache_dir=str(tmp_path / "empty"))


def test_eval_objective_clap_score(golden, weights, tmp_path):
    """`eval objective --metrics clap`: the mean of the per-clip cosines of the official code (clips under 10 s,
    so no random crop), one row per clip."""
    from openmagnet.evaluation.objective import evaluate_objective
    from tests.evaluation.metrics_golden import write_clips

    write_clips(tmp_path / "gen")
    write_clips(tmp_path / "ref")
    report = evaluate_objective(tmp_path / "gen", tmp_path / "ref", metrics=("clap",), weights_dir=str(weights),
                                captions={Path(n).stem: c for n, c in CAPTIONS.items()}, progress=False)
    assert report["n_clips"] == 3
    assert report["clap"] == pytest.approx(float(golden["clap/per_clip/cosine"].double().mean()), abs=1e-5)
    assert report["settings"]["clap_model"]["weights"].startswith("music_audioset_epoch_15_esc_90.14.pt:")
    with pytest.raises(ValueError, match="needs the captions"):
        evaluate_objective(tmp_path / "gen", tmp_path / "ref", metrics=("clap",), weights_dir=str(weights))
