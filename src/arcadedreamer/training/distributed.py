"""Multi-process training with torch's DistributedDataParallel, started by `torchrun`.

`torchrun --nproc_per_node N -m arcadedreamer train --stage vae` runs N processes; each takes
its contiguous slice of every global batch (`training.batch_size` stays the global batch), DDP
averages the gradients, so the run follows the same curve as one process with that batch.
Rank 0 alone validates, logs to MLflow, writes checkpoints and registers the model.
Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's contiguous slice of a global batch."""
        return batch.tensor_split(self.world_size)[self.rank] if self.enabled else batch

    def sum(self, *values: float) -> list[float]:
        """Sum numbers over all processes (for epoch metrics)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def in_step(self, model: torch.nn.Module) -> bool:
        """Whether every process holds the same weights (what DDP's gradient averaging keeps):
        each parameter's sum, the spread over processes nil. True in a single process."""
        if not self.enabled:
            return True
        sums = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
        high, low = sums.clone(), sums.clone()
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        return bool(torch.equal(high, low))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def main_only(self, context):
        """`context` on rank 0, a no-op elsewhere (e.g. the MLflow run)."""
        return context if self.is_main else contextlib.nullcontext()


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun set up (WORLD_SIZE > 1); otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Distributed(dist.get_rank(), dist.get_world_size()), device


def wrap(model: torch.nn.Module, info: Distributed, device: torch.device) -> torch.nn.Module:
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shutdown(info: Distributed) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
