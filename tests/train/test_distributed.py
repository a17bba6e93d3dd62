"""Devices and processes (openmagnet/train/distributed.py): device resolution, the process group,
FSDP imports on older torch, and two CPU processes (DDP and FSDP) staying in sync."""
import json
from pathlib import Path

import pytest
import torch

from tests.train.conftest import SMALL, _metrics, _solver


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
    fix = "use --device cpu, cuda, cuda:N or mps"  # the runtime's device checks, in the training flags' words
    with pytest.raises(ValueError, match=rf"^there is no GPU cuda:2 on this machine \(2 found\): {fix}$"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match=f"^unknown device 'gpu': {fix}$"):
        resolve_device("gpu")
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: the GPU of LOCAL_RANK
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"^--device cuda:0: under torchrun each process trains on the GPU of "
                                         r"its LOCAL_RANK: pass --device cuda \(choose the GPUs with "):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^CUDA is not available on this machine \(no NVIDIA GPU, or a CPU-only "
                                         rf"torch build\): {fix}$"):
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
    worker = Path(__file__).parent / "ddp_worker.py"
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
