"""The training solver (openmagnet/train/solver.py) end to end on a tiny model and audio made here (tones,
chords, noise): precision, the loss falling when overfitting, resumed runs equal to uninterrupted ones, export
round trips, fine-tuning and LoRA, the token cache, and the clear errors for bad input. The masks, schedules,
presets, processes and the command line are tested in the files named after their modules, next to this one."""
import json
import math

import pytest
import torch
from tests.conftest import FIXTURES
from tests.train_utils import write_audio_set

from openmagnet.train.presets import preset_config
from tests.train.conftest import CODEC, SMALL, _metrics, _solver


# ------------------------------------------------------------------- precision, device, processes
def _fake_cpu(native: bool):
    from openmagnet.hardware import CPUInfo

    if native:
        return CPUInfo("x86_64", "AVX512", bf16_native=True, int8=True, vnni=True, how="cpuinfo")
    return CPUInfo("x86_64", "AVX2", bf16_native=False, int8=True, vnni=False, how="cpuinfo")


NO_BF16 = ("this CPU has no native bf16 (x86_64 AVX2, no native bf16, int8 without VNNI): bfloat16 matrix "
           "products run 10-100x slower than float32 here")


def test_auto_precision_trains_in_bf16_on_a_native_cpu_and_bf16_is_refused_elsewhere(manifest, tmp_path,
                                                                                     monkeypatch):
    from openmagnet import hardware

    monkeypatch.setattr(hardware, "cpu_info", lambda: _fake_cpu(False))
    with pytest.raises(ValueError) as err:
        _solver(manifest, tmp_path / "refused", precision="bf16")
    assert str(err.value) == f"--precision bf16 refused: {NO_BF16}: use --precision auto or fp32"
    assert not (tmp_path / "refused").exists()  # refused before anything is written
    assert _solver(manifest, tmp_path / "fp32", max_steps=1).cfg.precision == "fp32"
    monkeypatch.setattr(hardware, "cpu_info", lambda: _fake_cpu(True))
    run = tmp_path / "bf16"
    solver = _solver(manifest, run, max_steps=1, save_every=1, valid_every=1)
    assert solver.cfg.precision == "bf16" and solver.autocast().fast_dtype == torch.bfloat16
    assert json.loads((run / "run.json").read_text())["config"]["precision"] == "bf16"  # resolved once, kept
    assert math.isfinite(solver.run()["ce"])
    monkeypatch.setattr(hardware, "cpu_info", lambda: _fake_cpu(False))  # the run moved to a slower CPU
    with pytest.raises(ValueError, match="^--precision bf16 refused: .*: resume this run where its precision"):
        _solver(manifest, run, resume=True)


def test_loss_falls_when_overfitting(manifest, tmp_path):
    solver = _solver(manifest, tmp_path / "run", max_steps=40, valid_every=40, dim=None, num_heads=None,
                     num_layers=None)  # the `tiny` scale: 128 wide, 4 layers
    last = solver.run()
    ces = [r["ce"] for r in _metrics(tmp_path / "run") if "ce" in r]
    assert len(ces) == 40
    assert ces[0] > 6.5  # about ln(2048) = 7.6 at initialisation
    assert sum(ces[-10:]) / 10 < 0.5 * ces[0]
    assert last["valid_ce"] < 0.5 * ces[0] and (tmp_path / "run" / "best.pt").is_file()
    assert all(f"valid_ppl_{k}" in last for k in range(4))


def test_resume_equals_uninterrupted(manifest, tmp_path, monkeypatch):
    from openmagnet.train.solver import Solver

    common = dict(max_steps=8, save_every=3, valid_every=4, cfg_dropout=0.5, word_dropout=0.3,
                  merge_text_p=0.5, drop_desc_p=0.3, schedule="cosine", warmup=2, ema_every=2)
    whole = _solver(manifest, tmp_path / "whole", **common)
    whole.run()
    part = _solver(manifest, tmp_path / "part", **common)
    step = Solver.train_step

    def killed_after_step_5(self, batch):
        if self.step == 5:
            raise KeyboardInterrupt  # as if killed: step 5 was logged, the last checkpoint is step 3
        return step(self, batch)

    monkeypatch.setattr(Solver, "train_step", killed_after_step_5)
    with pytest.raises(KeyboardInterrupt):
        part.run()
    monkeypatch.undo()
    resumed = _solver(manifest, tmp_path / "part", resume=True)
    assert resumed.step == 3
    resumed.run()
    a, b = _metrics(tmp_path / "whole"), _metrics(tmp_path / "part")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    timeless = lambda row: {k: v for k, v in row.items() if k != "steps_per_s"}  # noqa: E731
    for ra, rb in zip(a, b, strict=True):
        assert timeless(ra) == timeless(rb)
    for (k, va), vb in zip(whole.lm.state_dict().items(), resumed.lm.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    for k, v in whole.ema.state.items():
        assert torch.equal(v, resumed.ema.state[k]), k


def test_export_round_trip_and_fine_tune(manifest, tmp_path):
    from openmagnet import MAGNeT
    from openmagnet.cli import main

    run = tmp_path / "run"
    _solver(manifest, run, max_steps=4, save_every=2, valid_every=2).run()
    assert main(["export", str(run), "--out", str(tmp_path / "model")]) == 0
    model = MAGNeT.get_pretrained(tmp_path / "model", device="cpu")
    best = torch.load(run / "best.pt", weights_only=True)["best_state"]
    for k, v in model.lm.state_dict().items():
        assert torch.equal(v, best[k].half().float()), k
    wav = model.generate(["a calm sine tone"])
    assert wav.shape[0] == 1 and torch.isfinite(wav).all()
    # fine-tune the export: the architecture, codec and text encoder come from it
    tuned = _solver(manifest, tmp_path / "tuned", continue_from=str(tmp_path / "model"), max_steps=2,
                    model_scale="small", dim=None, num_heads=None, num_layers=None)
    assert tuned.setup.lm_cfg == model.lm.cfg
    start = {k: v.clone() for k, v in tuned.lm.state_dict().items()}
    for k, v in start.items():
        assert torch.equal(v, best[k].half().float()), k
    tuned.run()
    assert any(not torch.equal(v, tuned.lm.state_dict()[k]) for k, v in start.items())


def test_fine_tune_released_layout_with_lora(manifest, tmp_path):
    pytest.importorskip("peft")
    from openmagnet import MAGNeT
    from openmagnet.train.runs import export_run

    run = tmp_path / "lora"
    solver = _solver(manifest, run, continue_from=str(FIXTURES / "music10"), max_steps=3, save_every=3,
                     valid_every=3, lora_rank=4, ema_every=1, ema_decay=0.0)
    trainable = sum(p.numel() for p in solver.lm.parameters() if p.requires_grad)
    assert 0 < trainable < 0.2 * sum(p.numel() for p in solver.lm.parameters())
    solver.run()
    assert (run / "adapters.safetensors").is_file()
    export_run(run, tmp_path / "model")
    model = MAGNeT.get_pretrained(tmp_path / "model", device="cpu")
    base = MAGNeT.get_pretrained(FIXTURES / "music10", device="cpu")
    changed = [k for k, v in model.lm.state_dict().items() if not torch.equal(v, base.lm.state_dict()[k])]
    assert changed and all("linear" in k or "proj" in k for k in changed)


# -------------------------------------------------------------------------------- bad input
def test_bad_inputs(manifest, tmp_path):
    from openmagnet.cli import main

    with pytest.raises(ValueError, match="--continue-from nowhere/at/all: "):
        _solver(manifest, tmp_path / "x", continue_from="nowhere/at/all")
    no_desc = write_audio_set(tmp_path / "nodesc", description=False)
    from openmagnet.data.manifest import index_audio_dir

    index_audio_dir(no_desc, tmp_path / "nodesc_manifest")
    with pytest.raises(ValueError, match="description"):
        _solver(tmp_path / "nodesc_manifest", tmp_path / "y")
    assert not (tmp_path / "y").exists()  # the error comes before anything is written
    (tmp_path / "empty").mkdir()
    assert main(["data", "index", str(tmp_path / "empty"), "--out", str(tmp_path / "m")]) == 2
    # a run folder is never overwritten by a fresh run
    run = tmp_path / "run"
    _solver(manifest, run, max_steps=1, save_every=1, valid_every=1).run()
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(ValueError, match="already holds a training run: add --resume to continue it"):
        _solver(manifest, run, max_steps=1)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    with pytest.raises(ValueError, match="precision"):
        _solver(manifest, tmp_path / "z", precision="fp16")
    with pytest.raises(ValueError, match=r"--resume continues the run as it was configured; lr cannot change"):
        from openmagnet.train.solver import Solver

        Solver(None, None, str(run), resume=True, resume_overrides={"lr": 1.0}, progress=False)


def test_corrupt_audio_is_skipped_not_fatal(tmp_path):
    from openmagnet.data.manifest import index_audio_dir

    audio = write_audio_set(tmp_path / "audio")
    index_audio_dir(audio, tmp_path / "manifest")
    (audio / "noise.wav").write_bytes(b"RIFF0000WAVEjunk" * 64)  # corrupted after indexing
    solver = _solver(tmp_path / "manifest", tmp_path / "run", max_steps=3, save_every=3, valid_every=3)
    with pytest.warns(UserWarning, match="skipped unreadable audio"):
        last = solver.run()
    assert last["skipped_audio"] >= 1 and math.isfinite(last["ce"])


def test_token_cache(manifest, tmp_path):
    from openmagnet.audio import audio_read
    from openmagnet.checkpoint import resolve_codec
    from openmagnet.data.manifest import read_manifest
    from openmagnet.data.tokens import TokenSegmentDataset, build_token_cache, encode_file

    solver = _solver(manifest, tmp_path / "run", max_steps=12, valid_every=12, token_cache=True)
    cached = solver.train_set[7]
    assert isinstance(solver.train_set, TokenSegmentDataset) and cached["codes"].shape == (4, 50)
    audio = _solver(manifest, tmp_path / "audio", max_steps=1).train_set[7]
    assert (cached["path"], cached["description"]) == (audio["path"], audio["description"])  # same draw
    last = solver.run()
    rows = [r["ce"] for r in _metrics(tmp_path / "run") if "ce" in r]
    assert last["step"] == 12 and rows[-1] < rows[0]
    # whole-file tokens agree with encoding the segment alone away from its edges
    codec, _ = resolve_codec(CODEC)
    meta = read_manifest(manifest)[0]
    whole = encode_file(codec, meta.path, 32000, 1)
    assert whole.shape == (4, 150)
    seg = codec.encode(audio_read(meta.path, seek_time=1.0, duration=1.0)[0][None])[0]
    agree = (seg[:, 5:-5] == whole[:, 55:95]).float().mean()
    assert agree > 0.9
    assert build_token_cache(read_manifest(manifest), codec, tmp_path / "run" / "tokens", sample_rate=32000,
                             channels=1, progress=False) == (0, [])  # all cached already
    with pytest.raises(ValueError, match="segment_duration must be a whole number of seconds"):
        preset_config("magnet_32khz", segment_duration=7.5)


def test_sound_preset_and_samples_during_training(tmp_path):
    from openmagnet.data.manifest import index_audio_dir

    audio = write_audio_set(tmp_path / "audio", sample_rate=22050, description=False)
    for i, wav in enumerate(sorted(audio.glob("*.wav"))):  # sound side-cars: a description or a list of them
        texts = ["Dog Barking", "a dog barks twice"] if i % 2 else "Rain On A Roof"
        wav.with_suffix(".json").write_text(json.dumps({"description": texts}))
    index_audio_dir(audio, tmp_path / "manifest")
    from openmagnet.train.solver import Solver

    small = {k: v for k, v in SMALL.items() if k not in ("schedule", "warmup", "lr")}  # keep the preset's
    cfg = preset_config("audio_magnet_16khz", **{**small, "codec": str(FIXTURES / "sound10"), "max_steps": 2,
                                                 "generate_every": 2, "sample_steps": (1, 1, 1, 1)})
    solver = Solver(cfg, str(tmp_path / "manifest"), str(tmp_path / "run"), progress=False)
    assert solver.setup.text_cfg.name == "t5-large" and solver.cfg.schedule == "inverse_sqrt"
    item = solver.train_set[0]
    assert item["wav"].shape == (1, 16000) and item["description"] == item["description"].lower()
    solver.run()
    samples = sorted((tmp_path / "run" / "samples" / "step_00000002").glob("*.wav"))
    assert len(samples) == 2
    import soundfile

    info = soundfile.info(str(samples[0]))
    assert info.samplerate == 16000 and info.frames > 0


def test_lora_run_resumes_whatever_the_uninitialised_memory_holds(manifest, tmp_path, monkeypatch):
    """Resuming builds the LM on uninitialised memory before loading the checkpoint; the EMA merges
    the LoRA adapters in between, which peft refuses on NaN. Worst case: the memory is all NaN."""
    pytest.importorskip("peft")
    run = tmp_path / "lora"
    _solver(manifest, run, continue_from=str(FIXTURES / "music10"), max_steps=2, save_every=2, valid_every=2,
            lora_rank=4).run()
    to_empty = torch.nn.Module.to_empty

    def nan_filled(module, *, device, recurse=True):
        module = to_empty(module, device=device, recurse=recurse)
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                t.fill_(float("nan"))
        return module

    monkeypatch.setattr(torch.nn.Module, "to_empty", nan_filled)
    resumed = _solver(manifest, run, resume=True)
    assert resumed.step == 2
    assert all(torch.isfinite(v).all() for v in resumed.lm.state_dict().values())
