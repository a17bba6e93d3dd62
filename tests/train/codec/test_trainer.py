"""Codec training (openmagnet/train/codec/trainer.py): overfitting one clip, exact resume, export -> strict
load, and the auto-encoder warm-up. The quantizer, losses, evaluation and commands are tested in the files
named after their modules, next to this one."""
from __future__ import annotations

import pytest
import torch

from openmagnet.train.codec.quantizer import TrainableEncodec
from openmagnet.train.codec.trainer import export_codec, read_run, train_codec
from tests.train.codec.conftest import RUN, SR, _rows, clip, tiny_cfg


def test_balanced_losses_fit_one_clip():
    """The trainer's objective (waveform L1, mel, multi-resolution STFT through the balancer, plus the
    commitment loss) overfits one clip: the mel distance falls and the waveform comes closer (SI-SDR)."""
    from openmagnet.train.codec.balancer import Balancer
    from openmagnet.train.codec.losses import MultiResolutionSTFTLoss, MultiScaleMelLoss, si_sdr

    torch.manual_seed(0)
    model = TrainableEncodec(tiny_cfg(lstm=0)).train()
    mel, stft = MultiScaleMelLoss(SR, n_mels=32), MultiResolutionSTFTLoss(SR)
    balancer = Balancer({"l1": 1.0, "mel": 1.0, "stft": 1.0, "log_stft": 1.0})
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.5, 0.9))
    wav, g, distances, sdrs = clip(), torch.Generator().manual_seed(0), [], []
    for _ in range(30):
        out = model(wav, g)
        losses = {"l1": (out.wav - wav).abs().mean(), "mel": mel(out.wav, wav), **stft(out.wav, wav)}
        opt.zero_grad()
        balancer.backward(losses, out.wav, other=out.commit)
        opt.step()
        distances.append(float(mel.distance(out.wav.detach(), wav).mean()))
        sdrs.append(float(si_sdr(out.wav.detach(), wav).mean()))
    assert sum(distances[-5:]) / 5 < 0.85 * sum(distances[:5]) / 5
    assert sum(sdrs[-5:]) / 5 > sum(sdrs[:5]) / 5 + 20.0


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


def test_resume_accepts_the_runs_own_settings_restated(manifest, tmp_path):
    """A script may rerun its whole command line with --resume: settings equal to the run's pass, a changed one
    is a one-line error naming it."""
    run = tmp_path / "run"
    train_codec(manifest, run, steps=1, save_every=1, **RUN, bypass_p=0.5, w_l1=2.0)
    train_codec(None, run, steps=2, resume=True, progress=False, bypass_p=0.5, w_l1=2.0, log_every=1)
    assert [r["step"] for r in _rows(run)] == [1, 2]
    with pytest.raises(ValueError, match=r"^resume continues the run as it was configured; bypass_p cannot change "
                                         r"\(only steps, save_every"):
        train_codec(None, run, steps=3, resume=True, progress=False, bypass_p=0.25, w_l1=2.0)


def test_tone_augmentation_mixes_seeded_pure_tones():
    from openmagnet.train.codec.evaluate import peak_frequency
    from openmagnet.train.codec.trainer import add_tones

    silent = torch.zeros(64, 1, 16000)
    mixed = add_tones(silent, 16000, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(mixed, add_tones(silent, 16000, 0.5, torch.Generator().manual_seed(0)))  # seeded
    has_tone = mixed.abs().amax(-1).squeeze(1) > 0
    assert 20 < int(has_tone.sum()) < 44  # about half of the examples
    peaks = mixed[has_tone].abs().amax(-1).squeeze(1)
    assert bool((peaks > 0.04).all() and (peaks <= 0.5).all())
    freqs = peak_frequency(mixed[has_tone, 0], 16000)
    assert bool((freqs > 50).all() and (freqs < 0.45 * 16000 + 5).all()) and float(freqs.max()) > 1760  # high ones too
    loud = torch.full((8, 1, 1000), 0.9)
    assert float(add_tones(loud, 16000, 1.0, torch.Generator().manual_seed(1)).abs().max()) <= 1.0  # clipped
    assert torch.equal(add_tones(loud, 16000, 0.0, torch.Generator().manual_seed(1)), loud)


def test_tone_range_bounds_the_tones():
    from openmagnet.train.codec.evaluate import peak_frequency
    from openmagnet.train.codec.trainer import CodecTrainConfig, add_tones

    mixed = add_tones(torch.zeros(64, 1, 16000), 16000, 1.0, torch.Generator().manual_seed(0), (880.0, 4000.0))
    freqs = peak_frequency(mixed[:, 0], 16000)
    assert bool((freqs > 875).all() and (freqs < 4005).all())
    assert float(freqs.min()) < 1300 and float(freqs.max()) > 3000  # spread over the range
    capped = peak_frequency(add_tones(torch.zeros(16, 1, 8000), 8000, 1.0, torch.Generator().manual_seed(1),
                                      (1000.0, 20000.0))[:, 0], 8000)
    assert bool((capped < 0.45 * 8000 + 5).all())  # never above 0.45 x the sample rate
    with pytest.raises(ValueError, match=r"^tone_range must be LOW HIGH in Hz with 0 < LOW <= HIGH"):
        CodecTrainConfig(tone_range=(500.0, 100.0))


def test_init_from_starts_a_new_run_from_another_codecs_weights(manifest, tmp_path, monkeypatch):
    """--init-from: a run folder, one of its checkpoints or an exported codec gives the new run its weights and
    trained codebooks exactly (no k-means, no warm-up); the run records the source; another shape is a one-line
    error."""
    from openmagnet.train.codec.trainer import CodecTrainConfig, CodecTrainer

    first = tmp_path / "first"
    args = {**RUN, "adversarial": False}
    train_codec(manifest, first, steps=2, save_every=2, **args)
    trained = torch.load(first / "checkpoints" / "step_00000002.pt", weights_only=True)["model"]
    exported = export_codec(first, tmp_path / "model")
    for i, source in enumerate((first, first / "checkpoints" / "step_00000002.pt", exported, exported.parent)):
        tcfg = CodecTrainConfig(batch_size=2, segment_seconds=0.5, init_from=str(source), quantize_after=5)
        trainer = CodecTrainer(RUN["cfg"], tcfg, str(manifest), tmp_path / f"second_{i}", progress=False)
        state = trainer.model.model.state_dict()
        assert state.keys() == trained.keys() and all(torch.equal(state[k], trained[k]) for k in trained), source
        assert read_run(tmp_path / f"second_{i}")["train"]["init_from"] == str(source)
    third = tmp_path / "third"
    with monkeypatch.context() as m:  # the trained codebooks are kept: no k-means, at the start or after warm-up
        m.setattr(CodecTrainer, "kmeans_init", lambda self: pytest.fail("k-means on an --init-from run"))
        m.setattr("openmagnet.train.codec.quantizer.kmeans",
                  lambda *a, **k: pytest.fail("k-means on an --init-from run"))
        train_codec(manifest, third, steps=1, save_every=1, init_from=str(first), quantize_after=5, **args)
    state = torch.load(third / "checkpoints" / "step_00000001.pt", weights_only=True)["model"]
    assert all(state[f"quantizer.vq.layers.{k}._codebook.inited"].item() == 1 for k in range(4))
    assert any(r.get("commit", 0) > 0 for r in _rows(third))  # quantizes from step 1: no warm-up
    with pytest.raises(ValueError, match=r"^--init-from .*step_00000002.pt: that codec has another shape than this "
                                         r"run's .*; pass the same --sample-rate/--n-filters"):
        train_codec(manifest, tmp_path / "bad", steps=1, init_from=str(first), **{**args, "cfg": tiny_cfg(lstm=0)})
    with pytest.raises(ValueError, match=r"^--init-from .*nothing: no such file or folder$"):
        train_codec(manifest, tmp_path / "bad2", steps=1, init_from=str(tmp_path / "nothing"), **args)
