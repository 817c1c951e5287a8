"""The agent stage: an actor-critic trained in the dream only, then the real game decides.

Each update imagines `agent.dreams` rollouts of `agent.horizon` frames in one batch, each
started from a real context (the GRU warmed up on recorded frames, as the controller's dreams
are), with the actor choosing every action; the world model's event heads give the expected
reward of each step and the probability that the game goes on. The critic learns the
λ-returns of those rollouts (bootstrapped by its slow copy) and the actor the advantages over
the critic, normalised by the returns' spread (models/agent.py). The world model stays frozen.

Afterwards the agent plays the same seeded real episodes as the controller, with ε, beside the
random policy, each action held and, when the controller stage has scored on the same
episodes, the controller.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from arcadedreamer import tracking
from arcadedreamer.config import Params
from arcadedreamer.control import rounds
from arcadedreamer.control.dream_env import DreamBatch, open_dream
from arcadedreamer.control.real_game import difference_ci95, mean_and_ci95, play_episodes
from arcadedreamer.control.train import PER_FRAMES, real_games, reward_rate, save_figure, world_model_lineage
from arcadedreamer.data.objects import lives_lost
from arcadedreamer.data.preprocessing import episode_ids, stack_start_indices
from arcadedreamer.data.storage import (
    RECOLLECT,
    REGENERATE_HELDOUT,
    load_recordings,
    recording_manifest,
    save_game_data,
)
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import atomic_write_json, replaced_together
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.agent import (
    Actor,
    Critic,
    LifeLossHead,
    ReturnScale,
    actor_loss,
    critic_loss,
    lambda_returns,
    step_weights,
    update_slow,
)
from arcadedreamer.models.controller import Agent, sample_actions
from arcadedreamer.models.events import roc_auc
from arcadedreamer.progress import progress_bar


@torch.no_grad()
def imagine(
    batch: DreamBatch,
    actor: Actor,
    starts: np.ndarray,
    generator: torch.Generator,
    life_loss: LifeLossHead | None = None,
) -> dict:
    """Every dream of `batch` restarted at its context start (B,), then `batch.horizon` steps
    with the actor's sampled actions. Returns features (T + 1, B, F), actions (T, B), rewards
    (T, B) and continuation probabilities (T, B): the game goes on, and (with `life_loss`) no
    life was lost."""
    batch.reset_to(np.arange(batch.size), starts)
    latent_dim = batch.model.vae.latent_dim
    features, actions, rewards, continues = [batch.features()], [], [], []
    for _ in range(batch.horizon):
        logits = actor(features[-1][:, :latent_dim], features[-1][:, latent_dim:])
        chosen = sample_actions(logits, torch.rand(batch.size, generator=generator))
        reward, game_over = batch.advance(chosen)
        features.append(batch.features())
        actions.append(chosen)
        rewards.append(reward.float())
        going_on = 1.0 - game_over.float()
        if life_loss is not None:
            going_on = going_on * (1.0 - life_loss(batch.hidden[-1]))
        continues.append(going_on)
    return {
        "features": torch.stack(features),
        "actions": torch.stack(actions),
        "rewards": torch.stack(rewards),
        "continues": torch.stack(continues),
    }


def fit_life_loss(
    batch: DreamBatch, params: Params, extra_recordings: Sequence[Path] = ()
) -> tuple[LifeLossHead | None, dict]:
    """A life lost as the end of a dream: the GRU is fed the recording the dreams start from
    (real latents and actions, from each episode's first full stack), and a logistic head on
    its state learns which steps lost a life by the RAM's lives counter; its AUC is measured on
    the last tenth of the episodes (at least one), left out. None for a game without lives, or `agent.life_loss` off."""
    cfg = params.agent
    if not cfg.life_loss:
        return None, {}
    training = cfg.contexts == "training"
    root = params.data.out_dir if training else params.heldout.out_dir
    roots = [root, *extra_recordings] if training else [root]  # the recordings the contexts came from
    data = load_recordings(roots, cfg.game, rebuild=RECOLLECT if training else REGENERATE_HELDOUT)
    ends = np.asarray(data.episode_ends, dtype=bool)
    lost = lives_lost(cfg.game, data.ram, ends)
    if lost is None:
        return None, {}
    latents, actions = batch.contexts.latents, batch.contexts.actions
    steps, features = batch.model.recorded_states(
        latents, actions, ends, stack_start_indices(ends, params.data.stack_size)
    )  # (S, K) frames of each step, (S, H) states
    labels = torch.from_numpy(lost[steps].any(-1)).float()  # a life lost in one of the step's frames
    ids = episode_ids(ends)[steps[:, 0]]
    episodes = int(ids.max()) + 1 if len(ids) else 0
    held_out = torch.from_numpy(ids >= episodes - max(1, episodes // 10))  # the last tenth, at least one
    report = {"life_losses": int(labels.sum()), "life_loss_steps": len(labels)}
    if labels[~held_out].sum() < 1 or labels[held_out].sum() < 1:
        print(
            f"agent: {report['life_losses']} lives lost in the recording: too few to learn when a dream ends"
        )
        return None, report
    torch.manual_seed(cfg.seed)
    head = LifeLossHead(batch.model.dynamics.hidden_size)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01)
    for _ in range(300):  # full batch: the recording's states fit in memory
        loss = torch.nn.functional.binary_cross_entropy(head(features[~held_out]), labels[~held_out])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        report["life_loss_auc"] = roc_auc(head(features[held_out]), labels[held_out])
    print(
        f"agent: a lost life ends a dream: {report['life_losses']} lives lost in {len(labels)} recorded steps, "
        f"AUC {report['life_loss_auc']:.2f} on the episodes left out"
    )
    return head.eval().requires_grad_(False), report


class Learner:
    """The actor, the critic, its slow copy, their optimisers and the return scale."""

    def __init__(
        self, params: Params, latent_dim: int, state_size: int, num_actions: int, frames_per_step: int = 1
    ):
        cfg = self.cfg = params.agent
        self.discount = cfg.discount**frames_per_step  # γ is per frame; a dream step is K frames
        self.frames_per_step = frames_per_step
        torch.manual_seed(cfg.seed)
        self.latent_dim = latent_dim
        self.actor = Actor(latent_dim, state_size, num_actions, cfg.units, cfg.layers)
        self.critic = Critic(latent_dim + state_size, cfg.units, cfg.layers)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, eps=1e-5)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, eps=1e-5)
        self.scale = ReturnScale(cfg.return_scale_decay)

    def update(self, rollout: dict) -> dict[str, float]:
        cfg, features = self.cfg, rollout["features"]
        with torch.no_grad():
            bootstrap = self.slow_critic(features)  # (T + 1, B)
        targets = lambda_returns(
            rollout["rewards"], rollout["continues"], bootstrap, self.discount, cfg.return_lambda
        )
        weights = step_weights(rollout["continues"], self.discount)
        values = self.critic(features[:-1])  # (T, B)
        value_loss = critic_loss(values, targets, weights)
        scale = self.scale.update(targets)
        advantages = (targets - values.detach()) / scale
        logits = self.actor(features[:-1, :, : self.latent_dim], features[:-1, :, self.latent_dim :])
        policy_loss, entropy = actor_loss(logits, rollout["actions"], advantages, weights, cfg.entropy_scale)
        for loss, net, optimizer in (
            (value_loss, self.critic, self.critic_optimizer),
            (policy_loss, self.actor, self.actor_optimizer),
        ):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            optimizer.step()
        update_slow(self.slow_critic, self.critic, cfg.slow_critic_fraction)
        losses = {"actor_loss": policy_loss.item(), "critic_loss": value_loss.item()}
        if not all(np.isfinite(list(losses.values()))):
            raise UserError(
                "agent: a loss is not finite; lower agent.actor_lr / agent.critic_lr or retrain the world model"
            )
        return {
            **losses,
            "entropy": entropy.item(),
            "return_scale": scale,
            "dream_value": float(targets[0].mean()),
            # a step's reward is its K frames' reward
            "dream_reward_rate": float(rollout["rewards"].mean()) / self.frames_per_step * PER_FRAMES,
        }


# trains a world model further: (params, progress=, extra_data=, start_from=) → its summary.
# The dynamics stage's train_dynamics, handed in by the CLI: control/ sits beside training/.
FineTune = Callable[..., dict]


def train_agent(
    params: Params,
    model_path: str | Path | None = None,
    progress: bool = True,
    fine_tune: FineTune | None = None,
) -> dict:
    """Round 0 in the dream of `model_path`, then `agent.rounds` rounds of real play (rounds.py),
    each fine-tuning the world model with `fine_tune`; finished rounds with the same settings
    are read back. Writes the last round's agent, the report of every round and their figure."""
    cfg = params.agent
    if cfg.rounds and fine_tune is None:
        raise ValueError("agent.rounds > 0 needs fine_tune (the dynamics stage's train_dynamics)")
    model_path = Path(model_path) if model_path else ckpt.final_checkpoint_path(params, "dynamics")
    ckpt.load_checkpoint(model_path, stage="dynamics")  # a missing or corrupt model fails before any round
    reports: list[dict] = []
    world_path, recordings = model_path, []
    for index in range(cfg.rounds + 1):
        folder = rounds.round_dir(params, index)
        key = rounds.fingerprint(params, model_path, index)
        if index > 0:
            recordings.append(rounds.data_dir(folder))
        summary = rounds.finished(folder, key)
        if summary is not None:
            print(f"agent round {index}: finished before with these settings ({folder}); read back")
        else:
            summary = run_round(
                params, index, folder, key, world_path, recordings, reports, fine_tune, progress
            )
        reports.append(summary)
        if index > 0:
            world_path = rounds.world_model_path(params, folder)
    final = rounds.round_dir(params, cfg.rounds)
    summary = {**reports[-1], "rounds": cfg.rounds, "round_scores": [round_score(r) for r in reports]}
    with replaced_together(
        Path(cfg.out_dir) / "agent.pt", Path(cfg.out_dir) / "returns.png", Path(cfg.metrics_file)
    ) as (agent_file, figure, metrics_file):
        shutil.copyfile(final / rounds.POLICY_FILE, agent_file)
        shutil.copyfile(final / "returns.png", figure)  # the last round's: every round's score on it
        atomic_write_json(metrics_file, summary)
    if params.tracking.register_models:
        world_checkpoint = ckpt.load_checkpoint(world_path, stage="dynamics")
        lineage = world_model_lineage(cfg.game, world_path, world_checkpoint)
        data = {"data_hash": str(world_checkpoint.get("data_hash", ""))}
        version = tracking.register_checkpoint(
            tracking.AGENT_MODEL,
            Path(cfg.out_dir) / "agent.pt",
            {**lineage, **data, "run_id": summary["run_id"]},
            summary["description"],
        )
        summary["registered_version"] = version
        print(f"registered {tracking.AGENT_MODEL} version {version}")
    return summary


def round_score(report: dict) -> dict:
    """A round's line in the report: its real score and how much its dream flatters it."""
    keys = ("round", "real_return_mean", "real_return_ci95", "dream_reward_rate", "real_reward_rate",
            "dream_real_ratio", "data_hash", "train_seconds", "round_seconds")  # fmt: skip
    return {k: report[k] for k in keys if k in report}


def run_round(
    params: Params,
    index: int,
    folder: Path,
    key: str,
    world_path: Path,
    recordings: list[Path],
    earlier: list[dict],
    fine_tune: FineTune | None,
    progress: bool,
) -> dict:
    """One round, staged and then renamed into `folder`: the real games it adds and the world
    model fine-tuned on them (round ≥ 1), the agent's updates in that dream, its real score."""
    cfg = params.agent
    started = time.perf_counter()
    previous = rounds.round_dir(params, index - 1) / rounds.POLICY_FILE if index > 0 else None
    with replaced_together(folder) as (staging,):
        if index > 0:
            print(f"agent round {index}/{cfg.rounds}: the agent plays {cfg.round_episodes} real games")
            record_games(params, index, previous, rounds.data_dir(staging), progress)
            extra = [*recordings[:-1], rounds.data_dir(staging)]
            train_further(params, fine_tune, world_path, extra, staging, progress)
            world_path = rounds.world_model_path(params, staging)
        else:
            extra = []
        summary = train_round(params, index, world_path, extra, previous, staging, earlier, progress)
        summary |= {"round": index, "round_seconds": time.perf_counter() - started}
        rounds.mark_finished(staging, key, summary)
    return summary


def record_games(params: Params, index: int, policy_file: Path, out_root: Path, progress: bool) -> None:
    """The last round's agent (with ε) plays whole real games, recorded in collect's layout."""
    cfg = params.agent
    player, _ = ckpt.load_player(policy_file, cfg.seed + index)
    seed = cfg.round_seed + 1000 * index
    played = play_episodes(
        cfg.game,
        player.act,
        cfg.round_episodes,
        seed,
        cfg.eval_max_frames,
        params.data.stack_size,
        params.data.frame_size,
        label=f"round {index}: the agent's games",
        progress=progress,
        record=True,
    )
    arrays = played["recording"]
    stream_rows = [
        [int(start), int(length), seed + i]
        for i, (start, length) in enumerate(zip(episode_starts(played["frames"]), played["frames"] + 1))
    ]
    manifest = recording_manifest(
        cfg.game,
        arrays,
        seed=seed,
        frame_size=params.data.frame_size,
        policy=f"the agent of round {index - 1} ({policy_file.name}), ε {cfg.epsilon:g}",
        max_episode_frames=cfg.eval_max_frames,
        stream_rows=stream_rows,
        cut_rows=[],  # whole games: an episode ends at a game over or at max_episode_frames
    )
    save_game_data(out_root / cfg.game, arrays, manifest)
    print(
        f"round {index}: {manifest['episodes']} games, {manifest['frames']} frames, scoring "
        f"{played['returns'].mean():+.2f} a game"
    )


def episode_starts(lengths: np.ndarray) -> np.ndarray:
    """Row of each recorded episode's first frame; an episode of n steps holds n + 1 rows."""
    return np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)


def train_further(
    params: Params, fine_tune: FineTune, world_path: Path, recordings: list[Path], out: Path, progress: bool
) -> None:
    """The world model trained on for agent.round_dynamics_epochs on the collected data and the
    rounds' recordings (its VAE frozen), checkpoints and report under `out`; registered as a
    version of arcadedreamer-dynamics when the pipeline registers models (never promoted: that
    is the evaluate stage's)."""
    settings = params.model_dump()
    settings["dynamics"]["epochs"] = params.agent.round_dynamics_epochs
    settings["training"] |= {
        "checkpoint_dir": str(out / "checkpoints"),
        "metrics_dir": str(out / "metrics"),
        "checkpoint_every": params.agent.round_dynamics_epochs,  # the last epoch's alone
    }
    fine_tune(
        Params.model_validate(settings), progress=progress, extra_data=recordings, start_from=world_path
    )


def train_round(
    params: Params,
    index: int,
    world_path: Path,
    recordings: list[Path],
    previous: Path | None,
    out: Path,
    earlier: list[dict],
    progress: bool,
) -> dict:
    """The agent's updates in the dream of `world_path` (round 0: `agent.updates` from scratch;
    later rounds `agent.round_updates` from the last round's state), scored in the real game;
    one MLflow run, with the real score of this and every `earlier` round."""
    cfg = params.agent
    batch, _ = open_dream(
        cfg.game, world_path, params, "latent_and_state", cfg.horizon, cfg.contexts, cfg.dreams, recordings
    )
    world_checkpoint = ckpt.load_checkpoint(world_path, stage="dynamics")
    latent_dim, state_size = batch.model.vae.latent_dim, batch.model.dynamics.hidden_size
    learner = Learner(params, latent_dim, state_size, len(batch.action_ids), batch.frames_per_step)
    if previous is not None:
        rounds.load_learner(previous, learner)
    updates = cfg.round_updates if index > 0 else cfg.updates
    context_rng = np.random.default_rng([cfg.seed, index])
    generator = rounds.round_generator(cfg.seed, index)
    name = f"agent round {index}" if cfg.rounds else "agent"
    print(
        f"{name}: actor-critic ({cfg.layers}×{cfg.units}) on [latent, GRU state], {updates} "
        f"updates of {cfg.dreams} dreams × {cfg.horizon} frames ({cfg.contexts} contexts), γ {cfg.discount:g}, "
        f"λ {cfg.return_lambda:g}"
    )
    description = (
        f"Actor-critic for {cfg.game}, round {index} of {cfg.rounds}, trained in the dream of world model "
        f"{world_path.name}: {updates} updates of {cfg.dreams} dreams x {cfg.horizon} frames; scored in "
        f"{cfg.eval_episodes} real games"
    )
    report_every = max(1, updates // 20)
    curve: list[dict[str, float]] = []
    # where the round's world model will lie once the round's folder is renamed into place
    shown_path = rounds.world_model_path(params, rounds.round_dir(params, index)) if index > 0 else world_path
    with tracking.stage_run("agent", params, description=description) as run_id:
        lineage = world_model_lineage(cfg.game, shown_path, world_checkpoint)
        data_hash = str(world_checkpoint.get("data_hash", ""))
        tracking.set_tags({**lineage, "agent.round": str(index), "data_hash": data_hash})
        started = time.perf_counter()
        life_loss, life_report = fit_life_loss(batch, params, recordings)
        with progress_bar(updates, f"{name} updates", "update", progress) as bar:
            for update in range(1, updates + 1):
                starts = context_rng.choice(batch.contexts.starts, batch.size)
                point = learner.update(imagine(batch, learner.actor, starts, generator, life_loss))
                curve.append(point)
                bar.update(1)
                if update % report_every == 0 or update == updates:
                    tracking.log_metrics(point, step=update)
                    print(
                        f"{name} update {update}/{updates}: dream value {point['dream_value']:+.3f}, "
                        f"reward per {PER_FRAMES} dreamt frames {point['dream_reward_rate']:+.2f}, entropy "
                        f"{point['entropy']:.3f}",
                        flush=True,
                    )
        train_seconds = time.perf_counter() - started
        summary = score_agent(params, batch, learner.actor, curve, train_seconds, progress) | life_report
        summary |= {"run_id": run_id, "description": description, "data_hash": data_hash}
        save_agent(params, learner, batch, world_checkpoint, shown_path, summary, run_id, out)
        by_round = [round_score(r) for r in earlier] + [round_score({**summary, "round": index})]
        plot_agent(curve, {**summary, "round": index, "round_scores": by_round}, out / "returns.png")
        tracking.log_metrics({k: v for k, v in summary.items() if isinstance(v, float)})
        for score in by_round:  # the run's chart of the real score round by round
            tracking.log_metrics({"real_return_by_round": score["real_return_mean"]}, step=score["round"])
        tracking.log_artifact(out / "returns.png", "plots")
    return summary


@torch.no_grad()
def dream_rate(batch: DreamBatch, actor: Actor | None, starts: np.ndarray, seed: int) -> float:
    """Reward per 1 000 dreamt frames of the actor (None: the random policy), each dream ending
    at a predicted game over or the horizon, as the controller's dream rates are counted."""
    generator = torch.Generator().manual_seed(seed)
    batch.reset_to(np.arange(batch.size), starts)
    latent_dim, actions = batch.model.vae.latent_dim, len(batch.action_ids)
    alive = torch.ones(batch.size, dtype=torch.bool)
    total, frames = 0.0, 0
    for _ in range(batch.horizon):
        if actor is None:
            chosen = torch.randint(actions, (batch.size,), generator=generator)
        else:
            features = batch.features()
            logits = actor(features[:, :latent_dim], features[:, latent_dim:])
            chosen = sample_actions(logits, torch.rand(batch.size, generator=generator))
        rewards, game_over = batch.advance(chosen)
        total += float(rewards[alive].sum())
        frames += int(alive.sum()) * batch.frames_per_step
        alive &= game_over <= 0.5
        if not alive.any():
            break
    return total / max(frames, 1) * PER_FRAMES


def controller_returns(params: Params) -> np.ndarray | None:
    """The controller's real returns, when its stage scored it on this agent's very episodes."""
    path = Path(params.controller.metrics_file)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (
        report.get("game") == params.agent.game
        and params.controller.eval_seed == params.agent.eval_seed
        and params.controller.eval_max_frames == params.agent.eval_max_frames
        and report.get("eval_episodes") == params.agent.eval_episodes
        and report.get("epsilon") == params.agent.epsilon
    )
    returns = report.get("real_returns")
    return np.asarray(returns, dtype=float) if same and isinstance(returns, list) else None


def score_agent(
    params: Params,
    batch: DreamBatch,
    actor: Actor,
    curve: list[dict[str, float]],
    train_seconds: float,
    progress: bool,
) -> dict:
    """The agent, the random policy, each held action and the controller in the real game; how
    much the dream flatters the agent (reward per 1 000 frames dreamt over played)."""
    cfg = params.agent
    starts = np.random.default_rng(cfg.seed + 1).choice(batch.contexts.starts, batch.size)
    dreamt = dream_rate(batch, actor, starts, cfg.seed)
    dreamt_random = dream_rate(batch, None, starts, cfg.seed)
    player = Agent(actor, batch.model, tuple(batch.action_ids.tolist()), "sample", cfg.seed, cfg.epsilon)
    real, _, scores = real_games(params, cfg, player.act, "agent", progress)
    played = reward_rate(real["returns"], real["frames"])
    summary = {
        "game": cfg.game,
        **scores,
        "dream_reward_rate": dreamt,
        "dream_random_reward_rate": dreamt_random,
        "real_reward_rate": played,
        # the dream's flattery: reward per 1 000 frames dreamt over played (issue target: ≤ 2)
        "dream_real_ratio": dreamt / played if played > 0 else float("nan"),
        "dream_value_first_update": curve[0]["dream_value"],
        "dream_value_last_update": curve[-1]["dream_value"],
        "train_seconds": train_seconds,
    }
    controller = controller_returns(params)
    if controller is not None:
        mean, ci = mean_and_ci95(controller)
        versus, versus_ci = difference_ci95(real["returns"], controller)
        summary |= {
            "controller_return_mean": mean,
            "controller_return_ci95": ci,
            "real_minus_controller": versus,
            "real_minus_controller_ci95": versus_ci,
            "beats_controller": bool(versus - versus_ci > 0),
        }
    verdict = "beats" if summary["beats_random"] else "does not beat"
    print(
        f"agent in the real game: {summary['real_return_mean']:+.2f} ± {summary['real_return_ci95']:.2f} vs "
        f"random {summary['random_return_mean']:+.2f} ± {summary['random_return_ci95']:.2f} "
        f"over {cfg.eval_episodes} episodes (it {verdict} random); reward per {PER_FRAMES} frames in the dream "
        f"{dreamt:+.2f}, in the real game {played:+.2f}"
    )
    for name, key in (("the best held action", "best_constant"), ("the controller", "controller")):
        if f"{key}_return_mean" in summary:
            verdict = "beats" if summary[f"beats_{key}"] else "does not beat"
            print(
                f"{name}: {summary[f'{key}_return_mean']:+.2f} ± {summary[f'{key}_return_ci95']:.2f} (agent minus it "
                f"{summary[f'real_minus_{key}']:+.2f} ± {summary[f'real_minus_{key}_ci95']:.2f}: it {verdict} it)"
            )
    return summary


def save_agent(
    params: Params,
    learner: Learner,
    batch: DreamBatch,
    world_checkpoint: dict,
    model_path: Path,
    summary: dict,
    run_id: str,
    out_dir: Path,
) -> Path:
    """Like a controller checkpoint, the agent holds the world model it dreamt with (and its
    critics, optimisers and return scale, for the next round to go on from)."""
    cfg = params.agent
    play = {"game": cfg.game, "action_ids": [int(a) for a in batch.action_ids], "action_choice": "sample",
            "epsilon": float(cfg.epsilon)}  # fmt: skip
    return ckpt.save_policy(
        out_dir / "agent.pt",
        "agent",
        learner.actor.state_dict(),
        ckpt.policy_arch(learner.actor),
        play,
        world_checkpoint,
        model_path,
        summary,
        run_id,
        **rounds.learner_state(learner),
    )


def plot_agent(curve: list[dict[str, float]], summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_round = summary.get("round_scores", [])
    panels = 3 if len(per_round) > 1 else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.2))
    left, right = axes[0], axes[1]
    updates = range(1, len(curve) + 1)
    left.plot(updates, [p["dream_reward_rate"] for p in curve], label="agent")
    left.axhline(summary["dream_random_reward_rate"], color="gray", linestyle=":", label="random policy")
    left.set_xlabel("update")
    left.set_ylabel(f"reward per {PER_FRAMES} dreamt frames")
    left.set_title("In the dream" + (f" (round {summary['round']})" if panels == 3 else ""))
    left.legend(fontsize=8)
    bars = [
        ("agent", "real"),
        ("random", "random"),
        ("best held", "best_constant"),
        ("controller", "controller"),
    ]
    shown = [(name, key) for name, key in bars if f"{key}_return_mean" in summary]
    right.bar(
        [name for name, _ in shown],
        [summary[f"{key}_return_mean"] for _, key in shown],
        yerr=[summary[f"{key}_return_ci95"] for _, key in shown],
        capsize=6,
        color=["tab:blue", "tab:gray", "tab:olive", "tab:orange"][: len(shown)],
    )
    right.set_title(f"Real game ({summary['eval_episodes']} episodes, 95% CI)")
    right.set_ylabel("return")
    if panels == 3:  # the real score after each round of real play
        axes[2].errorbar(
            [r["round"] for r in per_round],
            [r["real_return_mean"] for r in per_round],
            yerr=[r["real_return_ci95"] for r in per_round],
            marker="o",
            capsize=4,
        )
        axes[2].set_xlabel("round (0: the pipeline's world model)")
        axes[2].set_ylabel("return")
        axes[2].set_title("Real game, round by round")
    fig.suptitle(summary["game"].removesuffix("NoFrameskip-v4"))
    fig.tight_layout()
    return save_figure(fig, path)
