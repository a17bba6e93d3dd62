"""Process-group plumbing for multi-process training under `torchrun` (gloo on CPU, nccl on CUDA).

A run is distributed when torchrun's environment (WORLD_SIZE > 1) is present; otherwise every
helper here is a no-op for a single process.

Rank 0 alone validates, generates samples and writes checkpoints while the others wait at a barrier,
so the process group gets a long timeout (`dist_timeout_minutes`, 2 h by default) instead of NCCL's
10 minutes.
"""
from __future__ import annotations

import copy
import datetime
import os
import typing as tp

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..runtime import check_device, default_device
from .lora import merge_lora

DEVICE_FIX = "use --device cpu, cuda, cuda:N or mps"


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def _launched_world() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun), known before the process group."""
    return int(os.environ.get("RANK", "0"))


def resolve_device(requested: tp.Optional[str]) -> torch.device:
    """The device this process trains on, from --device (cpu, cuda, cuda:N, mps; default cuda when there is one,
    else cpu), as the runtime checks devices (`runtime.check_device`), with torchrun's rule on top: under torchrun
    a plain 'cuda' is the GPU of LOCAL_RANK (an explicit cuda:N is refused there); otherwise an explicit cuda:N
    is kept and a plain 'cuda' is the current GPU."""
    device = check_device(requested or default_device(mps=False), fix=DEVICE_FIX)
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if _launched_world() > 1:
        if device.index is not None:
            raise ValueError(f"--device {requested}: under torchrun each process trains on the GPU of its "
                             f"LOCAL_RANK: pass --device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)")
        index = int(os.environ.get("LOCAL_RANK", "0"))
        if index >= count:
            raise ValueError(f"LOCAL_RANK {index} but only {count} GPU(s) visible: start at most {count} "
                             f"processes per machine (torchrun --nproc_per_node {count})")
        return torch.device("cuda", index)
    return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)


def init(device: torch.device, timeout_minutes: float = 120.0) -> tp.Tuple[int, int]:
    """Make `device` (from resolve_device) this process's GPU and join the process group torchrun
    describes, if any, with a timeout long enough for rank 0's solitary work. Returns (rank, world size)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if _launched_world() > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return rank(), world_size()


def fully_shard_fn() -> tp.Callable[..., tp.Any]:
    """FSDP2's `fully_shard`: public from torch 2.6, under `_composable` in 2.4-2.5."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


def dtensor_api() -> tp.Tuple[type, tp.Callable[..., tp.Any]]:
    """(DTensor, distribute_tensor): public from torch 2.5, under `_tensor` in 2.4."""
    try:
        from torch.distributed.tensor import DTensor, distribute_tensor
    except ImportError:
        from torch.distributed._tensor import DTensor, distribute_tensor
    return DTensor, distribute_tensor


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean(value: float, device: torch.device) -> float:
    """The mean of a float over all processes."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def means(values: tp.Sequence[float], device: torch.device) -> tp.List[float]:
    """The mean over all processes of each of a list of floats (the same length on every process)."""
    if not dist.is_initialized() or not values:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world_size()).tolist()


def broadcast_object(obj: tp.Any) -> tp.Any:
    """Rank 0's value of a picklable object, on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------
# The training module as this process holds it
# ------------------------------------------------------------------------------------------------
class ParallelModel:
    """A training module (train.objective.TrainingForward holding the LM as `.lm`) as this process
    holds it: plain (one process), DDP-wrapped, or FSDP-sharded (`fsdp` under torchrun, each
    transformer layer a unit). It hands out and takes back full state dicts with the LM's own keys,
    gathering or scattering shards where needed.

    `module` is what the optimiser steps and the loss calls; `lm` the LM itself (LoRA-wrapped when
    `lora` is given, whose adapters are merged into the full state)."""

    def __init__(self, forward: torch.nn.Module, world: int, device: torch.device, fsdp: bool = False,
                 lora: tp.Optional[torch.nn.Module] = None):
        self.lm = forward.lm
        self.lora = lora
        self.sharded = fsdp and world > 1
        forward.touch_all_heads = self.sharded  # FSDP: every parameter in every rank's graph (objective.py)
        self.module = self._wrap(forward, world, device)

    def _wrap(self, forward: torch.nn.Module, world: int, device: torch.device) -> torch.nn.Module:
        if world == 1:
            return forward
        if self.sharded:
            fully_shard = fully_shard_fn()
            for layer in self.lm.transformer.layers:
                fully_shard(layer)
            return fully_shard(forward)
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(forward, device_ids=ids, find_unused_parameters=True)

    def _layout(self) -> tp.Dict[str, torch.Tensor]:
        """The wrapped module's state, keyed as the LM's (DTensors under FSDP)."""
        return {k.removeprefix("module.").removeprefix("lm."): v for k, v in self.module.state_dict().items()}

    def full_state(self) -> tp.Dict[str, torch.Tensor]:
        """The LM's full state dict (LoRA merged in, FSDP shards gathered), on every rank's call;
        complete on the main process."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True,
                                                                               cpu_offload=True))
            state = {k.removeprefix("lm."): v for k, v in state.items()}
        else:
            state = self.lm.state_dict()
        if self.lora is not None:
            state = merge_lora(copy.deepcopy(self.lora)).state_dict()
        return state

    def local_state(self) -> tp.Dict[str, torch.Tensor]:
        """What this process averages for the EMA: the full LM state, or its own shards under FSDP
        (no gathering)."""
        if not self.sharded:
            return self.full_state()
        DTensor, _ = dtensor_api()
        return {k: v.to_local() if isinstance(v, DTensor) else v for k, v in self._layout().items()}

    def gather(self, local: tp.Mapping[str, torch.Tensor]) -> tp.Optional[tp.Dict[str, torch.Tensor]]:
        """Full tensors from per-rank values laid out as `local_state()` (e.g. EMA averages), on the
        main process (None on the others); collective under FSDP."""
        if not self.sharded:
            return dict(local)
        DTensor, _ = dtensor_api()
        layout = self._layout()
        full = {}
        for k, value in local.items():
            ref = layout[k]
            if isinstance(ref, DTensor):
                value = DTensor.from_local(value, ref.device_mesh, ref.placements, shape=ref.shape,
                                           stride=ref.stride()).full_tensor()
            if is_main():
                full[k] = value
        return full if is_main() else None

    def scatter(self, full: tp.Mapping[str, torch.Tensor]) -> tp.Dict[str, torch.Tensor]:
        """This process's share of full tensors keyed as the LM's (its shards under FSDP)."""
        if not self.sharded:
            return dict(full)
        DTensor, distribute_tensor = dtensor_api()
        layout = self._layout()
        shards = {}
        for k, value in full.items():
            ref = layout.get(k)
            if isinstance(ref, DTensor):
                value = distribute_tensor(value.to(ref.device), ref.device_mesh, ref.placements).to_local()
            shards[k] = value
        return shards

    def training_state(self, optimizer: torch.optim.Optimizer) -> tp.Tuple[dict, dict]:
        """(full model state with the LM's keys, full optimiser state), for a checkpoint; on every rank."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                                 get_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model = get_model_state_dict(self.module, options=opts)
            optim = get_optimizer_state_dict(self.module, optimizer, options=opts)
        else:
            model, optim = self.module.state_dict(), optimizer.state_dict()
        return {k.removeprefix("module.").removeprefix("lm."): v for k, v in model.items()}, optim

    def load_training_state(self, model: tp.Mapping[str, torch.Tensor], optim: dict,
                            optimizer: torch.optim.Optimizer) -> None:
        """The inverse of `training_state` (strict), on every rank."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                 set_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.module, {"lm." + k: v for k, v in model.items()}, options=opts)
            set_optimizer_state_dict(self.module, optimizer, optim, options=opts)
        else:
            self.lm.load_state_dict(model, strict=True)
            optimizer.load_state_dict(optim)
