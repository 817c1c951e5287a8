"""Pieces both trainers share: device, seeding, optimizer, schedule, image grids."""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np
import torch

from arcadedreamer import preflight
from arcadedreamer.config import Params
from arcadedreamer.data.preprocessing import to_uint8
from arcadedreamer.errors import UserError


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device: cuda requested but no CUDA GPU is visible; use auto or cpu")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def configure_threads(params: Params) -> None:
    if params.training.num_threads > 0:
        torch.set_num_threads(params.training.num_threads)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `training.precision`: `auto` uses it on the GPU only (on the CPUs measured
    here bf16 is slower: README); `bf16` forces it, also on the CPU, which is how the tests run
    this path without a GPU. Weights, optimizer state and checkpoints stay fp32 either way."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Linear warm-up over `warmup_steps`, then cosine annealing to 0 (or constant).

    The warm-up matters: Adam's first steps move every weight by about lr at once, which at
    lr 1e-3 shifts a 4096-input layer's pre-activations coherently and killed most VAE units.
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        return warm
    progress = min(1.0, step / max(1, total_steps))
    return warm * 0.5 * (1.0 + math.cos(math.pi * progress))


def scaled_lr(lr: float, batch_size: int, reference_batch: int, rule: str) -> float:
    """The learning rate for `batch_size` when `lr` was tuned at `reference_batch`."""
    ratio = batch_size / reference_batch
    return {"none": lr, "linear": lr * ratio, "sqrt": lr * math.sqrt(ratio)}[rule]


def make_optimizer(model: torch.nn.Module, params: Params, total_steps: int):
    """Adam and a per-step schedule (`scheduler.step()` after every optimizer step)."""
    cfg = params.training
    lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_reference_batch, cfg.lr_scaling)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        functools.partial(
            lr_factor, total_steps=total_steps, warmup_steps=cfg.warmup_steps, schedule=cfg.scheduler
        ),
    )
    return optimizer, scheduler


def maybe_compile(module: torch.nn.Module, params: Params) -> torch.nn.Module:
    """torch.compile when `training.compile` is on; checkpoints keep the uncompiled module's
    weights (no `_orig_mod.` prefixes) because trainers save `model`, not this wrapper."""
    return torch.compile(module) if params.training.compile else module


class ComputeLoss(torch.nn.Module):
    """A model's `compute_loss` as a module's forward, its settings bound: what the loop calls and
    DistributedDataParallel wraps (DDP synchronises the gradients of what runs through forward)."""

    def __init__(self, model: torch.nn.Module, **settings):
        super().__init__()
        self.model, self.settings = model, settings

    def forward(self, *batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.compute_loss(*batch, **self.settings)


def train_step(model, losses: dict[str, torch.Tensor], optimizer, grad_clip: float) -> None:
    """One optimizer step; a loss or gradient that is not finite stops training before it
    reaches the weights, so the last checkpoint stays good and nothing diverged is registered."""
    loss = losses["loss"]
    if not torch.isfinite(loss.detach()).item():
        raise UserError(
            f"training diverged: the loss became {loss.item()} (lr {optimizer.param_groups[0]['lr']:.3g}); "
            "lower training.lr or training.grad_clip and run again (earlier checkpoints are intact)"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    groups = model.clip_groups() if hasattr(model, "clip_groups") else [list(model.parameters())]
    norms = [torch.nn.utils.clip_grad_norm_(group, grad_clip) for group in groups]
    norm = torch.stack(norms).max()
    if not torch.isfinite(norm).item():
        raise UserError(
            f"training diverged: the gradient norm became {norm.item()}; lower training.lr and run again "
            "(earlier checkpoints are intact)"
        )
    optimizer.step()


def balanced_class_weights(counts: torch.Tensor, max_weight: float) -> torch.Tensor:
    """Each class weighs total / (classes × its count), at most `max_weight`: every class then
    counts as much in the loss as the others, however rare (a class never seen weighs as if seen once)."""
    counts = counts.double()
    weights = counts.sum() / (len(counts) * counts.clamp(min=1))
    return weights.clamp(max=max_weight).float()


def comparison_grid(real: torch.Tensor, recon: torch.Tensor, scale: int = 2) -> np.ndarray:
    """Real frames above their reconstructions: (B, H, W) each in [0, 1] → uint8 image."""
    top = np.concatenate(list(to_uint8(real)), axis=1)
    bottom = np.concatenate(list(to_uint8(recon)), axis=1)
    grid = np.concatenate([top, bottom], axis=0)
    return np.kron(grid, np.ones((scale, scale), dtype=np.uint8))


def check_resources(params: Params, stage: str) -> None:
    """Before a training starts: the frames it will hold and the checkpoints it will write fit
    this machine (`preflight`), from the data's manifests and the model's size alone."""
    from pathlib import Path

    from arcadedreamer.data.storage import read_manifest
    from arcadedreamer.models import checkpoints as ckpt
    from arcadedreamer.models.vae import VAE

    frame_count = sum(
        int(read_manifest(Path(params.data.out_dir) / g).get("frames", 0)) for g in params.data.games
    )
    vae = VAE(params.data.stack_size, params.vae.latent_dim)
    parameters = sum(p.numel() for p in vae.parameters())
    epochs = params.vae.epochs
    if stage == "dynamics":
        dynamics = ckpt.dynamics_from_arch(ckpt.dynamics_arch(params))
        parameters = parameters // preflight.ADAM_COPIES + sum(p.numel() for p in dynamics.parameters())
        epochs = params.dynamics.epochs
    checkpoints = epochs // params.training.checkpoint_every + (epochs % params.training.checkpoint_every > 0)
    preflight.check_training(
        frame_count,
        params.data.frame_size,
        params.vae.latent_dim,
        parameters,
        checkpoints,
        Path(params.training.checkpoint_dir),
        stage,
    )
