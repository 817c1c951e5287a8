"""Open-loop evaluation on the pinned held-out episodes, against three baselines.

For every held-out episode of every game, windows of `context + horizons` stacks are cut,
one every `window_stride` frames. The GRU sees `context` real latents, then runs open loop on
the episode's true actions for `horizons` steps; each decoded frame is scored against the true
frame: PSNR, SSIM, and for games with a RAM map the object scores (ball recall, false balls,
player position error; `objects.py`). Baselines on the same frames: copy the last real frame
(no dynamics), the training set's mean frame (nothing learned), and the VAE reconstruction of
the true frame (the best any rollout through this decoder gets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arcadedreamer.config import MISS_METRICS, OBJECT_METRICS, EvaluationConfig, Params
from arcadedreamer.data.dataset import game_overs, gather_stacks, step_reward_classes
from arcadedreamer.data.objects import GAMES, ObjectBoxes, object_boxes
from arcadedreamer.data.preprocessing import reward_classes, stack_start_indices
from arcadedreamer.data.storage import REGENERATE_HELDOUT, GameData, load_game_data
from arcadedreamer.errors import UserError
from arcadedreamer.evaluation import metrics
from arcadedreamer.evaluation.objects import ObjectTruth, object_scores, object_truth
from arcadedreamer.models.events import game_over_scores, predicted_events, reward_scores
from arcadedreamer.models.world_model import WorldModel

PREDICTORS = ("model", "copy_last", "mean_frame", "reconstruction")
LOWER_IS_BETTER = ("false_ball_rate", "player_error", "faded", "misplaced", "absent")  # promotion keys


@dataclass
class Windows:
    """Evaluation windows of one game: B rollouts, each context C latents then H targets."""

    stacks: torch.Tensor  # (B, C + H, S, 64, 64) in [0, 1]: true stacks, context then targets
    actions: torch.Tensor  # (B, C + H - 1) full-action ids taken from each stack
    objects: ObjectBoxes | None = None  # RAM boxes of each stack's newest frame, (B, C + H, 4)


def cut_windows(
    data: GameData, stack_size: int, context: int, horizons: int, stride: int | None = None
) -> Windows:
    """Windows of C + H consecutive stacks inside single episodes, one every `stride` frames
    (default C + H: windows do not overlap)."""
    frames = torch.from_numpy(np.asarray(data.frames))
    valid = np.zeros(len(data), dtype=bool)
    valid[stack_start_indices(data.episode_ends, stack_size)] = True
    ids = np.cumsum(np.concatenate([[0], data.episode_ends[:-1]]))
    length = context + horizons
    stride = stride or length
    starts, t = [], 0
    while t + length <= len(data):
        if valid[t] and ids[t + length - 1] == ids[t]:
            starts.append(t)
            t += stride
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
    boxes = object_boxes(data.game, np.asarray(data.ram)[index.reshape(-1).numpy()])
    if boxes is not None:
        boxes = ObjectBoxes(*(b.reshape(len(starts), length, 4) for b in (boxes.ball, boxes.player)))
    return Windows(stacks=stacks, actions=actions, objects=boxes)


@dataclass(frozen=True)
class ObjectScoring:
    """What the object scores of one game need beside the frames."""

    game: str
    tolerance: int
    visibility: float
    typical_mass: float  # the median true ball's brightness in this game's held-out frames
    player_tolerance: int


def object_scoring(data: GameData, cfg: EvaluationConfig) -> ObjectScoring | None:
    """None for a game without a RAM map (or held-out data without RAM)."""
    boxes = object_boxes(data.game, np.asarray(data.ram))
    if boxes is None:
        return None
    truth = object_truth(np.asarray(data.frames, dtype=np.float32) / 255.0, boxes, GAMES[data.game])
    masses = truth.mass[np.isfinite(truth.mass)]
    typical = float(np.median(masses)) if len(masses) else float("nan")
    return ObjectScoring(data.game, cfg.ball_tolerance, cfg.ball_visibility, typical, cfg.player_tolerance)


@torch.no_grad()
def rollout_scores(
    model: WorldModel,
    windows: Windows,
    context: int,
    mean_frame: torch.Tensor,
    scoring: ObjectScoring | None = None,
) -> dict:
    """Per-horizon scores of the model and the baselines: {predictor: {metric: [H values]}}."""
    batch, length = windows.stacks.shape[:2]
    horizons = length - context
    flat = windows.stacks.reshape(batch * length, *windows.stacks.shape[2:])
    true_latents = torch.cat([model.encode(chunk) for chunk in flat.split(512)]).reshape(batch, length, -1)
    decoded, imagined = model.imagine_frames(
        true_latents[:, :context], windows.actions[:, : context - 1], windows.actions[:, context - 1 :]
    )  # (B, H, 64, 64), (B, H, D)
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
    with_objects = scoring is not None and windows.objects is not None
    names = ("psnr", "ssim", "moving_mse", *((*OBJECT_METRICS, *MISS_METRICS) if with_objects else ()))
    scores: dict[str, dict[str, list[float]]] = {p: {m: [] for m in names} for p in PREDICTORS}
    scores["model"]["latent_mse"] = []
    for h in range(horizons):
        mask = metrics.moving_mask(last_real, targets[:, h])
        truth = _object_truth(targets[:, h], windows.objects, context + h, scoring) if with_objects else None
        for name, pred in predictions.items():
            scores[name]["psnr"].append(metrics.psnr(pred[:, h], targets[:, h]))
            scores[name]["ssim"].append(metrics.ssim_per_frame(pred[:, h], targets[:, h]).mean().item())
            scores[name]["moving_mse"].append(metrics.masked_mse(pred[:, h], targets[:, h], mask))
            if truth is not None:
                found = object_scores(
                    pred[:, h].float().numpy(),
                    truth,
                    GAMES[scoring.game],
                    scoring.tolerance,
                    scoring.visibility,
                    scoring.typical_mass,
                    scoring.player_tolerance,
                )
                for metric in (*OBJECT_METRICS, *MISS_METRICS):
                    scores[name][metric].append(getattr(found, metric))
        # the latent of the step that drew frame h against the true latent of the stack it predicts
        predicted_stack = context - 1 + model.frames_per_step * (h // model.frames_per_step + 1)
        scores["model"]["latent_mse"].append(
            (imagined[:, h] - true_latents[:, predicted_stack]).pow(2).mean().item()
            if predicted_stack < length
            else math.nan
        )
    return scores


def _object_truth(
    targets: torch.Tensor, objects: ObjectBoxes, step: int, scoring: ObjectScoring
) -> ObjectTruth:
    boxes = ObjectBoxes(ball=objects.ball[:, step], player=objects.player[:, step])
    return object_truth(targets.float().numpy(), boxes, GAMES[scoring.game])


@torch.no_grad()
def event_scores(model: WorldModel, data: GameData, stack_size: int) -> dict[str, float]:
    """The reward and game-over heads on every held-out step, the GRU fed the true latents and
    actions of its episode from the episode's first full stack (`models/events.py`)."""
    all_latents = model.vae.encode_recording(torch.from_numpy(np.asarray(data.frames)), data.episode_ends)
    actions = torch.from_numpy(np.asarray(data.actions).astype(np.int64))
    true_rewards = torch.from_numpy(reward_classes(np.asarray(data.rewards)))
    true_game_overs = torch.from_numpy(game_overs(data))
    ends = np.asarray(data.episode_ends)
    steps, states = model.recorded_states(all_latents, actions, ends, stack_start_indices(ends, stack_size))
    if len(steps) == 0:
        raise UserError(
            f"held-out {data.game}: no episode holds a whole step; raise heldout.frames_per_episode"
        )
    steps = torch.from_numpy(steps)  # (S, K): the frames each step's actions leave from
    reward_probs, game_over_probs = model.dynamics.events.probabilities(states)
    rewards, game_over_flags = predicted_events(reward_probs, game_over_probs)
    return {
        **reward_scores(rewards, step_reward_classes(true_rewards[steps]), reward_probs),
        **game_over_scores(game_over_flags, true_game_overs[steps + 1].any(-1)),
    }


def headline(scores: dict, headline_horizons: list[int]) -> dict[str, float]:
    """Model PSNR minus copy-last's at chosen horizons; reconstruction minus mean frame; the
    object scores of the model and copy-last at those horizons and of the reconstruction; what
    the model's misses are at those horizons; its ball recall averaged over every horizon."""
    out = {}
    for h in headline_horizons:
        out[f"psnr_h{h}_gain"] = scores["model"]["psnr"][h - 1] - scores["copy_last"]["psnr"][h - 1]
        out[f"psnr_h{h}_model"] = scores["model"]["psnr"][h - 1]
        for metric in OBJECT_METRICS:
            if metric in scores["model"]:
                for name in ("model", "copy_last"):
                    out[f"{metric}_h{h}_{name}"] = scores[name][metric][h - 1]
        for metric in MISS_METRICS:
            if metric in scores["model"]:
                out[f"{metric}_h{h}_model"] = scores["model"][metric][h - 1]
    if "ball_recall" in scores["model"]:
        out["ball_recall_mean_model"] = _mean_finite(scores["model"]["ball_recall"])
    recon = float(np.mean(scores["reconstruction"]["psnr"]))
    mean = float(np.mean(scores["mean_frame"]["psnr"]))
    out["recon_gain_over_mean_frame"] = recon - mean
    out["recon_psnr"] = recon
    out["mean_frame_psnr"] = mean
    for metric in (*OBJECT_METRICS, *MISS_METRICS):
        if metric in scores["reconstruction"]:
            values = np.asarray(scores["reconstruction"][metric], dtype=float)
            values = values[np.isfinite(values)]  # a horizon with no scorable ball has no recall
            out[f"recon_{metric}"] = float(values.mean()) if len(values) else math.nan
    return out


def evaluate_world_model(model: WorldModel, checkpoint: dict, params: Params) -> dict:
    """Scores every configured game's held-out episodes → the content of eval.json."""
    cfg = params.evaluation
    mean_frames = checkpoint["mean_frames"]
    result: dict = {
        "games": {},
        "series": {},
        "content_hashes": {},
        "settings": {
            "context": cfg.context,
            "horizons": cfg.horizons,
            "checkpoint_epoch": checkpoint["epoch"],
            "frames_per_step": model.frames_per_step,
        },
    }
    for game in params.data.games:
        if game not in mean_frames:
            raise UserError(f"the model was not trained on {game} (trained on {', '.join(mean_frames)})")
        game_dir = Path(params.heldout.out_dir) / game
        if not game_dir.exists():
            raise UserError(f"{game_dir}: no held-out episodes; run `make data` (or `arcadedreamer heldout`)")
        data = load_game_data(game_dir, rebuild=REGENERATE_HELDOUT)
        result["content_hashes"][game] = data.manifest["content_hash"]
        windows = cut_windows(data, params.data.stack_size, cfg.context, cfg.horizons, cfg.window_stride)
        scores = rollout_scores(
            model, windows, cfg.context, mean_frames[game].float(), object_scoring(data, cfg)
        )
        result["games"][game] = {
            **headline(scores, cfg.headline_horizons),
            **event_scores(model, data, params.data.stack_size),
            "windows": len(windows.stacks),
        }
        result["series"][game] = scores
    keys = dict.fromkeys(k for g in result["games"].values() for k in g if k != "windows")
    result["summary"] = {  # over the games that have the score (object scores: games with a RAM map)
        k: _mean_finite([g[k] for g in result["games"].values() if k in g]) for k in keys
    }
    return result


def series_rows(scores: dict, metric: str) -> list[dict[str, float]]:
    """One row per horizon: {"horizon": h, "model": …, "copy_last": …, …} (DVC plot data)."""
    horizons = len(scores["model"][metric])
    return [
        {"horizon": h + 1, **{p: _finite(scores[p][metric][h]) for p in PREDICTORS}} for h in range(horizons)
    ]


def _mean_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _finite(value: float) -> float:
    return value if math.isfinite(value) else float("nan")


def higher_is_better(key: str) -> bool:
    return not any(word in key for word in LOWER_IS_BETTER)


def should_promote(
    new_score: float, champion_score: float | None, higher_better: bool = True
) -> tuple[bool, str]:
    """The first version always becomes champion; then only a strictly better score."""
    if champion_score is None:
        return True, "no champion yet: the first evaluated version becomes champion"
    if not math.isfinite(new_score):
        return False, f"new score {new_score} is not finite"
    if (new_score > champion_score) if higher_better else (new_score < champion_score):
        return True, f"new score {new_score:.4f} beats champion's {champion_score:.4f}"
    return False, f"new score {new_score:.4f} does not beat champion's {champion_score:.4f}"
