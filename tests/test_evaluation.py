"""Metrics against hand-computed values, baselines, the evaluate stage and promotion."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from arcadedreamer import tracking
from arcadedreamer.config import EvaluationConfig, load_params
from arcadedreamer.data.collector import collect_game
from arcadedreamer.data.preprocessing import stack_start_indices
from arcadedreamer.data.storage import GameData, load_game_data
from arcadedreamer.evaluation import metrics
from arcadedreamer.evaluation.evaluate import (
    cut_windows,
    headline,
    higher_is_better,
    object_scoring,
    rollout_scores,
    should_promote,
)
from arcadedreamer.evaluation.stage import promote, run_evaluate
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.dynamics import Dynamics
from arcadedreamer.models.vae import VAE
from arcadedreamer.models.world_model import WorldModel
from conftest import tiny_params_dict, write_params


def test_psnr_hand_computed():
    target = torch.zeros(3, 8, 8)
    assert metrics.psnr(target, target) == math.inf
    assert metrics.psnr(target + 0.1, target) == pytest.approx(20.0)  # MSE 0.01
    noisy = target.clone()
    noisy[0, 0, :4] = 1.0  # 4 of 192 pixels wrong by 1
    assert metrics.psnr(noisy, target) == pytest.approx(10 * math.log10(192 / 4))
    grey = target + 0.25  # the error, not the brightness: grey against grey is perfect
    assert metrics.psnr(grey, grey) == math.inf and metrics.psnr(grey + 0.1, grey) == pytest.approx(20.0)


def test_ssim_bounds_and_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 32, 32, generator=g)
    assert torch.allclose(metrics.ssim_per_frame(x, x), torch.ones(4))
    y = torch.rand(4, 32, 32, generator=g)
    values = metrics.ssim_per_frame(x, y)
    assert ((values >= -1) & (values <= 1)).all() and (values < 0.2).all()
    assert (metrics.ssim_per_frame(x, 1 - x) < 0).all(), "an inverted image is anti-correlated"
    assert metrics.ssim_per_frame(x, (x + 0.02).clamp(0, 1)).min() > 0.9


def test_ssim_matches_the_reference_computed_with_scipys_gaussian_filter():
    """Wang et al.'s SSIM as scikit-image computes it: an 11×11 Gaussian of σ 1.5 (scipy's
    filter truncated at 3.5 σ), averaged over the pixels whose window lies inside the frame."""
    from scipy.ndimage import gaussian_filter

    g = torch.Generator().manual_seed(1)
    # dark frames, as Atari's mostly are: there the constants c1 and c2 weigh
    x = torch.cat([torch.rand(1, 24, 24, generator=g), 0.05 * torch.rand(1, 24, 24, generator=g)])
    y = (0.7 * x + 0.3 * x.max() * torch.rand(2, 24, 24, generator=g)).clamp(0, 1)
    c1, c2 = 0.01**2, 0.03**2
    expected = []
    for a, b in zip(x.double().numpy(), y.double().numpy()):
        blur = lambda t: gaussian_filter(t, sigma=1.5, truncate=3.5)[5:-5, 5:-5]  # noqa: E731
        mu_a, mu_b = blur(a), blur(b)
        var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        )
        expected.append(ssim_map.mean())
    assert metrics.ssim_per_frame(x, y).tolist() == pytest.approx(expected, abs=1e-5)


def test_moving_mask_and_masked_error():
    last = torch.zeros(1, 4, 4)
    target = torch.zeros(1, 4, 4)
    target[0, 1, 2] = 1.0
    mask = metrics.moving_mask(last, target)
    assert mask.sum() == 1 and mask[0, 1, 2]
    assert not metrics.moving_mask(target, target).any(), "a bright pixel that stays put does not move"
    pred = torch.zeros(1, 4, 4)
    pred[0, 1, 2] = 0.5
    assert metrics.masked_mse(pred, target, mask) == pytest.approx(0.25)
    two = mask.clone()
    two[0, 0, 0] = True  # a second pixel, predicted right: the mean over both
    assert metrics.masked_mse(pred, target, two) == pytest.approx(0.125)
    assert math.isnan(metrics.masked_mse(pred, target, torch.zeros_like(mask)))


def synthetic_episode(length: int = 30) -> GameData:
    """A 2×2 block moving one pixel right per frame, on a 64×64 black screen, one episode."""
    frames = np.zeros((length, 64, 64), dtype=np.uint8)
    for t in range(length):
        frames[t, 10:12, t : t + 2] = 255
    ends = np.zeros(length, dtype=bool)
    ends[-1] = True
    return GameData(
        "Synthetic",
        frames,
        np.zeros(length, np.uint8),
        np.zeros(length, np.float32),
        ends,
        np.zeros((length, 128), np.uint8),
        {},
        Path("."),
    )


def test_copy_last_and_mean_frame_baselines_on_a_synthetic_sequence():
    data = synthetic_episode()
    windows = cut_windows(data, stack_size=4, context=2, horizons=5)
    assert windows.stacks.shape == (3, 7, 4, 64, 64)  # 27 valid stacks → 3 windows of 7
    model = WorldModel(VAE(), Dynamics()).eval()
    mean = torch.from_numpy(data.frames.mean(0) / 255.0).float()
    scores = rollout_scores(model, windows, context=2, mean_frame=mean)
    for h in range(1, 6):
        # block moved h pixels: 2h pixels differ if h < 2, else 8 (both blocks fully apart)
        wrong = 2 * 2 * min(h, 2)
        assert scores["copy_last"]["psnr"][h - 1] == pytest.approx(10 * math.log10(4096 / wrong), rel=1e-5)
        assert scores["copy_last"]["moving_mse"][h - 1] == pytest.approx(1.0)  # every moving pixel wrong
    assert all(len(v) == 5 for p in scores.values() for v in p.values())
    targets = windows.stacks[:, 2, -1]  # horizon 1: the newest frame of each window's 3rd stack
    expected = 10 * math.log10(1 / ((mean - targets) ** 2).mean().item())
    assert scores["mean_frame"]["psnr"][0] == pytest.approx(expected, rel=1e-5)


def test_object_scores_follow_the_ball_through_the_rollout_windows():
    """Real Breakout: copying the last real frame shows the ball one frame on, not ten on;
    the mean frame never does. Boxes misaligned with their frames would break this."""
    arrays, _ = collect_game("BreakoutNoFrameskip-v4", 600, num_envs=1, seed=5, progress=False, num_workers=1)
    data = GameData(
        "BreakoutNoFrameskip-v4",
        **{k: arrays[k] for k in ("frames", "actions", "rewards")},
        episode_ends=arrays["episode_ends"],
        ram=arrays["ram"],
        manifest={},
        directory=Path("."),
    )
    cfg = EvaluationConfig(horizons=10, context=2, headline_horizons=[1, 10], window_stride=4)
    windows = cut_windows(data, 4, cfg.context, cfg.horizons, cfg.window_stride)
    assert windows.objects.ball.shape == (len(windows.stacks), 12, 4)
    scoring = object_scoring(data, cfg)
    assert 50 / 255 < scoring.typical_mass < 200 / 255
    model = WorldModel(VAE(), Dynamics()).eval()
    mean = torch.from_numpy(data.frames.mean(0) / 255.0).float()
    scores = rollout_scores(model, windows, cfg.context, mean, scoring)
    top = headline(scores, cfg.headline_horizons)
    assert top["ball_recall_h1_copy_last"] > 0.8
    assert top["ball_recall_h10_copy_last"] < 0.3
    assert top["false_ball_rate_h10_copy_last"] > top["false_ball_rate_h1_copy_last"]
    assert max(scores["mean_frame"]["ball_recall"]) < 0.1
    assert top["player_error_h1_copy_last"] < top["player_error_h10_copy_last"]


class ExactAutoencoder(torch.nn.Module):
    """Its latent is the stack itself: reconstructions are the true frames, so any difference
    between a rollout's scores and the reconstruction's comes from the rollout."""

    latent_dim = 4 * 64 * 64

    def encode(self, stacks: torch.Tensor) -> torch.Tensor:
        return stacks.flatten(1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.view(-1, 4, 64, 64)


class OracleDynamics(torch.nn.Module):
    """Steps to the true latents of the windows, `shift` frames ahead: a world model that knows
    the future, to check what each horizon's score is compared with. Its GRU state stands for
    the frame it is at: the first the context shows it, then K frames further each step."""

    latent_dim = ExactAutoencoder.latent_dim

    def __init__(self, truth: torch.Tensor, context: int, frames_per_step: int = 1, shift: int = 0):
        super().__init__()
        self.truth, self.shift, self.frames_per_step = truth, shift, frames_per_step
        self.first = (context - 1) % frames_per_step  # the first context stack the GRU steps from

    def step(self, latents, actions, hidden=None):
        assert actions.shape == (len(latents), self.frames_per_step) or self.frames_per_step == 1
        frame = (self.first if hidden is None else int(hidden)) + self.frames_per_step
        return self.truth[:, min(frame + self.shift, self.truth.shape[1] - 1)], torch.tensor(frame)


@pytest.mark.parametrize("frames_per_step", [1, 4])
def test_the_models_own_scores_at_each_horizon_are_those_of_the_frame_it_imagined_then(frames_per_step):
    """A world model that imagines the true future scores exactly as the reconstruction does at
    every horizon; one that runs a frame ahead does not (a scorer off by one would pass the one
    or fail the other). With four frames a step, each step's four new frames are scored at the
    four horizons they show."""
    game = "BreakoutNoFrameskip-v4"
    arrays, _ = collect_game(game, 900, num_envs=1, seed=5, progress=False, num_workers=1)
    data = GameData(game, **{k: arrays[k] for k in ("frames", "actions", "rewards", "episode_ends", "ram")},
                    manifest={}, directory=Path("."))  # fmt: skip
    cfg = EvaluationConfig(horizons=8, context=3, headline_horizons=[1, 8], window_stride=4)
    windows = cut_windows(data, 4, cfg.context, cfg.horizons, cfg.window_stride)
    vae = ExactAutoencoder()
    truth = vae.encode(windows.stacks.flatten(0, 1)).reshape(*windows.stacks.shape[:2], -1)
    mean = torch.from_numpy(data.frames.mean(0) / 255.0).float()
    scoring = object_scoring(data, cfg)
    for shift, should_match in ((0, True), (1, False)):
        dynamics = OracleDynamics(truth, cfg.context, frames_per_step, shift)
        model = WorldModel(vae, dynamics).eval()
        scores = rollout_scores(model, windows, cfg.context, mean, scoring)
        for metric in ("psnr", "moving_mse"):
            same = np.allclose(
                scores["model"][metric], scores["reconstruction"][metric], rtol=1e-5, atol=1e-6
            )
            assert same == should_match, (shift, metric)
        assert (np.asarray(scores["model"]["latent_mse"]) == 0).all() == should_match


def test_promotion_rule():
    assert should_promote(1.0, None)[0]
    assert should_promote(2.0, 1.0) == (True, "new score 2.0000 beats champion's 1.0000")
    promoted, reason = should_promote(0.5, 1.0)
    assert not promoted and "does not beat" in reason
    assert not should_promote(float("nan"), 1.0)[0]
    assert higher_is_better("ball_recall_h10_model") and not higher_is_better("player_error_h10_model")
    assert should_promote(0.5, 1.0, higher_better=False)[0], "a lower false-ball rate wins"


def test_evaluate_stage_writes_scores_plots_and_promotes(trained):
    report = run_evaluate(trained.params, ckpt.final_checkpoint_path(trained.params, "dynamics"))
    on_disk = json.loads((trained.root / "metrics/eval.json").read_text())
    assert set(on_disk["games"]) == set(trained.games)
    for game in trained.games:
        scores = on_disk["games"][game]
        assert {
            "psnr_h1_gain",
            "psnr_h5_gain",
            "psnr_h10_gain",
            "recon_gain_over_mean_frame",
            "ball_recall_h10_model",
            "ball_recall_h10_copy_last",
            "false_ball_rate_h10_model",
            "player_error_h10_model",
            "recon_ball_recall",
        } <= set(scores)
        # the event heads, scored on every held-out transition against the majority baseline
        data = load_game_data(trained.root / "data/heldout" / game)
        rows = stack_start_indices(data.episode_ends, trained.params.data.stack_size)
        rows = rows[~data.episode_ends[rows]]
        assert scores["reward_events"] == int(np.count_nonzero(data.rewards[rows]))
        assert scores["reward_majority_accuracy"] == pytest.approx(
            max(np.bincount(np.sign(data.rewards[rows]).astype(int) + 1)) / len(rows)
        )
        assert 0 <= scores["reward_accuracy"] <= 1 and scores["game_over_events"] == 0  # cut, never ended
        assert scores["game_over_majority_accuracy"] == 1.0
        tsv = (trained.root / f"plots/psnr_{game}.tsv").read_text().splitlines()
        assert tsv[0].split("\t") == ["horizon", "model", "copy_last", "mean_frame", "reconstruction"]
        assert len(tsv) == 1 + 10
        # the headline's mean ball recall is the mean of the model's recall over every horizon
        if "ball_recall_h10_model" in scores and game == "BreakoutNoFrameskip-v4":
            recall = (trained.root / f"plots/ball_recall_{game}.tsv").read_text().splitlines()[1:]
            model_recall = [float(line.split("\t")[1]) for line in recall]
            assert scores["ball_recall_mean_model"] == pytest.approx(np.nanmean(model_recall), abs=1e-5)
            # what the misses are: with the recall, the shares of the scored frames add up to one
            for h in (1, 5, 10):
                shares = [scores[f"ball_recall_h{h}_model"]] + [
                    scores[f"ball_{kind}_h{h}_model"] for kind in ("faded", "misplaced", "absent")
                ]
                assert sum(shares) == pytest.approx(1.0) or all(math.isnan(x) for x in shares)
    assert (trained.root / "plots/eval_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert on_disk["summary"]["psnr_h10_gain"] == pytest.approx(
        np.mean([on_disk["games"][g]["psnr_h10_gain"] for g in trained.games])
    )
    assert report["promotion"]["promoted"] is True
    assert tracking.alias_version(tracking.DYNAMICS_MODEL, "champion")["version"] == "1"


def test_the_default_promotion_never_prefers_a_version_that_draws_fewer_balls(trained, tmp_path):
    """The case that made the default: a version with more full-frame PSNR but fewer balls
    (psnr_h10_gain 4.70 with ball recall 0.84, against 4.67 with 0.91) must not be promoted."""
    raw = tiny_params_dict(tmp_path, trained.games)
    del raw["evaluation"]["promote_on"]
    params = load_params(write_params(tmp_path, raw))
    key = params.evaluation.promote_on
    assert key == EvaluationConfig().promote_on and "ball" in key
    final = ckpt.final_checkpoint_path(trained.params, "dynamics")
    run_ids = []
    for _ in range(3):
        with tracking.stage_run("dynamics", params) as run_id:
            tracking.register_checkpoint(tracking.DYNAMICS_MODEL, final, {})
            run_ids.append(run_id)
    champion = promote(params, {"mlflow_run_id": run_ids[0]}, {"psnr_h10_gain": 4.67, key: 0.91})
    assert champion["promoted"]
    sharper_frames = promote(params, {"mlflow_run_id": run_ids[1]}, {"psnr_h10_gain": 4.70, key: 0.84})
    assert not sharper_frames["promoted"]
    more_balls = promote(params, {"mlflow_run_id": run_ids[2]}, {"psnr_h10_gain": 4.60, key: 0.93})
    assert more_balls["promoted"]


def test_promotion_with_two_registered_versions(trained, tmp_path):
    params = load_params(write_params(tmp_path, tiny_params_dict(tmp_path, trained.games)))
    final = ckpt.final_checkpoint_path(trained.params, "dynamics")
    run_ids = []
    for _ in range(2):
        with tracking.stage_run("dynamics", params) as run_id:
            tracking.register_checkpoint(tracking.DYNAMICS_MODEL, final, {})
            run_ids.append(run_id)
    key = params.evaluation.promote_on
    first = promote(params, {"mlflow_run_id": run_ids[0]}, {key: 1.5})
    assert first["promoted"] and "first" in first["reason"]
    worse = promote(params, {"mlflow_run_id": run_ids[1]}, {key: 0.5})
    assert not worse["promoted"] and "does not beat champion's 1.5000" in worse["reason"]
    assert tracking.alias_version(tracking.DYNAMICS_MODEL, "champion")["version"] == "1"
    better = promote(params, {"mlflow_run_id": run_ids[1]}, {key: 2.5})
    assert better["promoted"]
    champion = tracking.alias_version(tracking.DYNAMICS_MODEL, "champion")
    assert champion["version"] == "2" and champion["tags"][f"eval.{key}"] == "2.5"
