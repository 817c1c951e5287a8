"""The one training loop both stages run: resume, the MLflow run, epochs of optimizer steps,
validation, checkpoints, the summary JSON and the registered version. A stage says only what
differs (`Stage`): its data, its loss module, its validation and what its checkpoint holds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from arcadedreamer import interrupts, tracking
from arcadedreamer.config import Params
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import atomic_write_json, describe_os_error
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.progress import progress_bar
from arcadedreamer.training.common import autocast, make_optimizer, maybe_compile, train_step
from arcadedreamer.training.distributed import Distributed, wrap


@dataclass
class Stage:
    """What one training stage brings to the loop."""

    name: str  # "vae" or "dynamics": checkpoint folder, MLflow run, registered model
    title: str  # how messages name the stage: "VAE", "dynamics"
    model: nn.Module  # what is optimized and checkpointed
    loss: nn.Module  # forward(*batch) → {"loss": …, other scalars}: what DDP wraps
    epochs: int
    arch: dict[str, int]
    batches: Callable[[torch.Generator], Iterator[tuple[torch.Tensor, ...]]]  # global batches, shuffled
    samples: int  # training samples an epoch
    unit: str  # what a sample is, for the progress bar
    generators: dict[str, torch.Generator]  # RNG states a resume restores ("shuffle" shuffles)
    running: tuple[str, ...]  # loss entries averaged over each epoch as train_<name>
    validate: Callable[[dict[str, float]], dict[str, float]]  # train averages → the epoch's metrics
    describe: Callable[[int, dict[str, float]], str]  # the line printed after each epoch
    checkpoint_entries: Callable[[], dict]  # what the checkpoint holds beside the training state
    after_checkpoint: Callable[[int], None] = lambda epoch: None  # e.g. the reconstruction grid
    before_epoch: Callable[[int], None] = lambda epoch: None  # e.g. a schedule set per epoch
    tags: dict[str, str] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)  # added to the summary JSON
    model_name: str = ""  # the registered model
    description: str = ""  # of the run and its registered version: what was trained on what
    lineage: Callable[[], dict[str, str]] = (
        dict  # what it was built from (models:/ URIs, run ids), read in the run
    )
    datasets: tuple = ()  # (folder, games, content hashes): the data, logged as MLflow dataset inputs


def run(
    stage: Stage, params: Params, resume: bool, progress: bool, dist_info: Distributed, device: torch.device
) -> dict:
    """Train `stage` for its epochs; on rank 0 return the summary written to <metrics_dir>/<name>.json."""
    train_cfg = params.training
    steps_per_epoch = -(-stage.samples // train_cfg.batch_size)
    optimizer, scheduler = make_optimizer(stage.model, params, stage.epochs * steps_per_epoch)
    start_epoch, run_id, earlier_seconds = 1, None, 0.0
    if resume:
        epoch, run_id, path, earlier_seconds = ckpt.restore_training_state(
            params, stage.name, stage.arch, stage.model, optimizer, scheduler, stage.generators
        )
        start_epoch = epoch + 1
        if dist_info.is_main:
            print(f"resuming {stage.title} training from {path} (epoch {epoch})")
    net = maybe_compile(wrap(stage.loss, dist_info, device), params)  # DDP under torchrun
    summary_path = Path(train_cfg.metrics_dir) / f"{stage.name}.json"
    if dist_info.is_main:  # an earlier run's summary never stands beside this run's checkpoints
        try:
            summary_path.unlink(missing_ok=True)
        except OSError as exc:
            raise UserError(describe_os_error(summary_path, exc)) from None
    metrics: dict[str, float] = {}
    # the epochs' wall time (validation and checkpoints included, the data's preparation before
    # them not), summed over resumes: what a recipe costs, without timing a whole pipeline
    clock_start = time.perf_counter() - earlier_seconds
    run = tracking.stage_run(stage.name, params, run_id=run_id, description=stage.description)
    lineage: dict[str, str] = {}
    with dist_info.main_only(run) as active_run:
        if dist_info.is_main:
            lineage = stage.lineage()
            tracking.set_tags({**stage.tags, **lineage, "world_size": str(dist_info.world_size)})
            if stage.datasets and run_id is None:
                tracking.log_datasets(*stage.datasets, context="training")
        for epoch in range(start_epoch, stage.epochs + 1):
            stage.model.train()
            stage.before_epoch(epoch)
            sums = dict.fromkeys(stage.running, 0.0)
            seen, epoch_start = 0, time.perf_counter()
            bar = progress_bar(
                stage.samples, f"{stage.name} epoch {epoch}/{stage.epochs}", stage.unit, progress
            )
            for global_batch in stage.batches(stage.generators["shuffle"]):
                batch = tuple(dist_info.shard(t).to(device, non_blocking=True) for t in global_batch)
                with autocast(device, train_cfg.precision):
                    losses = net(*batch)
                train_step(stage.model, losses, optimizer, train_cfg.grad_clip)
                scheduler.step()
                interrupts.raise_if_requested()
                count = len(batch[0])
                for key in stage.running:
                    sums[key] += losses[key].item() * count
                seen += count
                bar.update(len(global_batch[0]))
                bar.set_postfix(loss=f"{losses['loss'].item():.4g}")
            bar.close()
            train_seconds = time.perf_counter() - epoch_start  # the loop alone: no validation
            *totals, seen = dist_info.sum(*sums.values(), seen)
            if not dist_info.is_main:
                continue
            averages = {key: total / max(seen, 1) for key, total in zip(stage.running, totals)}
            metrics = {
                **stage.validate(averages),
                "lr": optimizer.param_groups[0]["lr"],
                "train_samples_per_s": seen / train_seconds,
            }
            tracking.log_metrics(metrics, step=epoch)
            print(stage.describe(epoch, metrics))
            if epoch % train_cfg.checkpoint_every == 0 or epoch == stage.epochs:
                ckpt.save_checkpoint(
                    ckpt.checkpoint_path(params, stage.name, epoch),
                    {
                        "stage": stage.name,
                        "epoch": epoch,
                        "arch": stage.arch,
                        "model": stage.model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": {name: g.get_state().cpu() for name, g in stage.generators.items()},
                        "config": params.model_dump(),
                        "metrics": metrics,
                        "mlflow_run_id": active_run,
                        "train_seconds": time.perf_counter() - clock_start,
                        **stage.checkpoint_entries(),
                    },
                )
                stage.after_checkpoint(epoch)

        in_step = dist_info.in_step(stage.model)  # every process takes part
        if not in_step:
            raise UserError(
                f"{stage.title} training: the {dist_info.world_size} processes ended with different weights "
                "(their gradients were not averaged); nothing is registered — report this with your torch version"
            )
        dist_info.barrier()
        if not dist_info.is_main:
            return {}
        if dist_info.enabled:
            tracking.set_tags({"ranks_in_step": "true"})
        summary = {
            **{k.replace("/", "_"): v for k, v in metrics.items()},
            "epochs": stage.epochs,
            "train_seconds": round(time.perf_counter() - clock_start, 1),
            **stage.summary,
        }
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(summary_path, summary)
        if params.tracking.register_models:
            version = tracking.register_checkpoint(
                stage.model_name,
                ckpt.final_checkpoint_path(params, stage.name),
                {"data_hash": stage.summary.get("data_hash", ""), "run_id": active_run, **lineage},
                stage.description,
            )
            print(f"registered {stage.model_name} version {version}")
    return summary
