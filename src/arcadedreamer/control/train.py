"""The controller stage: CMA-ES on dream returns only, then the real game decides.

World Models' recipe: a linear controller on [latent, GRU state], its weights searched by
CMA-ES, every candidate scored by its mean return over the same dream rollouts (common random
numbers: candidates differ by their weights, not by their luck). The real game is never
played during training; afterwards the final controller (the search distribution's mean) and
the random policy each play `eval_episodes` seeded real episodes, and the stage reports both
returns with 95% confidence intervals, and how much the dream flatters each policy (reward per
1 000 frames in the dream minus in the real game).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from arcadedreamer import tracking
from arcadedreamer.config import Params
from arcadedreamer.control.dream_env import DreamBatch, open_dream
from arcadedreamer.control.real_game import (
    constant_policy,
    difference_ci95,
    mean_and_ci95,
    play_episodes,
    random_policy,
)
from arcadedreamer.data.actions import minimal_action_names
from arcadedreamer.data.atari import minimal_action_set
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import atomic_open, atomic_write_json, replaced_together
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.controller import (
    Agent,
    LinearController,
    exploration_draws,
    explore,
    population_logits,
    sample_actions,
)
from arcadedreamer.progress import progress_bar

PER_FRAMES = 1000  # reward rates are given per this many frames


@torch.no_grad()
def dream_returns(
    batch: DreamBatch,
    weights: torch.Tensor | None,
    starts: np.ndarray,
    seed: int = 0,
    choice: str = "sample",
    epsilon: float = 0.0,
) -> dict:
    """Every row of `batch` dreams from its context start; candidate p (of P = len(weights))
    drives rows p·R … p·R+R-1, the R rollouts of every candidate drawing their actions (and
    their ε-exploration) with the same random numbers. `weights` None: the random policy drives
    every row.

    Returns per-row returns (B,) and frames lived (B,): a dream ends at game over or the horizon.
    """
    size = batch.size
    batch.reset_to(np.arange(size), starts)
    returns, frames = np.zeros(size), np.zeros(size, dtype=np.int64)
    alive = np.ones(size, dtype=bool)
    generator = torch.Generator().manual_seed(seed)
    population = 1 if weights is None else len(weights)
    rollouts, num_actions = size // population, len(batch.action_ids)
    for _ in range(batch.horizon):
        uniforms = torch.rand(rollouts, generator=generator)  # (R,): shared by the candidates
        if weights is None:
            actions = (uniforms * num_actions).long()
        else:
            width = weights.shape[1] // num_actions - 1  # the controller's inputs
            features = batch.features()[:, :width].reshape(population, rollouts, width)
            logits = population_logits(weights, features)  # (P, R, A)
            if choice == "sample":
                chosen = sample_actions(logits, uniforms.expand(population, -1))
            else:
                chosen = logits.argmax(-1)
            if epsilon > 0:
                draws, random_actions = exploration_draws(rollouts, num_actions, generator)
                chosen = explore(
                    chosen, epsilon, draws.expand(population, -1), random_actions.expand(population, -1)
                )
            actions = chosen.reshape(-1)
        rewards, terminated, _ = batch.step(actions)
        returns += np.where(alive, rewards, 0.0)
        frames += alive * batch.frames_per_step
        alive &= ~terminated
        if not alive.any():
            break
    return {"returns": returns, "frames": frames}


def world_model_lineage(game: str, model_path: Path, world_checkpoint: dict) -> dict[str, str]:
    """Tags naming the world model a policy dreamt in: its file, and its run and registered
    version when it has them."""
    world_run = world_checkpoint.get("mlflow_run_id")
    world_uri = tracking.model_uri_for_run(tracking.DYNAMICS_MODEL, world_run)
    lineage = {"game": game, "world_model.checkpoint": str(model_path)}
    lineage |= {"world_model.run_id": world_run} if world_run else {}
    lineage |= {"world_model.model_uri": world_uri} if world_uri else {}
    return lineage


def save_figure(fig, path: Path) -> Path:
    """A matplotlib figure written atomically as a PNG, then closed."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)
    return path


def reward_rate(returns: np.ndarray, frames: np.ndarray) -> float:
    """Reward per PER_FRAMES frames over a set of games (dreamt or played)."""
    return float(returns.sum() / max(frames.sum(), 1) * PER_FRAMES)


def real_games(params: Params, cfg, act, label: str, progress: bool) -> tuple[dict, dict, dict]:
    """A policy (`act`), the random policy and, when `cfg.constant_baselines`, each held action
    over the same seeded real games of `cfg.game`; `cfg` is the controller's or the agent's
    section (the same real-game keys). Returns the policy's and random's episodes and the
    scores both stages report: means, Welch's 95% intervals, the held actions, the seconds."""
    common = dict(
        episodes=cfg.eval_episodes,
        seed=cfg.eval_seed,
        max_frames=cfg.eval_max_frames,
        stack_size=params.data.stack_size,
        frame_size=params.data.frame_size,
        progress=progress,
    )
    started = time.perf_counter()
    real = play_episodes(cfg.game, act, label=f"{label} in the real game", **common)
    real_random, held_returns = baseline_games(
        cfg.game, cfg.epsilon, cfg.seed, cfg.constant_baselines, common
    )
    constants = best_held_action(held_returns, real["returns"]) if held_returns else {}
    eval_seconds = time.perf_counter() - started
    real_mean, real_ci = mean_and_ci95(real["returns"])
    random_mean, random_ci = mean_and_ci95(real_random["returns"])
    difference, difference_ci = difference_ci95(real["returns"], real_random["returns"])
    scores = {
        "real_return_mean": real_mean,
        "real_return_ci95": real_ci,
        "random_return_mean": random_mean,
        "random_return_ci95": random_ci,
        "real_minus_random": difference,
        "real_minus_random_ci95": difference_ci,
        "beats_random": bool(difference - difference_ci > 0),
        **constants,
        "real_frames_mean": float(real["frames"].mean()),
        "real_game_overs": int(real["game_over"].sum()),
        "epsilon": cfg.epsilon,
        "eval_episodes": cfg.eval_episodes,
        "eval_max_frames": cfg.eval_max_frames,
        "eval_seconds": eval_seconds,
        "real_returns": real["returns"].tolist(),
        "random_returns": real_random["returns"].tolist(),
    }
    return real, real_random, scores


def train_controller(params: Params, model_path: str | Path | None = None, progress: bool = True) -> dict:
    import cma

    cfg = params.controller
    model_path = Path(model_path) if model_path else ckpt.final_checkpoint_path(params, "dynamics")
    size = cfg.population * cfg.rollouts
    batch, _ = open_dream(cfg.game, model_path, params, "latent_and_state", cfg.horizon, cfg.contexts, size)
    world_checkpoint = ckpt.load_checkpoint(model_path, stage="dynamics")
    state_size = batch.model.dynamics.hidden_size if cfg.features == "latent_and_state" else 0
    controller = LinearController(batch.model.vae.latent_dim, state_size, len(batch.action_ids))
    dims = controller.num_parameters
    # cma: seed 0 means "from the clock", so the stage's seed is shifted by one
    options = {"popsize": cfg.population, "seed": cfg.seed + 1, "verbose": -9}
    search = cma.CMAEvolutionStrategy(np.zeros(dims), cfg.sigma, options)
    context_rng = np.random.default_rng(cfg.seed)
    print(
        f"controller: {dims} weights on the {cfg.features.replace('_', ' ')}, CMA-ES {cfg.population} candidates x {cfg.rollouts} dreams of "
        f"{cfg.horizon} frames ({batch.horizon} steps of {batch.frames_per_step}; {cfg.contexts} contexts, "
        f"ε {cfg.epsilon:g}), {cfg.generations} generations"
    )
    report_every = max(1, cfg.generations // 20)
    curve: list[dict[str, float]] = []
    description = (
        f"World Models controller for {cfg.game}: CMA-ES, {cfg.population} x {cfg.rollouts} dreams of "
        f"{cfg.horizon} frames, {cfg.generations} generations, in world model {model_path.name}; scored "
        f"in {cfg.eval_episodes} real games"
    )
    with tracking.stage_run("controller", params, description=description) as run_id:
        lineage = world_model_lineage(cfg.game, model_path, world_checkpoint)
        tracking.set_tags(lineage)
        started = time.perf_counter()
        with progress_bar(cfg.generations, "controller generations", "gen", progress) as bar:
            for generation in range(1, cfg.generations + 1):
                candidates = np.asarray(search.ask())
                starts = np.tile(context_rng.choice(batch.contexts.starts, cfg.rollouts), cfg.population)
                weights = torch.from_numpy(candidates).float()
                scores = dream_returns(batch, weights, starts, generation, cfg.action_choice, cfg.epsilon)
                scores = scores["returns"].reshape(cfg.population, cfg.rollouts)
                means = scores.mean(axis=1)
                if not np.isfinite(means).all():
                    raise UserError("controller: a dream return is not finite; retrain the world model")
                search.tell(list(candidates), list(-means))
                point = {
                    "population_dream_return": float(means.mean()),
                    "best_candidate_dream_return": float(means.max()),
                    "cma_sigma": float(search.sigma),
                }
                curve.append(point)
                tracking.log_metrics(point, step=generation)
                bar.update(1)
                if generation % report_every == 0 or generation == cfg.generations:
                    print(
                        f"controller generation {generation}/{cfg.generations}: dream return mean "
                        f"{point['population_dream_return']:+.3f}, best "
                        f"{point['best_candidate_dream_return']:+.3f}, "
                        f"sigma {point['cma_sigma']:.3g}",
                        flush=True,
                    )
        train_seconds = time.perf_counter() - started
        controller.load_flat(torch.from_numpy(np.asarray(search.result.xfavorite)).float())
        summary = score_controller(params, batch, controller, curve, train_seconds, progress)
        # the checkpoint, its plot and the metrics file are put in place together, or none of them
        with replaced_together(Path(cfg.out_dir), Path(cfg.metrics_file)) as (out_dir, metrics_file):
            save_controller(params, controller, batch, world_checkpoint, model_path, summary, run_id, out_dir)
            plot_returns(curve, summary, out_dir / "returns.png")
            atomic_write_json(metrics_file, summary)
        path = Path(cfg.out_dir) / "controller.pt"
        tracking.log_metrics({k: v for k, v in summary.items() if isinstance(v, float)})
        tracking.log_artifact(Path(cfg.out_dir) / "returns.png", "plots")
        tracking.log_artifact(cfg.metrics_file)
        if params.tracking.register_models:
            data = {"data_hash": str(world_checkpoint.get("data_hash", ""))}
            version = tracking.register_checkpoint(
                tracking.CONTROLLER_MODEL, path, {**lineage, **data, "run_id": run_id}, description
            )
            summary["registered_version"] = version
            print(f"registered {tracking.CONTROLLER_MODEL} version {version}")
    return summary


def score_controller(
    params: Params,
    batch: DreamBatch,
    controller: LinearController,
    curve: list[dict[str, float]],
    train_seconds: float,
    progress: bool,
) -> dict:
    """The final controller and the random policy, in the dream and in the real game."""
    cfg = params.controller
    starts = np.random.default_rng(cfg.seed + 1).choice(batch.contexts.starts, batch.size)
    flat = torch.nn.utils.parameters_to_vector(controller.parameters()).detach()
    dream = dream_returns(batch, flat[None].contiguous(), starts, cfg.seed, cfg.action_choice, cfg.epsilon)
    dream_random = dream_returns(batch, None, starts, seed=cfg.seed)
    agent = Agent(
        controller, batch.model, tuple(batch.action_ids.tolist()), cfg.action_choice, cfg.seed, cfg.epsilon
    )
    real, real_random, scores = real_games(params, cfg, agent.act, "controller", progress)
    longer, longer_ci = difference_ci95(real["frames"], real_random["frames"])  # frames a game lasts
    rates = {
        "dream_reward_rate": reward_rate(dream["returns"], dream["frames"]),
        "dream_random_reward_rate": reward_rate(dream_random["returns"], dream_random["frames"]),
        "real_reward_rate": reward_rate(real["returns"], real["frames"]),
        "random_reward_rate": reward_rate(real_random["returns"], real_random["frames"]),
    }
    summary = {
        "game": cfg.game,
        "dream_return_mean": float(dream["returns"].mean()),
        "dream_random_return_mean": float(dream_random["returns"].mean()),
        "dream_return_first_generation": curve[0]["population_dream_return"],
        "dream_return_last_generation": curve[-1]["population_dream_return"],
        **scores,
        **rates,
        # how much the dream flatters a policy: its reward per 1 000 frames dreamt minus played
        "dream_real_gap": rates["dream_reward_rate"] - rates["real_reward_rate"],
        "dream_real_gap_random": rates["dream_random_reward_rate"] - rates["random_reward_rate"],
        "random_frames_mean": float(real_random["frames"].mean()),
        "real_minus_random_frames": longer,
        "real_minus_random_frames_ci95": longer_ci,
        "random_game_overs": int(real_random["game_over"].sum()),
        "train_seconds": train_seconds,
    }
    real_mean, real_ci = scores["real_return_mean"], scores["real_return_ci95"]
    random_mean, random_ci = scores["random_return_mean"], scores["random_return_ci95"]
    difference, difference_ci = scores["real_minus_random"], scores["real_minus_random_ci95"]
    verdict = "beats" if summary["beats_random"] else "does not beat"
    print(
        f"controller in the real game: {real_mean:+.2f} ± {real_ci:.2f} vs random {random_mean:+.2f} ± "
        f"{random_ci:.2f} over {cfg.eval_episodes} episodes (difference {difference:+.2f} ± "
        f"{difference_ci:.2f}: it {verdict} random); reward per {PER_FRAMES} frames in the dream "
        f"{rates['dream_reward_rate']:+.2f}, in the real game {rates['real_reward_rate']:+.2f}; its episodes "
        f"last {real['frames'].mean():.0f} frames, random's {real_random['frames'].mean():.0f} "
        f"(difference {longer:+.0f} ± {longer_ci:.0f})"
    )
    if "best_constant_action" in summary:
        verdict = "beats" if summary["beats_best_constant"] else "does not beat"
        print(
            f"the best action held every frame (with ε), {summary['best_constant_action']}: "
            f"{summary['best_constant_return_mean']:+.2f} ± {summary['best_constant_return_ci95']:.2f} "
            f"(controller minus it {summary['real_minus_best_constant']:+.2f} ± "
            f"{summary['real_minus_best_constant_ci95']:.2f}: it {verdict} it)"
        )
    return summary


# The baselines' games follow from these settings alone, never from the policy scored, so an
# agent's rounds (one process) play them once, not once a round (210 whole games in Pong)
_BASELINE_GAMES: dict[tuple, tuple[dict, dict[str, np.ndarray]]] = {}


def baseline_games(
    game: str, epsilon: float, seed: int, held: bool, common: dict
) -> tuple[dict, dict[str, np.ndarray]]:
    """The random policy's episodes and, when `held`, the returns of each of the game's actions
    held every frame with the policy's ε (by name), over the seeded games `common` names."""
    key = (game, epsilon, seed, held, tuple(sorted((k, v) for k, v in common.items() if k != "progress")))
    if key in _BASELINE_GAMES:
        print("random policy and held actions: the same seeded games as before, read back, not replayed")
        return _BASELINE_GAMES[key]
    random_games = play_episodes(
        game, random_policy(game, seed), label="random policy in the real game", **common
    )
    held_returns: dict[str, np.ndarray] = {}
    if held:
        for action_id, name in zip(minimal_action_set(game), minimal_action_names(game), strict=True):
            policy = constant_policy(action_id, game, epsilon, seed)
            label = f"{name} held (with ε) in the real game"
            held_returns[name] = play_episodes(game, policy, label=label, **common)["returns"]
    _BASELINE_GAMES[key] = (random_games, held_returns)
    return _BASELINE_GAMES[key]


def best_held_action(held_returns: dict[str, np.ndarray], policy_returns: np.ndarray) -> dict:
    """The held action with the highest mean (the first of equals) against the policy's returns."""
    means = {name: float(returns.mean()) for name, returns in held_returns.items()}
    name = max(means, key=means.get)
    mean, ci = mean_and_ci95(held_returns[name])
    difference, difference_ci = difference_ci95(policy_returns, held_returns[name])
    return {
        "constant_return_means": means,
        "best_constant_action": name,
        "best_constant_return_mean": mean,
        "best_constant_return_ci95": ci,
        "real_minus_best_constant": difference,
        "real_minus_best_constant_ci95": difference_ci,
        "beats_best_constant": bool(difference - difference_ci > 0),
    }


def save_controller(
    params: Params,
    controller: LinearController,
    batch: DreamBatch,
    world_checkpoint: dict,
    model_path: Path,
    summary: dict,
    run_id: str,
    out_dir: Path,
) -> Path:
    """A controller checkpoint holds the world model it dreams with: it is a whole agent."""
    cfg = params.controller
    play = {"game": cfg.game, "action_ids": [int(a) for a in batch.action_ids],
            "action_choice": cfg.action_choice, "epsilon": float(cfg.epsilon)}  # fmt: skip
    return ckpt.save_policy(
        out_dir / "controller.pt",
        "controller",
        controller.state_dict(),
        ckpt.controller_arch(controller),
        play,
        world_checkpoint,
        model_path,
        summary,
        run_id,
    )


def plot_returns(curve: list[dict[str, float]], summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    generations = range(1, len(curve) + 1)
    left.plot(generations, [p["population_dream_return"] for p in curve], label="population mean")
    left.plot(generations, [p["best_candidate_dream_return"] for p in curve], label="best candidate")
    left.axhline(summary["dream_random_return_mean"], color="gray", linestyle=":", label="random policy")
    left.set_xlabel("CMA-ES generation")
    left.set_ylabel("dream return")
    left.set_title("In the dream")
    left.legend(fontsize=8)
    names = ["controller", "random"]
    means = [summary["real_return_mean"], summary["random_return_mean"]]
    errors = [summary["real_return_ci95"], summary["random_return_ci95"]]
    if "best_constant_action" in summary:
        names.append(f"{summary['best_constant_action']} held")
        means.append(summary["best_constant_return_mean"])
        errors.append(summary["best_constant_return_ci95"])
    right.bar(names, means, yerr=errors, capsize=6, color=["tab:blue", "tab:gray", "tab:olive"][: len(names)])
    right.set_title(f"Real game ({summary['eval_episodes']} episodes, 95% CI)")
    right.set_ylabel("return")
    fig.suptitle(summary["game"].removesuffix("NoFrameskip-v4"))
    fig.tight_layout()
    return save_figure(fig, path)
