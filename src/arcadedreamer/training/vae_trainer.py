"""VAE training: the reconstruction term + beta·KL on frame stacks, run by the shared loop."""

from __future__ import annotations

import torch

from arcadedreamer import tracking
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
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.vae import VAE, vae_loss
from arcadedreamer.training import loop
from arcadedreamer.training.common import (
    ComputeLoss,
    autocast,
    check_resources,
    comparison_grid,
    configure_threads,
    resolve_device,
)
from arcadedreamer.training.distributed import Distributed, init_distributed, shutdown


@torch.no_grad()
def evaluate_vae(
    model: VAE,
    stacks: FrameStacks,
    games: list[str],
    means: torch.Tensor,
    batch_size: int,
    beta: float,
    device: torch.device,
    precision: str,
    loss: str = "sse",
    surprise: float = 0.0,
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
        weights = model.surprise_weights(batch, surprise)  # as in training: the two losses compare
        losses = vae_loss(batch, logits, mu.float(), logvar.float(), beta, loss, weights)
        loss_sum += losses["loss"].item() * len(batch)
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
    check_resources(params, "vae")
    configure_threads(params)
    dist_info, device = init_distributed(resolve_device(params.training.device))
    try:
        return loop.run(
            vae_stage(params, dist_info, device),
            params,
            resume,
            progress and dist_info.is_main,
            dist_info,
            device,
        )
    finally:
        shutdown(dist_info)


def vae_stage(params: Params, dist_info: Distributed, device: torch.device) -> loop.Stage:
    """The VAE's data, loss, validation and checkpoint contents, for the shared loop."""
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
    generators = {
        "shuffle": torch.Generator().manual_seed(train_cfg.seed),
        "noise": torch.Generator(device=device).manual_seed(train_cfg.seed + 1 + 1000 * dist_info.rank),
    }
    loss = ComputeLoss(
        model, beta=cfg.beta, loss=cfg.loss, surprise=cfg.surprise_weight, generator=generators["noise"]
    )
    preview = gather_stacks(
        episodes.frames, val_set.indices[:: max(1, len(val_set) // 8)][:8].to(device), params.data.stack_size
    )
    dhash = data_hash(episodes)

    def validate(train: dict[str, float]) -> dict[str, float]:
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
            cfg.surprise_weight,
        )
        return {
            "train_loss": train["loss"],  # per stack, as val_loss: the same loss on the two splits
            "train_mse": train["mse"],
            "train_psnr": psnr(train["mse"]),
            "val_loss": val["loss"],
            "val_mse": val["mse"],
            "val_psnr": val["psnr"],
            "val_psnr_mean_frame": val["psnr_mean_frame"],
            "val_psnr_gain_over_mean_frame": val["psnr"] - val["psnr_mean_frame"],
            **{f"val_{k}": v for k, v in val.items() if "/" in k},
        }

    def log_reconstructions(epoch: int) -> None:
        with torch.no_grad():
            recon = model.decode(model.encode(preview)).float()
        grid = comparison_grid(preview[:, -1].cpu(), recon[:, -1].cpu())
        tracking.log_image(grid, "reconstructions", epoch)

    return loop.Stage(
        name="vae",
        title="VAE",
        model=model,
        loss=loss,
        epochs=cfg.epochs,
        arch=ckpt.vae_arch(params),
        batches=lambda generator: ((b,) for b in train_set.batches(train_cfg.batch_size, generator)),
        samples=len(train_set),
        unit="stack",
        generators=generators,
        running=("loss", "mse"),
        validate=validate,
        describe=lambda epoch, m: (
            f"vae epoch {epoch}: val PSNR {m['val_psnr']:.2f} dB (mean frame {m['val_psnr_mean_frame']:.2f} dB), "
            f"train PSNR {m['train_psnr']:.2f} dB"
        ),
        checkpoint_entries=lambda: {"data_hash": dhash, "mean_frames": dict(zip(episodes.games, game_means))},
        after_checkpoint=log_reconstructions,
        tags={"data_hash": dhash},
        description=(
            f"VAE, {cfg.epochs} epochs ({cfg.loss}, surprise weight {cfg.surprise_weight:g}) on "
            f"{', '.join(episodes.games)}: {len(episodes)} frames, data {dhash[:12]}"
        ),
        datasets=(params.data.out_dir, episodes.games, episodes.content_hashes),
        summary={
            "data_hash": dhash,
            "train_stacks": len(train_set),
            "val_split": "heldout episodes" if val_set is not train_set else "train (one episode per game)",
        },
        model_name=tracking.VAE_MODEL,
    )
