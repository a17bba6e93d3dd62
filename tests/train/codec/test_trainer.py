"""Codec training (openmagnet.train.codec.trainer): the VQ training rules on toy data, the straight-through
gradient, overfitting one clip, exact resume, export -> strict load, and the evaluation metrics."""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from openmagnet.train.codec.losses import MultiScaleMelLoss, lowpass, mel_filterbank, mu_law, si_sdr
from openmagnet.codec.rvq import EuclideanCodebook
from openmagnet.train.codec.quantizer import TrainableEncodec, ema_update, init_codebook, replace_dead_codes
from openmagnet.train.codec.trainer import codec_config, export_codec, read_run, train_codec

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
# Vector quantizer training rules
# ------------------------------------------------------------------------------------------------
def test_kmeans_init_sets_inited_and_codebook_from_data():
    centers = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    g = torch.Generator().manual_seed(0)
    x = torch.cat([c + 0.1 * torch.randn(25, 2, generator=g) for c in centers])  # [100, 2]
    cb = EuclideanCodebook(2, 4)
    cb.inited.zero_()
    init_codebook(cb, x, iters=20, generator=torch.Generator().manual_seed(8))  # seed 8: one start per cluster
    assert cb.inited.item() == 1
    order = sorted(range(4), key=lambda i: tuple(cb.embed[i].round().tolist()))  # [0,0], [0,5], [5,0], [5,5]
    assert torch.allclose(cb.embed[order], centers[[0, 2, 1, 3]], atol=0.1)
    assert cb.cluster_size[order].tolist() == [25.0] * 4
    assert torch.allclose(cb.embed_avg, cb.embed * cb.cluster_size[:, None])


def test_first_training_batch_kmeans_every_codebook():
    model = TrainableEncodec(tiny_cfg(lstm=0)).train()
    books = [layer._codebook for layer in model.model.quantizer.vq.layers]
    assert all(cb.inited.item() == 0 for cb in books)
    before = [cb.embed.clone() for cb in books]
    out = model(clip().repeat(2, 1, 1), torch.Generator().manual_seed(0))
    assert out.codes.shape == (2, 4, 25) and out.wav.shape == (2, 1, 8000)
    for cb, old in zip(books, before, strict=True):
        assert cb.inited.item() == 1 and not torch.equal(cb.embed, old)
    # the first codebook now holds encoder outputs: every code lies within the data's range
    z = model.model.encoder(clip()).transpose(1, 2).reshape(-1, 16)
    lo, hi = z.min(0).values - 1e-4, z.max(0).values + 1e-4
    assert bool(((books[0].embed >= lo) & (books[0].embed <= hi)).all())


def test_ema_update_math():
    cb = EuclideanCodebook(1, 2)
    cb.decay, cb.epsilon = 0.5, 0.0
    cb.embed.copy_(torch.tensor([[0.0], [10.0]]))
    cb.embed_avg.copy_(cb.embed)
    cb.cluster_size.fill_(1.0)
    ema_update(cb, torch.tensor([[1.0], [2.0], [9.0]]), torch.tensor([0, 0, 1]))
    assert cb.cluster_size.tolist() == [1.5, 1.0]           # 0.5 * 1 + 0.5 * counts [2, 1]
    assert cb.embed_avg.flatten().tolist() == [1.5, 9.5]    # 0.5 * [0, 10] + 0.5 * sums [3, 9]
    assert cb.embed.flatten().tolist() == [1.0, 9.5]        # embed_avg / cluster_size


def test_ema_laplace_smoothing_keeps_unused_codes_finite():
    cb = EuclideanCodebook(2, 4)
    cb.cluster_size.copy_(torch.tensor([0.0, 0.0, 3.0, 1.0]))
    cb.embed_avg.zero_()
    ema_update(cb, torch.ones(4, 2), torch.tensor([2, 2, 3, 3]))
    assert torch.isfinite(cb.embed).all() and cb.embed[:2].abs().max() == 0


def test_dead_codes_are_replaced_from_batch_vectors():
    cb = EuclideanCodebook(3, 6)
    cb.cluster_size.copy_(torch.tensor([5.0, 0.001, 1.0, 0.0, 0.03, 0.01]))  # dead below 2 * (1 - 0.99) = 0.02
    old = cb.embed.clone()
    x = 100 + torch.arange(30.0).view(10, 3)
    n = replace_dead_codes(cb, x, threshold=2.0, generator=torch.Generator().manual_seed(0))
    dead = torch.tensor([False, True, False, True, False, True])
    assert n == 3
    assert torch.equal(cb.embed[~dead], old[~dead])
    assert all(any(torch.equal(row, v) for v in x) for row in cb.embed[dead])
    assert torch.allclose(cb.cluster_size[dead], torch.full((3,), 0.04))  # 2 * threshold * (1 - decay)
    assert torch.allclose(cb.embed_avg[dead], cb.embed[dead] * 0.04)
    assert replace_dead_codes(cb, x, threshold=0.0, generator=torch.Generator()) == 0


def test_straight_through_gradient_reaches_the_encoder():
    model = TrainableEncodec(tiny_cfg()).train()
    out = model(clip(), torch.Generator().manual_seed(0))
    out.wav.pow(2).mean().backward()  # reconstruction only: the path runs through the quantizer
    first = model.model.encoder.model[0].conv.conv
    assert first.weight_v.grad is not None and first.weight_v.grad.abs().sum() > 0
    model.zero_grad()
    model(clip(), torch.Generator().manual_seed(0)).commit.backward()
    assert first.weight_v.grad.abs().sum() > 0
    assert model.model.decoder.model[0].conv.conv.weight_v.grad is None  # commitment does not touch the decoder


def test_eval_mode_forward_is_inference():
    model = TrainableEncodec(tiny_cfg())
    model.train()(clip(), torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        out = model(clip())
        assert torch.equal(out.codes, model.model.encode(clip()))
        assert torch.equal(out.wav, model.model.decode(out.codes)[..., :8000])


def test_loss_falls_when_overfitting_one_clip():
    from openmagnet.train.codec.losses import MultiScaleMelLoss

    torch.manual_seed(0)
    model = TrainableEncodec(tiny_cfg(lstm=0)).train()
    mel = MultiScaleMelLoss(SR, n_mels=32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.5, 0.9))
    wav, g, losses = clip(), torch.Generator().manual_seed(0), []
    for _ in range(30):
        out = model(wav, g)
        loss = mel(out.wav, wav) + 0.1 * (out.wav - wav).abs().mean() + out.commit
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


# ------------------------------------------------------------------------------------------------
# Runs: resume, export, evaluation
# ------------------------------------------------------------------------------------------------
RUN = dict(cfg=tiny_cfg(), batch_size=2, segment_seconds=0.5, lr=1e-3, seed=3, adversarial=True,
           progress=False, log_every=1, disc_filters=4)


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]


def test_resume_equals_uninterrupted(manifest, tmp_path):
    full = tmp_path / "full"
    train_codec(manifest, full, steps=4, save_every=2, **RUN)
    part = tmp_path / "part"
    train_codec(manifest, part, steps=2, save_every=2, **RUN)
    with pytest.raises(ValueError, match="already holds a codec run"):
        train_codec(manifest, part, steps=4, save_every=2, **RUN)
    train_codec(None, part, steps=4, resume=True, progress=False)
    assert _rows(part) == _rows(full) and len(_rows(full)) == 4
    a = torch.load(full / "checkpoints" / "step_00000004.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert read_run(part)["train"]["adversarial"] is True


def test_export_loads_strictly_and_codes_identically(manifest, tmp_path):
    import yaml

    from openmagnet.checkpoint import codec_from_package
    from openmagnet.config import codec_config_from_xp

    run = tmp_path / "run"
    train_codec(manifest, run, steps=2, save_every=2, **{**RUN, "adversarial": False})
    path = export_codec(run, tmp_path / "model")
    assert path.name == "compression_state_dict.bin"
    pkg = torch.load(path, weights_only=True)
    assert pkg["exported"] is True and isinstance(pkg["version"], str)
    assert codec_config_from_xp(yaml.safe_load(pkg["xp.cfg"])) == RUN["cfg"]
    codec = codec_from_package(pkg, str(path), torch.device("cpu"))
    trained = TrainableEncodec(RUN["cfg"])
    trained.model.load_state_dict(torch.load(run / "checkpoints" / "step_00000002.pt",
                                             weights_only=True)["model"], strict=True)
    trained.eval()
    wav = clip(1.0)
    with torch.no_grad():
        codes = codec.encode(wav)
        assert torch.equal(codes, trained.model.encode(wav))
        assert torch.equal(codec.decode(codes), trained.model.decode(codes))
    assert all(layer._codebook.inited.item() == 1 for layer in codec.quantizer.vq.layers)


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


# ------------------------------------------------------------------------------------------------
# Metrics on known signals
# ------------------------------------------------------------------------------------------------
def test_si_sdr_on_known_signals():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4000, generator=g)
    noise = torch.randn(2, 4000, generator=g)
    assert (si_sdr(x, x) > 60).all()
    assert (si_sdr(noise, x) < -10).all()
    noisy = x + 0.1 * noise
    assert torch.allclose(si_sdr(noisy, x), torch.full((2,), 20.0), atol=0.5)  # 10 log10(1 / 0.01)
    assert torch.allclose(si_sdr(3.0 * noisy, x), si_sdr(noisy, x), atol=1e-4)  # scale invariant
    assert torch.allclose(si_sdr(noisy, 0.2 * x), si_sdr(noisy, x), atol=1e-4)


def test_mel_filterbank_and_distance():
    bank = mel_filterbank(SR, 1024, 64)
    assert bank.shape == (64, 513) and (bank >= 0).all()
    t = torch.arange(SR) / SR
    tone = torch.sin(2 * math.pi * 1000 * t)
    spec = torch.stft(tone, 1024, 256, window=torch.hann_window(1024), return_complex=True).abs().mean(-1)
    low = torch.sin(2 * math.pi * 200 * t)
    spec_low = torch.stft(low, 1024, 256, window=torch.hann_window(1024), return_complex=True).abs().mean(-1)
    assert int((bank @ spec).argmax()) > int((bank @ spec_low).argmax())  # higher tone, higher mel bin
    mel = MultiScaleMelLoss(SR)
    x = tone[None, None]
    assert float(mel.distance(x, x)) == 0.0 and float(mel(x, x)) == 0.0
    assert float(mel.distance(0.5 * torch.randn_like(x), x)) > 0.5
    assert float(mel.distance(lowpass(x, SR, 4000.0), x)) < 0.1  # a 1 kHz tone survives a 4 kHz low-pass
    assert float((mu_law(x) - x).abs().max()) < 0.02


# ------------------------------------------------------------------------------------------------
# Command line and import cost
# ------------------------------------------------------------------------------------------------
def test_codec_commands(manifest, tmp_path, capsys):
    from openmagnet.train.codec.command import add_codec_parser

    parser = argparse.ArgumentParser(prog="openmagnet")
    add_codec_parser(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(list(argv))
        assert args.func(args) == 0
        return capsys.readouterr().out

    run("codec", "train", "--data", str(manifest), "--out", str(tmp_path / "r"), "--sample-rate", "16000",
        "--n-filters", "4", "--dimension", "16", "--lstm", "0", "--bins", "32", "--steps", "1",
        "--batch-size", "1", "--segment-seconds", "0.5", "--save-every", "1", "--quiet")
    out = run("codec", "export", str(tmp_path / "r"), "--out", str(tmp_path / "m"))
    assert out.strip().endswith("compression_state_dict.bin")
    row = json.loads(run("codec", "eval", str(tmp_path / "m"), "--data", str(manifest), "--clips", "1",
                         "--seconds", "0.5"))
    assert row["clips"] == 1 and "si_sdr" in row


def test_codec_package_import_does_not_load_training():
    code = ("import sys, openmagnet, openmagnet.codec, openmagnet.train.codec.command; "
            "print([m for m in ('openmagnet.train.codec.trainer', 'openmagnet.train.codec.losses', 'tqdm.auto', 'yaml', "
            "'soundfile') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pooled_kmeans_init_fills_every_codebook():
    from openmagnet.train.codec.quantizer import init_quantizer

    model = TrainableEncodec(tiny_cfg(lstm=0))
    z = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    init_quantizer(model.model.quantizer, z, iters=10, generator=torch.Generator().manual_seed(0), vectors_per_step=64)
    for layer in model.model.quantizer.vq.layers:
        cb = layer._codebook
        assert cb.inited.item() == 1 and len(cb.embed.unique(dim=0)) > 32  # no codebook left on zero residuals
        assert abs(float(cb.cluster_size.sum()) - 64) < 1e-3  # counts in uses per step


def test_quantizer_bypass_feeds_the_latent_to_the_decoder():
    model = TrainableEncodec(tiny_cfg(lstm=0), bypass_p=1.0).train()
    wav = clip().expand(2, -1, -1).contiguous()
    out = model(wav, torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = model.model.decoder(model.model.encoder(wav))[..., :wav.shape[-1]]
    assert torch.allclose(out.wav, direct, atol=1e-6)  # every example bypassed: no quantization error
    assert out.codes.shape[1] == 4 and bool(model.model.quantizer.vq.layers[0]._codebook.inited)  # codebooks train
    half = TrainableEncodec(tiny_cfg(lstm=0), bypass_p=0.5).train()
    half.load_state_dict(model.state_dict())
    mixed = half(wav, torch.Generator().manual_seed(1)).wav
    assert mixed.shape == wav.shape and torch.isfinite(mixed).all()


def test_autoencoder_warm_up_then_kmeans(manifest, tmp_path):
    run = tmp_path / "warm"
    args = {**RUN, "adversarial": False, "kmeans_pool": 1.0, "kmeans_iters": 2}
    train_codec(manifest, run, steps=2, save_every=2, quantize_after=2, **args)
    state = torch.load(run / "checkpoints" / "step_00000002.pt", weights_only=True)["model"]
    assert all(state[f"quantizer.vq.layers.{k}._codebook.inited"].item() == 0 for k in range(4))  # not yet
    assert all(r.get("commit", 0) == 0 for r in _rows(run) if "loss" in r)
    train_codec(None, run, steps=3, resume=True, progress=False)  # step 3 k-means, then quantizes
    state = torch.load(run / "checkpoints" / "step_00000003.pt", weights_only=True)["model"]
    assert all(state[f"quantizer.vq.layers.{k}._codebook.inited"].item() == 1 for k in range(4))
