"""`openmagnet eval objective` (openmagnet/evaluation/objective.py, command.py): pairing, the report's keys,
saved embeddings, and the one-line errors for bad input. FAD with the offline CREPE embedder (real weights),
KLD with a PaSST of random weights in the released layout."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from openmagnet.audio import audio_write
from openmagnet.evaluation.crepe import Crepe
from openmagnet.evaluation.frechet import FrechetStats, frechet_distance
from openmagnet.evaluation.objective import evaluate_objective, load_captions, pair_clips
from openmagnet.evaluation.passt import PaSST
from openmagnet.evaluation.weights import CREPE_FULL, find_weights
from tests.evaluation.metrics_golden import PASST_SEEDS, randomize_

needs_crepe = pytest.mark.skipif(find_weights(CREPE_FULL) is None,
                                 reason="CREPE weights absent: run `openmagnet eval fetch-crepe`")


def _tone(freq: float, seconds: float, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (0.3 * torch.sin(2 * math.pi * freq * t)).float()[None]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A weights folder with the 20-s PaSST fabricated as the harness does (random, released layout)."""
    folder = tmp_path_factory.mktemp("weights")
    net = PaSST("20s").net
    randomize_(net, PASST_SEEDS["20s"])
    torch.save(net.state_dict(), folder / "passt-s-f128-20sec-p16-s10-ap.474-swa.pt")
    return folder


@pytest.fixture
def sets(tmp_path):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    for i, f in enumerate((220.0, 330.0, 440.0)):
        audio_write(ref / "sub" / f"clip{i}", _tone(f, 2.0), 16000, strategy="clip")
        audio_write(gen / "sub" / f"clip{i}", _tone(f * 1.06, 2.5), 16000, strategy="clip")  # longer: cut to 2 s
    audio_write(gen / "extra", _tone(500.0, 1.0), 16000, strategy="clip")  # no reference: ignored
    return gen, ref


@needs_crepe
def test_report_has_the_numbers_and_they_match_an_independent_computation(sets, weights, tmp_path):
    gen, ref = sets
    report = evaluate_objective(gen, ref, metrics=("fad", "kld"), fad_embedder="crepe", weights_dir=str(weights),
                                save_embeddings=tmp_path / "emb", bootstrap=20, progress=False)
    assert report["n_clips"] == 3 and [r["name"] for r in report["per_clip"]] == [f"sub/clip{i}" for i in range(3)]
    assert all(r["generated_seconds"] == pytest.approx(2.0) for r in report["per_clip"])  # cut to the reference
    g, r = np.load(tmp_path / "emb" / "generated.npy"), np.load(tmp_path / "emb" / "reference.npy")
    assert g.shape == r.shape == (3 * 21, 2048)  # 2 s at 0.1-s hops: 21 frames per clip
    assert report["fad"] == pytest.approx(frechet_distance(FrechetStats.of(g), FrechetStats.of(r)), rel=1e-9)
    crepe = Crepe.load()
    frames = crepe.embed(_tone(220.0 * 1.06, 2.5)[:, :32000], 16000)
    np.testing.assert_allclose(g[:21], frames.numpy(), rtol=1e-5, atol=1e-5)
    assert set(report) >= {"fad", "kld", "kld_gen_ref", "kld_both", "n_clips", "settings", "intervals"}
    assert report["kld_segments"] == 3 and report["kld_both"] == pytest.approx(report["kld"] + report["kld_gen_ref"])
    assert report["settings"]["fad_embedder"]["weights"].startswith("full.pth:88991291:")
    assert report["settings"]["kld_model"]["name"] == "passt-20s"
    low, high = report["intervals"]["kld"]["low"], report["intervals"]["kld"]["high"]
    assert low <= report["kld"] <= high


@needs_crepe
def test_the_fad_interval_is_the_same_from_per_clip_sums_and_from_the_frames(sets, monkeypatch):
    """Past CLIP_STATS_BYTES the bootstrap resamples from the frames instead of holding a D x D matrix per clip:
    the same draws give the same interval."""
    from openmagnet.evaluation.metrics import fad

    gen, ref = sets
    kept = evaluate_objective(gen, ref, metrics=("fad",), fad_embedder="crepe", bootstrap=12, progress=False)
    monkeypatch.setattr(fad, "CLIP_STATS_BYTES", 0)
    framed = evaluate_objective(gen, ref, metrics=("fad",), fad_embedder="crepe", bootstrap=12, progress=False)
    assert framed["fad"] == kept["fad"]
    for end in ("low", "high"):
        assert framed["intervals"]["fad"][end] == pytest.approx(kept["intervals"]["fad"][end], rel=1e-8, abs=1e-9)


def test_command_line_writes_json_and_csv(sets, weights, tmp_path, capsys):
    from openmagnet.evaluation.command import add_eval_parser

    parser = argparse.ArgumentParser(prog="openmagnet")
    add_eval_parser(parser.add_subparsers(dest="command"))
    gen, ref = sets
    args = parser.parse_args(["eval", "objective", "--generated", str(gen), "--reference", str(ref),
                              "--metrics", "kld", "--weights", str(weights), "--json", str(tmp_path / "r.json"),
                              "--per-clip", str(tmp_path / "r.csv"), "--bootstrap", "0", "--quiet"])
    assert args.func(args) == 0
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["n_clips"] == 3 and "kld" in out and "kld_gen_ref" in out and "per_clip" not in out
    assert (tmp_path / "r.csv").read_text().splitlines()[0].startswith("name,reference_seconds")
    assert "| KLD (ref -> gen) |" in capsys.readouterr().out


def test_bad_input_gets_one_line_errors(sets, weights, tmp_path):
    gen, ref = sets
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"^--generated .*empty: no audio files"):
        pair_clips(empty, ref)
    with pytest.raises(ValueError, match=r"^--reference .*nowhere: no such folder"):
        pair_clips(gen, tmp_path / "nowhere")
    other = tmp_path / "other"
    audio_write(other / "zzz", _tone(440.0, 1.0), 16000)
    with pytest.raises(ValueError, match=r"^no clip of .* has a reference of the same name in .*other"):
        pair_clips(gen, other)
    (ref / "sub" / "clip0.wav").write_bytes(b"RIFF not really audio")
    with pytest.raises(ValueError, match=r"cannot read .*clip0.wav as audio"):
        evaluate_objective(gen, ref, metrics=("kld",), weights_dir=str(weights), progress=False)
    import soundfile as sf

    sf.write(ref / "sub" / "clip0.wav", np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(ValueError, match=r"clip0.wav holds 0 samples; remove it or regenerate it$"):
        evaluate_objective(gen, ref, metrics=("kld",), weights_dir=str(weights), progress=False)
    bad = tmp_path / "bad_weights"
    bad.mkdir()
    torch.save(PaSST("10s").net.state_dict(), bad / "passt-s-f128-20sec-p16-s10-ap.474-swa.pt")
    with pytest.raises(ValueError, match=r"^PaSST 20s: .* does not match the model"):
        evaluate_objective(gen, ref, metrics=("kld",), weights_dir=str(bad), progress=False)
    with pytest.raises(ValueError, match=r"^unknown metric\(s\) fid; choose among fad, kld, clap, chroma$"):
        evaluate_objective(gen, ref, metrics=("fid",), progress=False)


def test_captions_from_every_source(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"a.wav": "one", "b": "two"}))
    assert load_captions(tmp_path / "c.json") == {"a": "one", "b": "two"}
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "/x/audio/a.wav", "description": "one"}) + "\n")
    assert load_captions(tmp_path / "m.jsonl") == {"a": "one"}
    side = tmp_path / "side" / "audio"
    side.mkdir(parents=True)
    (side / "clip_1.json").write_text(json.dumps({"description": "three", "bpm": 90}))
    assert load_captions(tmp_path / "side")["clip_1"] == "three"
    (tmp_path / "t.tsv").write_text("a\tone\nb\ttwo\n")
    assert load_captions(tmp_path / "t.tsv") == {"a": "one", "b": "two"}


def test_check_weights_lists_found_and_missing_files(tmp_path, monkeypatch, capsys):
    from openmagnet.evaluation.command import add_eval_parser

    monkeypatch.setenv("OPENMAGNET_EVAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "w" / "deep").mkdir(parents=True)
    (tmp_path / "w" / "deep" / "vggish-10086976.pth").write_bytes(b"x")
    parser = argparse.ArgumentParser(prog="openmagnet")
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "check-weights", "--weights", str(tmp_path / "w")])
    assert args.func(args) == 1  # the others are missing
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("found   vggish-10086976.pth") and lines[1].endswith("deep/vggish-10086976.pth")
    assert lines[3].startswith("MISSING passt-s-f128-20sec-p16-s10-ap.474-swa.pt")
    assert "get it from https://" in lines[3]


def test_chroma_cosine_of_known_pitches(tmp_path):
    """A-tones an octave apart share their pitch class (cosine 1 on every frame); A against E shares none (0);
    the report averages over the reference's frames."""
    from openmagnet.evaluation.chroma import Chroma

    chroma = Chroma()
    a4, a3, e4 = (_tone(f, 4.0, 32000) for f in (440.0, 220.0, 329.63))
    assert chroma.similarity(a4, a3, 32000) == (32.0, 32)  # ceil(4 s * 32000 / 4096) frames
    assert chroma.similarity(a4, e4, 32000) == (0.0, 32)
    assert int(chroma(a4, 32000).argmax(-1)[5]) == 9  # A, counting from C
    gen, ref = tmp_path / "g", tmp_path / "r"
    for name, g, r in (("same", a4, a3), ("other", e4, a4)):
        audio_write(gen / name, g, 32000, strategy="clip")
        audio_write(ref / name, r, 32000, strategy="clip")
    report = evaluate_objective(gen, ref, metrics=("chroma",), bootstrap=0, progress=False)
    assert report["chroma"] == pytest.approx(0.5) and sorted(r["chroma"] for r in report["per_clip"]) == [0.0, 1.0]
