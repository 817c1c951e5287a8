"""Open-loop evaluation on the pinned held-out episodes, against three baselines.

For every held-out episode of every game, windows of `context + horizons` stacks are cut.
The GRU sees `context` real latents, then runs open loop on the episode's true actions for
`horizons` steps; each decoded frame is scored against the true frame. Baselines on the same
frames: copy the last real frame (no dynamics), the training set's mean frame (nothing learned),
and the VAE reconstruction of the true frame (the best any rollout through this decoder gets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arcadedreamer.config import Params
from arcadedreamer.data.dataset import gather_stacks
from arcadedreamer.data.preprocessing import stack_start_indices
from arcadedreamer.data.storage import GameData, load_game_data
from arcadedreamer.errors import UserError
from arcadedreamer.evaluation import metrics
from arcadedreamer.models.world_model import WorldModel

PREDICTORS = ("model", "copy_last", "mean_frame", "reconstruction")


@dataclass
class Windows:
    """Evaluation windows of one game: B rollouts, each context C latents then H targets."""

    stacks: torch.Tensor  # (B, C + H, S, 64, 64) in [0, 1]: true stacks, context then targets
    actions: torch.Tensor  # (B, C + H - 1) full-action ids taken from each stack


def cut_windows(data: GameData, stack_size: int, context: int, horizons: int) -> Windows:
    """Non-overlapping windows of C + H consecutive stacks inside single episodes."""
    frames = torch.from_numpy(np.asarray(data.frames))
    valid = np.zeros(len(data), dtype=bool)
    valid[stack_start_indices(data.episode_ends, stack_size)] = True
    ids = np.cumsum(np.concatenate([[0], data.episode_ends[:-1]]))
    length = context + horizons
    starts, t = [], 0
    while t + length <= len(data):
        if valid[t] and ids[t + length - 1] == ids[t]:
            starts.append(t)
            t += length
        else:
            t += 1
    if not starts:
        raise UserError(
            f"held-out {data.game}: no episode long enough for context {context} + horizons "
            f"{horizons}; raise heldout.frames_per_episode or lower evaluation.horizons"
        )
    index = torch.tensor(starts)[:, None] + torch.arange(length)  # (B, C+H)
    stacks = gather_stacks(frames, index.reshape(-1), stack_size).reshape(
        len(starts), length, stack_size, *frames.shape[1:]
    )
    actions = torch.from_numpy(np.asarray(data.actions).astype(np.int64))[index[:, :-1]]
    return Windows(stacks=stacks, actions=actions)


@torch.no_grad()
def rollout_scores(model: WorldModel, windows: Windows, context: int, mean_frame: torch.Tensor) -> dict:
    """Per-horizon scores of the model and the baselines: {predictor: {metric: [H values]}}."""
    batch, length = windows.stacks.shape[:2]
    horizons = length - context
    flat = windows.stacks.reshape(batch * length, *windows.stacks.shape[2:])
    true_latents = torch.cat([model.encode(chunk) for chunk in flat.split(512)]).reshape(batch, length, -1)
    imagined = model.imagine(true_latents[:, :context], windows.actions[:, : context - 1],
                             windows.actions[:, context - 1 :])  # (B, H, D)  # fmt: skip
    decoded = model.decode(imagined.reshape(batch * horizons, -1))[:, -1].reshape(
        batch, horizons, *flat.shape[-2:]
    )
    recon = torch.cat(
        [model.decode(z) for z in true_latents[:, context:].reshape(batch * horizons, -1).split(512)]
    )
    recon = recon[:, -1].reshape(batch, horizons, *flat.shape[-2:])
    targets = windows.stacks[:, context:, -1]  # (B, H, 64, 64): newest frame of each true stack
    last_real = windows.stacks[:, context - 1, -1]  # (B, 64, 64)
    predictions = {
        "model": decoded,
        "copy_last": last_real[:, None].expand_as(targets),
        "mean_frame": mean_frame.expand_as(targets),
        "reconstruction": recon,
    }
    scores: dict[str, dict[str, list[float]]] = {
        p: {"psnr": [], "ssim": [], "moving_mse": []} for p in PREDICTORS
    }
    scores["model"]["latent_mse"] = []
    for h in range(horizons):
        mask = metrics.moving_mask(last_real, targets[:, h])
        for name, pred in predictions.items():
            scores[name]["psnr"].append(metrics.psnr(pred[:, h], targets[:, h]))
            scores[name]["ssim"].append(metrics.ssim_per_frame(pred[:, h], targets[:, h]).mean().item())
            scores[name]["moving_mse"].append(metrics.masked_mse(pred[:, h], targets[:, h], mask))
        scores["model"]["latent_mse"].append(
            (imagined[:, h] - true_latents[:, context + h]).pow(2).mean().item()
        )
    return scores


def headline(scores: dict, headline_horizons: list[int]) -> dict[str, float]:
    """Model PSNR minus copy-last's at chosen horizons; reconstruction minus mean frame."""
    out = {}
    for h in headline_horizons:
        out[f"psnr_h{h}_gain"] = scores["model"]["psnr"][h - 1] - scores["copy_last"]["psnr"][h - 1]
        out[f"psnr_h{h}_model"] = scores["model"]["psnr"][h - 1]
    recon = float(np.mean(scores["reconstruction"]["psnr"]))
    mean = float(np.mean(scores["mean_frame"]["psnr"]))
    out["recon_gain_over_mean_frame"] = recon - mean
    out["recon_psnr"] = recon
    out["mean_frame_psnr"] = mean
    return out


def evaluate_world_model(model: WorldModel, checkpoint: dict, params: Params) -> dict:
    """Scores every configured game's held-out episodes → the content of eval.json."""
    cfg = params.evaluation
    mean_frames = checkpoint["mean_frames"]
    result: dict = {"games": {}, "series": {}, "settings": {
        "context": cfg.context, "horizons": cfg.horizons, "checkpoint_epoch": checkpoint["epoch"]}}  # fmt: skip
    for game in params.data.games:
        if game not in mean_frames:
            raise UserError(f"the model was not trained on {game} (trained on {', '.join(mean_frames)})")
        game_dir = Path(params.heldout.out_dir) / game
        if not game_dir.exists():
            raise UserError(f"{game_dir}: no held-out episodes; run `make data` (or `arcadedreamer heldout`)")
        data = load_game_data(game_dir)
        windows = cut_windows(data, params.data.stack_size, cfg.context, cfg.horizons)
        scores = rollout_scores(model, windows, cfg.context, mean_frames[game].float())
        result["games"][game] = {**headline(scores, cfg.headline_horizons), "windows": len(windows.stacks)}
        result["series"][game] = scores
    keys = [k for k in next(iter(result["games"].values())) if k != "windows"]
    result["summary"] = {k: float(np.mean([g[k] for g in result["games"].values()])) for k in keys}
    return result


def series_rows(scores: dict, metric: str) -> list[dict[str, float]]:
    """One row per horizon: {"horizon": h, "model": …, "copy_last": …, …} (DVC plot data)."""
    horizons = len(scores["model"][metric])
    return [
        {"horizon": h + 1, **{p: _finite(scores[p][metric][h]) for p in PREDICTORS}} for h in range(horizons)
    ]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else float("nan")


def should_promote(new_score: float, champion_score: float | None) -> tuple[bool, str]:
    """Higher is better; the first version always becomes champion."""
    if champion_score is None:
        return True, "no champion yet: the first evaluated version becomes champion"
    if not math.isfinite(new_score):
        return False, f"new score {new_score} is not finite"
    if new_score > champion_score:
        return True, f"new score {new_score:.4f} beats champion's {champion_score:.4f}"
    return False, f"new score {new_score:.4f} does not beat champion's {champion_score:.4f}"
