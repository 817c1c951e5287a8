"""Dynamics training: the GRU learns next latents on sequences the trained VAE encoded once."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from arcadedreamer import interrupts, tracking
from arcadedreamer.config import Params
from arcadedreamer.data.dataset import (
    Episodes,
    LatentSequences,
    data_hash,
    gather_stacks,
    load_episodes,
    sequence_starts,
    split_episodes,
)
from arcadedreamer.data.preprocessing import stack_start_indices
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import atomic_write_json
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.dynamics import Dynamics
from arcadedreamer.models.vae import VAE
from arcadedreamer.progress import progress_bar
from arcadedreamer.training.common import (
    autocast,
    configure_threads,
    make_optimizer,
    maybe_compile,
    resolve_device,
    train_step,
)
from arcadedreamer.training.distributed import Distributed, init_distributed, shutdown, wrap


@torch.no_grad()
def encode_all(
    vae: VAE, episodes: Episodes, stack_size: int, device, precision: str, batch_size: int = 512
) -> torch.Tensor:
    """The posterior mean of every valid stack, at the index of its last frame: (N, D)."""
    latents = torch.zeros(len(episodes), vae.latent_dim, device=device)
    valid = torch.from_numpy(stack_start_indices(episodes.episode_ends, stack_size)).to(device)
    for start in range(0, len(valid), batch_size):
        index = valid[start : start + batch_size]
        with autocast(device, precision):
            latents[index] = vae.encode(gather_stacks(episodes.frames, index, stack_size)).float()
    return latents


@torch.no_grad()
def evaluate_dynamics(model: Dynamics, sequences: LatentSequences, params: Params, device) -> dict:
    """Open-loop (every step after the context fed its own prediction) and copy-last MSE."""
    model.eval()
    totals, count = {"loss_after_context": 0.0, "loss_copy": 0.0}, 0
    for latents, actions in sequences.batches(params.training.batch_size):
        with autocast(device, params.training.precision):
            losses = model.compute_loss(latents, actions, 1.0, params.dynamics.context)
        for key in totals:
            totals[key] += losses[key].item() * len(latents)
        count += len(latents)
    model.train()
    scores = {k: v / count for k, v in totals.items()} if count else {k: float("nan") for k in totals}
    return {"loss": scores["loss_after_context"], "loss_copy": scores["loss_copy"]}


class SequenceLoss(nn.Module):
    """The scheduled-sampling loss as a module's forward, so DistributedDataParallel can wrap
    it (DDP synchronises gradients of what runs through `forward`)."""

    def __init__(self, model: Dynamics):
        super().__init__()
        self.model = model

    def forward(
        self, latents, actions, sampling_prob: float, context: int, generator
    ) -> dict[str, torch.Tensor]:
        return self.model.compute_loss(latents, actions, sampling_prob, context, generator)


def train_dynamics(
    params: Params, vae_checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True
) -> dict:
    configure_threads(params)
    dist_info, device = init_distributed(resolve_device(params.training.device))
    try:
        return _train_dynamics(
            params, vae_checkpoint, resume, progress and dist_info.is_main, dist_info, device
        )
    finally:
        shutdown(dist_info)


def _train_dynamics(
    params: Params,
    vae_checkpoint: str | Path | None,
    resume: bool,
    progress: bool,
    dist_info: Distributed,
    device,
) -> dict:
    cfg, train_cfg = params.dynamics, params.training
    vae_path = Path(vae_checkpoint) if vae_checkpoint else ckpt.final_checkpoint_path(params, "vae")
    vae_state = ckpt.load_checkpoint(vae_path, stage="vae")
    ckpt.check_arch(vae_state, ckpt.vae_arch(params), vae_path)
    vae = ckpt.vae_from_checkpoint(vae_state).to(device)

    episodes = load_episodes(params.data.out_dir, params.data.games)
    val_mask = split_episodes(episodes, train_cfg.val_fraction, train_cfg.seed)
    episodes.frames = episodes.frames.to(device)
    latents = encode_all(vae, episodes, params.data.stack_size, device, train_cfg.precision)
    actions = episodes.actions.to(device)
    train_set = LatentSequences(
        latents,
        actions,
        sequence_starts(episodes, params.data.stack_size, cfg.seq_len, ~val_mask),
        cfg.seq_len,
    )
    val_set = LatentSequences(
        latents,
        actions,
        sequence_starts(episodes, params.data.stack_size, cfg.seq_len, val_mask),
        cfg.seq_len,
    )
    if len(train_set) == 0:
        raise UserError(
            f"no training sequences of dynamics.seq_len={cfg.seq_len}: collect longer episodes or shorten seq_len"
        )
    if len(val_set) == 0:
        val_set = train_set

    torch.manual_seed(train_cfg.seed)
    model = Dynamics(params.vae.latent_dim, cfg.num_actions, cfg.hidden_size).to(device)
    steps_per_epoch = -(-len(train_set) // train_cfg.batch_size)
    optimizer, scheduler = make_optimizer(model, params, cfg.epochs * steps_per_epoch)
    shuffle_gen = torch.Generator().manual_seed(train_cfg.seed)
    sampling_gen = torch.Generator().manual_seed(train_cfg.seed + 2 + 1000 * dist_info.rank)
    start_epoch, run_id = 1, None
    if resume:
        epoch, run_id, path = ckpt.restore_training_state(
            params,
            "dynamics",
            ckpt.dynamics_arch(params),
            model,
            optimizer,
            scheduler,
            {"shuffle": shuffle_gen, "sampling": sampling_gen},
        )
        start_epoch = epoch + 1
        if dist_info.is_main:
            print(f"resuming dynamics training from {path} (epoch {epoch})")

    dhash = data_hash(episodes)
    metrics: dict[str, float] = {}
    net = maybe_compile(wrap(SequenceLoss(model), dist_info, device), params)  # DDP under torchrun
    summary: dict = {}
    with dist_info.main_only(tracking.stage_run("dynamics", params, run_id=run_id)) as active_run:
        if dist_info.is_main:
            tracking.set_tags(
                {"data_hash": dhash, "vae_checkpoint": str(vae_path), "world_size": str(dist_info.world_size)}
            )
        for epoch in range(start_epoch, cfg.epochs + 1):
            running, seen, sampled, epoch_start = 0.0, 0, 0.0, time.perf_counter()
            bar = progress_bar(len(train_set), f"dynamics epoch {epoch}/{cfg.epochs}", "seq", progress)
            for global_latents, global_actions in train_set.batches(train_cfg.batch_size, shuffle_gen):
                batch_latents, batch_actions = (
                    dist_info.shard(global_latents),
                    dist_info.shard(global_actions),
                )
                with autocast(device, train_cfg.precision):
                    losses = net(
                        batch_latents, batch_actions, cfg.scheduled_sampling_prob, cfg.context, sampling_gen
                    )
                train_step(model, losses, optimizer, train_cfg.grad_clip)
                scheduler.step()
                interrupts.raise_if_requested()
                running += losses["loss"].item() * len(batch_latents)
                sampled += losses["sampled_fraction"].item() * len(batch_latents)
                seen += len(batch_latents)
                bar.update(len(global_latents))
                bar.set_postfix(loss=f"{running / seen:.4f}")
            bar.close()
            train_seconds = time.perf_counter() - epoch_start  # the loop alone: no validation
            running, sampled, seen = dist_info.sum(running, sampled, seen)
            if not dist_info.is_main:
                continue
            lr = optimizer.param_groups[0]["lr"]
            val = evaluate_dynamics(model, val_set, params, device)
            metrics = {
                "train_loss": running / seen,
                "sampled_fraction": sampled / seen,
                "val_loss_open_loop": val["loss"],
                "val_loss_copy_last": val["loss_copy"],
                "val_gain_over_copy_last": val["loss_copy"] / max(val["loss"], 1e-12),
                "lr": lr,
                "train_samples_per_s": seen / train_seconds,
            }
            tracking.log_metrics(metrics, step=epoch)
            print(
                f"dynamics epoch {epoch}: train {metrics['train_loss']:.4f}, open-loop val "
                f"{val['loss']:.3g} (copy-last {val['loss_copy']:.3g})"
            )
            if epoch % train_cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                ckpt.save_checkpoint(
                    ckpt.checkpoint_path(params, "dynamics", epoch),
                    {
                        "stage": "dynamics",
                        "epoch": epoch,
                        "arch": ckpt.dynamics_arch(params),
                        "model": model.state_dict(),
                        "vae": vae.state_dict(),
                        "vae_arch": ckpt.vae_arch(params),
                        "vae_checkpoint": str(vae_path),
                        "mean_frames": vae_state["mean_frames"],
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": {"shuffle": shuffle_gen.get_state(), "sampling": sampling_gen.get_state()},
                        "config": params.model_dump(),
                        "data_hash": dhash,
                        "metrics": metrics,
                        "mlflow_run_id": active_run,
                    },
                )

        dist_info.barrier()
        if not dist_info.is_main:
            return summary
        final = ckpt.final_checkpoint_path(params, "dynamics")
        summary = {
            **metrics,
            "epochs": cfg.epochs,
            "data_hash": dhash,
            "train_sequences": len(train_set),
            "val_sequences": len(val_set),
        }
        Path(train_cfg.metrics_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(train_cfg.metrics_dir) / "dynamics.json", summary)
        if params.tracking.register_models:
            version = tracking.register_checkpoint(
                tracking.DYNAMICS_MODEL,
                final,
                {**{k: f"{v:.6g}" for k, v in metrics.items()}, "data_hash": dhash, "run_id": active_run},
            )
            print(f"registered {tracking.DYNAMICS_MODEL} version {version}")
    return summary
