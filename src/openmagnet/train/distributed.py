"""Process-group plumbing for multi-process training under `torchrun` (gloo on CPU, nccl on CUDA).

A run is distributed when torchrun's environment (WORLD_SIZE > 1) is present; otherwise every
helper here is a no-op for a single process.

Rank 0 alone validates, generates samples and writes checkpoints while the others wait at a barrier,
so the process group gets a long timeout (`dist_timeout_minutes`, 2 h by default) instead of NCCL's
10 minutes.
"""
from __future__ import annotations

import datetime
import os
import typing as tp

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def _launched_world() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(requested: tp.Optional[str]) -> torch.device:
    """The device this process trains on, from --device (cpu, cuda, cuda:N, mps; default cuda when
    there is one). An explicit cuda:N is kept; a plain 'cuda' is the GPU of torchrun's LOCAL_RANK
    under torchrun, else the current GPU."""
    try:
        device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise ValueError(f"--device {requested}: not a device name: use cpu, cuda, cuda:N or mps") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"--device {requested}: this PyTorch sees no CUDA GPU: use --device cpu")
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
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= count:
        raise ValueError(f"--device {requested}: only {count} GPU(s) visible: use cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


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
