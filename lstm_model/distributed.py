"""Where a process stands in a torchrun job, and joining it (gloo on CPU, NCCL on GPUs).

torchrun's own environment variables (WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) are read here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed

from .train_config import TrainingStopped


@dataclass
class Dist:
    """Where this process stands in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's share of the batch's contiguous streams."""
        per_rank = batch_size // self.world
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t) / self.world

    def gather_rows(self, tensor: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Concatenate every rank's tensor along `dim` (the batch rows), on every rank."""
        if self.world == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)


def init_distributed(device_name: str) -> tuple[Dist, str]:
    """Join the torchrun job when WORLD_SIZE > 1 (gloo on CPU, NCCL on GPUs); returns the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    dist = torch.distributed
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        gpus = torch.cuda.device_count()
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if per_node > gpus:  # NCCL cannot put two processes on one GPU; every rank stops at once
            raise TrainingStopped(
                f"torchrun started {per_node} processes on this machine but it has {gpus} CUDA GPU(s), and NCCL "
                f"needs one GPU per process: use --nproc_per_node={gpus}, or --device cpu to train on CPU with gloo.")
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size()), device_name

