"""Helpers shared by the benchmarks: timing, machine description, tiny real datasets."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"
    )


def rate(fn, units: int, min_seconds: float = 3.0) -> float:
    """Units per second of `fn` (which processes `units` per call), after one warm-up call."""
    fn()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds:
        fn()
        count += units
    return count / (time.perf_counter() - start)


def vae_training_step(batch: int, compiled: bool = False):
    """One bare VAE optimisation step on an in-memory batch (the trainer's reference): returns
    a callable. With `compiled`, the model's forward goes through torch.compile."""
    import torch

    from arcadedreamer.models.vae import VAE
    from arcadedreamer.training.common import ComputeLoss, train_step

    torch.manual_seed(0)
    model = VAE()
    net = ComputeLoss(model, beta=1e-4, loss="bce", surprise=0.5)  # what the trainer's loop calls
    net = torch.compile(net) if compiled else net
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    frames = torch.rand(batch, 4, 64, 64)  # (B, stack, H, W) in [0, 1]
    return lambda: train_step(model, net(frames), optimizer, 1.0)


def dynamics_training_step(
    batch: int, seq_len: int, compiled: bool = False, frames_per_step: int = 1, decoded_samples: int = 0
):
    """One bare dynamics optimisation step (scheduled sampling, as the trainer runs it); with
    `decoded_samples`, that many predictions a batch also decoded by a VAE (`DecodedFrameLoss`)."""
    import torch

    from arcadedreamer.models.dynamics import DecodedFrameLoss, Dynamics
    from arcadedreamer.models.vae import VAE
    from arcadedreamer.training.common import ComputeLoss, train_step

    torch.manual_seed(0)
    model = Dynamics(frames_per_step=frames_per_step)
    # (N, 64, 64): the recording the decoded predictions are scored against
    frames = torch.randint(0, 256, (4096, 64, 64), dtype=torch.uint8)
    decoded = None
    if decoded_samples:
        decoded = DecodedFrameLoss(
            vae=VAE().eval().requires_grad_(False), frames=frames, loss="bce", surprise=0.5,
            samples=decoded_samples, weight=1.0,
        )  # fmt: skip
    net = ComputeLoss(model, sampling_prob=0.5, burn_in=4, generator=None, decoded=decoded)
    net = torch.compile(net) if compiled else net
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    latents = torch.randn(batch, seq_len + 1, 64)  # (B, T+1, latent)
    # (B, T) one action a step, or (B, T, K) with K frames a step
    actions = torch.randint(0, 18, (batch, seq_len) + ((frames_per_step,) if frames_per_step > 1 else ()))
    # nothing happens: the heads cost the same either way
    reward_classes = torch.ones(batch, seq_len, dtype=torch.long)
    game_overs = torch.zeros(batch, seq_len)
    # (B,) the frame of each sequence's first latent
    starts = torch.randint(8, len(frames) - frames_per_step * (seq_len + 1), (batch,))
    return lambda: train_step(
        model, net(latents, actions, reward_classes, game_overs, starts), optimizer, 1.0
    )
