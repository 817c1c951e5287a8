"""VAE training: MSE reconstruction + beta·KL on frame stacks, tracked in MLflow."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from arcadedreamer import interrupts, tracking
from arcadedreamer.config import Params
from arcadedreamer.data.dataset import (
    FrameStacks,
    data_hash,
    frame_statistics,
    gather_stacks,
    load_episodes,
    pooled_mean_and_std,
    split_episodes,
)
from arcadedreamer.data.preprocessing import psnr
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import atomic_write_json
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.vae import VAE, vae_loss
from arcadedreamer.progress import progress_bar
from arcadedreamer.training.common import (
    autocast,
    comparison_grid,
    configure_threads,
    make_optimizer,
    maybe_compile,
    resolve_device,
    train_step,
)
from arcadedreamer.training.distributed import Distributed, init_distributed, shutdown, wrap


@torch.no_grad()
def evaluate_vae(
    model: VAE,
    stacks: FrameStacks,
    games: list[str],
    means: torch.Tensor,
    batch_size: int,
    beta: float,
    device,
    precision: str,
    loss: str = "sse",
) -> dict:
    """Deterministic scores (decoding the posterior mean) over a split, overall and per game,
    beside each game's training mean frame used as a predictor (what a collapsed VAE scores)."""
    model.eval()
    loss_sum, count = 0.0, 0
    sse = torch.zeros(len(games), 2, dtype=torch.float64)  # per game: model, mean frame
    per_game = torch.zeros(len(games), dtype=torch.float64)
    game_ids = stacks.game_index
    for start, batch in zip(range(0, len(stacks), batch_size), stacks.batches(batch_size)):
        batch = batch.to(device)
        ids = game_ids[start : start + len(batch)]
        with autocast(device, precision):
            mu, logvar = model.encoder(batch)
            logits = model.decoder.logits(mu)
        recon = torch.sigmoid(logits.float())
        loss_sum += vae_loss(batch, logits, mu.float(), logvar.float(), beta, loss)["loss"].item() * len(
            batch
        )
        model_err = (recon.float() - batch).pow(2).mean(dim=(1, 2, 3)).cpu().double()
        mean_err = (means[ids].to(device)[:, None] - batch).pow(2).mean(dim=(1, 2, 3)).cpu().double()
        sse[:, 0].index_add_(0, ids, model_err)
        sse[:, 1].index_add_(0, ids, mean_err)
        per_game.index_add_(0, ids, torch.ones(len(ids), dtype=torch.float64))
        count += len(batch)
    model.train()
    mse = sse[:, 0].sum().item() / max(count, 1)
    out = {
        "loss": loss_sum / max(count, 1),
        "mse": mse,
        "psnr": psnr(mse),
        "psnr_mean_frame": psnr(sse[:, 1].sum().item() / max(count, 1)),
    }
    for g, game in enumerate(games):
        if per_game[g] > 0:
            out[f"psnr/{game}"] = psnr(sse[g, 0].item() / per_game[g].item())
            out[f"psnr_mean_frame/{game}"] = psnr(sse[g, 1].item() / per_game[g].item())
    return out


def train_vae(params: Params, resume: bool = False, progress: bool = True) -> dict:
    configure_threads(params)
    dist_info, device = init_distributed(resolve_device(params.training.device))
    try:
        return _train_vae(params, resume, progress and dist_info.is_main, dist_info, device)
    finally:
        shutdown(dist_info)


def _train_vae(params: Params, resume: bool, progress: bool, dist_info: Distributed, device) -> dict:
    cfg, train_cfg = params.vae, params.training
    episodes = load_episodes(params.data.out_dir, params.data.games)
    val_mask = split_episodes(episodes, train_cfg.val_fraction, train_cfg.seed)
    episodes.frames = episodes.frames.to(device)  # stays uint8: 4096 bytes per frame
    train_set = FrameStacks(episodes, params.data.stack_size, ~val_mask)
    val_set = FrameStacks(episodes, params.data.stack_size, val_mask)
    if len(train_set) == 0:
        raise UserError("no training frame stacks: collect more frames (data.frames_per_game)")
    if len(val_set) == 0:
        val_set = train_set  # one episode per game: score on what we have, said in the metrics

    torch.manual_seed(train_cfg.seed)
    model = VAE(params.data.stack_size, cfg.latent_dim).to(device)
    game_means, game_squares, game_counts = frame_statistics(episodes, ~val_mask)  # (G, 64, 64) each
    mean_frame, std_frame = pooled_mean_and_std(game_means, game_squares, game_counts)
    model.set_frame_statistics(mean_frame, std_frame, standardise_input=cfg.input_norm)
    steps_per_epoch = -(-len(train_set) // train_cfg.batch_size)
    optimizer, scheduler = make_optimizer(model, params, cfg.epochs * steps_per_epoch)
    shuffle_gen = torch.Generator().manual_seed(train_cfg.seed)
    noise_gen = torch.Generator(device=device).manual_seed(train_cfg.seed + 1 + 1000 * dist_info.rank)
    start_epoch, run_id = 1, None
    if resume:
        epoch, run_id, path = ckpt.restore_training_state(
            params,
            "vae",
            ckpt.vae_arch(params),
            model,
            optimizer,
            scheduler,
            {"shuffle": shuffle_gen, "noise": noise_gen},
        )
        start_epoch = epoch + 1
        if dist_info.is_main:
            print(f"resuming VAE training from {path} (epoch {epoch})")

    preview = gather_stacks(
        episodes.frames, val_set.indices[:: max(1, len(val_set) // 8)][:8].to(device), params.data.stack_size
    )
    dhash = data_hash(episodes)
    metrics: dict[str, float] = {}
    net = maybe_compile(wrap(model, dist_info, device), params)  # DDP under torchrun, else the model
    summary: dict = {}
    with dist_info.main_only(tracking.stage_run("vae", params, run_id=run_id)) as active_run:
        if dist_info.is_main:
            tracking.set_tags({"data_hash": dhash, "world_size": str(dist_info.world_size)})
        for epoch in range(start_epoch, cfg.epochs + 1):
            model.train()
            running, seen, epoch_start = 0.0, 0, time.perf_counter()
            bar = progress_bar(len(train_set), f"vae epoch {epoch}/{cfg.epochs}", "stack", progress)
            for global_batch in train_set.batches(train_cfg.batch_size, shuffle_gen):
                batch = dist_info.shard(global_batch).to(device, non_blocking=True)
                with autocast(device, train_cfg.precision):
                    weights = model.surprise_weights(batch, cfg.surprise_weight)
                    losses = vae_loss(
                        batch, *net(batch, noise_gen), beta=cfg.beta, loss=cfg.loss, weights=weights
                    )
                train_step(model, losses, optimizer, train_cfg.grad_clip)
                scheduler.step()
                interrupts.raise_if_requested()
                running += losses["mse"].item() * len(batch)
                seen += len(batch)
                bar.update(len(global_batch))
                bar.set_postfix(loss=f"{losses['loss'].item():.2f}", psnr=f"{psnr(running / seen):.1f}")
            bar.close()
            train_seconds = time.perf_counter() - epoch_start  # the loop alone: no validation
            running, seen = dist_info.sum(running, seen)
            lr = optimizer.param_groups[0]["lr"]
            if not dist_info.is_main:
                continue
            val = evaluate_vae(
                model,
                val_set,
                episodes.games,
                game_means,
                train_cfg.batch_size,
                cfg.beta,
                device,
                train_cfg.precision,
                cfg.loss,
            )
            baseline_psnr = val["psnr_mean_frame"]
            metrics = {
                "train_mse": running / max(seen, 1),
                "train_psnr": psnr(running / max(seen, 1)),
                "val_loss": val["loss"],
                "val_mse": val["mse"],
                "val_psnr": val["psnr"],
                "val_psnr_mean_frame": baseline_psnr,
                "val_psnr_gain_over_mean_frame": val["psnr"] - baseline_psnr,
                "lr": lr,
                "train_samples_per_s": seen / train_seconds,
                **{f"val_{k}": v for k, v in val.items() if "/" in k},
            }
            tracking.log_metrics(metrics, step=epoch)
            print(
                f"vae epoch {epoch}: val PSNR {val['psnr']:.2f} dB "
                f"(mean frame {baseline_psnr:.2f} dB), train PSNR {metrics['train_psnr']:.2f} dB"
            )
            if epoch % train_cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                path = ckpt.checkpoint_path(params, "vae", epoch)
                ckpt.save_checkpoint(
                    path,
                    {
                        "stage": "vae",
                        "epoch": epoch,
                        "arch": ckpt.vae_arch(params),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": {"shuffle": shuffle_gen.get_state(), "noise": noise_gen.get_state().cpu()},
                        "config": params.model_dump(),
                        "data_hash": dhash,
                        "metrics": metrics,
                        "mean_frames": dict(zip(episodes.games, game_means)),
                        "mlflow_run_id": active_run,
                    },
                )
                with torch.no_grad():
                    recon = model.decode(model.encode(preview)).float()
                grid = comparison_grid(preview[:, -1].cpu(), recon[:, -1].cpu())
                tracking.log_image(grid, f"reconstructions/epoch_{epoch:04d}.png")

        dist_info.barrier()
        if not dist_info.is_main:
            return summary
        final = ckpt.final_checkpoint_path(params, "vae")
        summary = {
            **{k.replace("/", "_"): v for k, v in metrics.items()},
            "epochs": cfg.epochs,
            "data_hash": dhash,
            "train_stacks": len(train_set),
            "val_split": "heldout episodes" if val_set is not train_set else "train (one episode per game)",
        }
        Path(train_cfg.metrics_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(train_cfg.metrics_dir) / "vae.json", summary)
        if params.tracking.register_models:
            version = tracking.register_checkpoint(
                tracking.VAE_MODEL,
                final,
                {
                    **{k.replace("/", "_"): f"{v:.6g}" for k, v in metrics.items()},
                    "data_hash": dhash,
                    "run_id": active_run,
                },
            )
            print(f"registered {tracking.VAE_MODEL} version {version}")
    return summary
