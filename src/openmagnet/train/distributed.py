"""Process-group plumbing for multi-process training under `torchrun` (gloo on CPU, nccl on CUDA).

A run is distributed when torchrun's environment (WORLD_SIZE > 1) is present; otherwise every
helper here is a no-op for a single process.
"""
from __future__ import annotations

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


def init(device: torch.device) -> tp.Tuple[int, int]:
    """Join the process group torchrun describes, if any. Returns (rank, world size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return rank(), world_size()


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
