"""The training solver end to end on a tiny model and audio made here (tones, chords, noise):
the mask oracles of SPEC §4.1, the schedules and the EMA, the loss falling when overfitting,
resumed runs equal to uninterrupted ones, export round trips, fine-tuning and LoRA, and the
clear errors for bad input."""
import json
import math
import shutil

import pytest
import torch
from conftest import FIXTURES
from train_utils import write_audio_set

from openmagnet.train.masking import cosine_mask_rate, masked_inputs, span_count_lut, span_mask
from openmagnet.train.optim import EMA, lr_factor
from openmagnet.train.presets import parse_override, preset_config

CODEC = str(FIXTURES / "music10")  # the fixture's tiny 32 kHz EnCodec
SMALL = dict(model_scale="tiny", dim=32, num_heads=2, num_layers=2, codec=CODEC, segment_duration=1.0,
             batch_size=4, lr=3e-3, warmup=0, schedule="constant", cfg_dropout=0.0, word_dropout=0.0,
             num_workers=0, log_every=1, valid_every=1000, save_every=1000, valid_batches=1)


# ------------------------------------------------------------------------------------- masking
@pytest.mark.parametrize("seq_len, rates", [
    (500, {1: 2, 5: 9, 10: 18, 25: 46, 50: 103, 75: 185, 90: 268, 99: 392, 100: 498}),
    (1500, {50: 310, 100: 1498}),
])
def test_span_count_lut_oracles(seq_len, rates):
    lut = span_count_lut(seq_len, 3)
    assert {m: lut[m] for m in rates} == rates
    assert len(lut) == 101 and list(lut) == sorted(lut)


def test_span_mask_counts_and_spans():
    g = torch.Generator().manual_seed(0)
    rates = torch.tensor([1.0, 0.5, 0.01, 0.0], dtype=torch.float64)
    mask = span_mask(rates, 500, 3, g)
    assert mask.shape == (4, 500) and mask.dtype == torch.bool
    assert mask[0].sum() >= 490  # 498 spans of 3 frames cover (almost) everything
    assert mask[3].sum() >= 1    # at least one span even at rate 0
    for row in mask:  # every masked run is at least one whole span (or cut at the end)
        runs, length = [], 0
        for v in row.tolist() + [False]:
            if v:
                length += 1
            elif length:
                runs.append(length)
                length = 0
        assert all(r >= 3 for r in runs[:-1]) or len(runs) <= 1
    expected = 1 - math.comb(500 - 3, 103) / math.comb(500, 103)  # the LUT's own criterion at 50%
    assert expected >= 0.5
    frac = torch.stack([span_mask(torch.tensor([0.5], dtype=torch.float64), 500, 3, g) for _ in range(200)])
    assert abs(frac.float().mean().item() - expected) < 0.01


def test_cosine_rates_and_inputs():
    rates = cosine_mask_rate(10000, torch.Generator().manual_seed(1))
    assert rates.min() >= 0 and rates.max() <= 1
    assert abs(rates.mean().item() - 2 / math.pi) < 0.01  # E[cos(pi t / 2)] = 2 / pi
    codes = torch.randint(0, 2048, (2, 4, 10))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 3:6] = True
    x = masked_inputs(codes, 1, mask, 2048)
    assert torch.equal(x[:, 0], codes[:, 0])
    assert (x[:, 1, 3:6] == 2048).all() and torch.equal(x[:, 1, :3], codes[:, 1, :3])
    assert (x[:, 2:] == 2048).all()


# -------------------------------------------------------------------------------- optimisation
def test_schedules():
    assert lr_factor(0, "cosine", 10, 110) == 0.0
    assert lr_factor(5, "cosine", 10, 110) == 0.5
    assert lr_factor(10, "cosine", 10, 110) == 1.0
    assert lr_factor(60, "cosine", 10, 110) == pytest.approx(0.5)
    assert lr_factor(110, "cosine", 10, 110) == pytest.approx(0.0)
    assert lr_factor(110, "cosine", 10, 110, lr_min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(40, "inverse_sqrt", 10, 0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule 'linear': use one of cosine, inverse_sqrt, constant"):
        lr_factor(0, "linear", 0, 1)


def test_ema_is_unbiased():
    ema = EMA({"w": torch.zeros(2)}, decay=0.5)
    ema.update({"w": torch.ones(2)})   # the first update copies
    assert torch.equal(ema.state["w"], torch.ones(2))
    ema.update({"w": torch.full((2,), 4.0)})  # count 1.5: weight 2/3 on the new value
    assert torch.allclose(ema.state["w"], torch.full((2,), 3.0))


def test_ema_stays_on_the_weights_device_and_updates_in_place():
    w = torch.randn(3, 4).half()
    ema = EMA({"w": w, "steps": torch.tensor(3)}, decay=0.9)
    assert set(ema.state) == {"w"} and ema.state["w"].dtype == torch.float32
    average = ema.state["w"]
    ema.update({"w": w, "steps": torch.tensor(4)})
    assert ema.state["w"] is average and torch.equal(average, w.float())  # in place; the first update copies
    on_meta = EMA({"w": torch.empty(5, device="meta")}, decay=0.9)  # a non-CPU device: never copied to the host
    on_meta.update({"w": torch.empty(5, device="meta")})
    assert on_meta.state["w"].device.type == "meta"


# ------------------------------------------------------------------- precision, device, processes
def _fake_cpu(native: bool):
    from openmagnet.hardware import CPUInfo

    if native:
        return CPUInfo("x86_64", "AVX512", bf16_native=True, int8=True, vnni=True, how="cpuinfo")
    return CPUInfo("x86_64", "AVX2", bf16_native=False, int8=True, vnni=False, how="cpuinfo")


NO_BF16 = ("this CPU has no native bf16 (x86_64 AVX2, no native bf16, int8 without VNNI): bfloat16 matrix "
           "products run 10-100x slower than float32 here")


def test_precision_resolution(monkeypatch):
    from openmagnet import hardware
    from openmagnet.train.solver import resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    for native, auto in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(hardware, "cpu_info", lambda native=native: _fake_cpu(native))
        assert resolve_precision("auto", cpu) == auto
        assert resolve_precision("fp32", cpu) == "fp32"
        assert resolve_precision("auto", cuda) == "fp16"  # as released, whatever the CPU
        assert resolve_precision("bf16", cuda) == "bf16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    monkeypatch.setattr(hardware, "cpu_info", lambda: _fake_cpu(True))
    assert resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(hardware, "cpu_info", lambda: _fake_cpu(False))
    with pytest.raises(ValueError) as err:
        resolve_precision("bf16", cpu)
    assert str(err.value) == f"--precision bf16 refused: {NO_BF16}: use --precision auto or fp32"
    with pytest.raises(ValueError) as err:
        resolve_precision("bf16", cpu, resume=True)
    assert str(err.value) == (f"--precision bf16 refused: {NO_BF16}: resume this run where its precision is "
                              f"fast (a CPU with native bf16, or CUDA)")
    with pytest.raises(ValueError, match=r"^--precision fp16 refused: float16 matrix products run at about 1 "
                                         r"GFLOP/s on CPU \(.*\): use --precision auto or fp32 \(fp16 is for CUDA\)$"):
        resolve_precision("fp16", cpu)


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


def test_device_resolution(monkeypatch):
    from openmagnet.train.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # the index asked for, not the current GPU
    assert resolve_device("cuda") == resolve_device(None) == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^--device cuda:2: only 2 GPU\(s\) visible: use cuda:0 to cuda:1$"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match="^--device gpu: not a device name: use cpu, cuda, cuda:N or mps$"):
        resolve_device("gpu")
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: the GPU of LOCAL_RANK
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"^--device cuda:0: under torchrun each process trains on the GPU of "
                                         r"its LOCAL_RANK: pass --device cuda \(choose the GPUs with "):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="^--device cuda: this PyTorch sees no CUDA GPU: use --device cpu$"):
        resolve_device("cuda")


def test_process_group_gets_the_device_and_a_long_timeout(manifest, tmp_path, monkeypatch):
    import datetime

    import torch.distributed as dist

    from openmagnet.train import distributed
    from openmagnet.train import solver as solver_module

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.init(torch.device("cuda", 1), 30.0) == (0, 1)
    assert calls == [("set_device", torch.device("cuda", 1)),
                     ("init", dict(backend="nccl", timeout=datetime.timedelta(minutes=30)))]
    calls.clear()
    distributed.init(torch.device("cpu"))
    assert calls == [("init", dict(backend="gloo", timeout=datetime.timedelta(hours=2)))]  # not NCCL's 10 min
    # the solver passes its configured timeout
    monkeypatch.delenv("WORLD_SIZE")
    seen = []
    monkeypatch.setattr(solver_module.dist_utils, "init", lambda device, minutes: seen.append((device, minutes))
                        or (0, 1))
    _solver(manifest, tmp_path / "run", max_steps=1, dist_timeout_minutes=300)
    assert seen == [(torch.device("cpu"), 300)]


def test_fsdp_imports_fall_back_for_older_torch(monkeypatch):
    import torch.distributed.fsdp
    import torch.distributed.tensor
    from torch.distributed._composable.fsdp import fully_shard as composable_fully_shard

    from openmagnet.train.distributed import dtensor_api, fully_shard_fn

    monkeypatch.delattr(torch.distributed.fsdp, "fully_shard")  # torch 2.4-2.5: only under _composable
    assert fully_shard_fn() is composable_fully_shard
    import torch.distributed._tensor as old_dtensor

    monkeypatch.delattr(torch.distributed.tensor, "DTensor")  # torch 2.4: only under _tensor
    assert dtensor_api() == (old_dtensor.DTensor, old_dtensor.distribute_tensor)


def test_fsdp_with_lora_is_refused():
    with pytest.raises(ValueError) as err:
        preset_config("magnet_32khz", fsdp=True, lora_rank=8)
    assert str(err.value) == ("fsdp and lora_rank cannot be combined (LoRA under FSDP is not supported): train "
                              "the adapters with DDP (drop --fsdp)")


def test_overrides():
    assert parse_override("lr=0.5") == ("lr", 0.5)
    assert parse_override("betas=0.9,0.99") == ("betas", (0.9, 0.99))
    assert parse_override("fsdp=true") == ("fsdp", True)
    with pytest.raises(ValueError, match="--set nope: unknown training setting"):
        parse_override("nope=1")
    with pytest.raises(ValueError, match=r"--set lr=fast: expected a float"):
        parse_override("lr=fast")


# --------------------------------------------------------------------------------- end to end
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


def test_cli_train_and_resume(manifest, tmp_path):
    from openmagnet.cli import main

    args = ["train", "--data", str(manifest), "--out", str(tmp_path / "run"), "--model-scale", "tiny",
            "--codec", CODEC, "--segment-duration", "1", "--batch-size", "2", "--max-steps", "2",
            "--num-workers", "0", "--quiet", "--set", "dim=32", "--set", "num_heads=2", "--set", "num_layers=1",
            "--set", "save_every=1", "--set", "valid_every=2", "--set", "valid_batches=1"]
    assert main(args) == 0
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "3", "--quiet"]) == 0
    steps = [r["step"] for r in _metrics(tmp_path / "run") if "ce" in r]
    assert steps[-1] == 3
    shutil.rmtree(tmp_path / "run")


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_processes_stay_in_sync(manifest, tmp_path, fsdp):
    import os
    import subprocess
    import sys

    # ema_decay 0: the EMA must equal the final weights (under FSDP: the gathered per-rank shard averages);
    # DDP tokenises the cache in two shares; FSDP generates samples at step 2, before the first validation
    settings = {**SMALL, "max_steps": 3, "save_every": 3, "valid_every": 3, "cfg_dropout": 0.5, "fsdp": fsdp,
                "ema_every": 1, "ema_decay": 0.0, "token_cache": not fsdp, "generate_every": 2 if fsdp else 0,
                "sample_steps": (1, 1, 1, 1)}
    worker = FIXTURES.parent / "ddp_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
           str(manifest), str(tmp_path), json.dumps(settings)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == 2 and r1["world"] == 2
    if not fsdp:
        for k, v in r0["final"].items():
            assert torch.equal(v, r1["final"][k]), k
    assert any(not torch.equal(v, r0["initial"][k]) for k, v in r0["final"].items())  # it trained
    rows = _metrics(tmp_path)
    assert [r["step"] for r in rows if "ce" in r] == [1, 2, 3]  # logged once, by rank 0
    assert (tmp_path / "checkpoints" / "step_00000003.pt").is_file()
    assert r1["ema"] is None and r0["ema"].keys() == r0["final"].keys()
    for k, v in r0["final"].items():
        assert torch.equal(r0["ema"][k], v), k
        assert torch.equal(r0["resumed_ema"][k], v), k  # the sharded EMA survives a resume exactly
    if fsdp:
        assert len(list((tmp_path / "samples" / "step_00000002").glob("*.wav"))) == 2
    else:
        assert len(list((tmp_path / "tokens").glob("*.pt"))) == 5  # 4 files + silence, from both shares


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
