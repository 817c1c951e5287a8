"""The world model as a gymnasium environment: a dream to act in.

A dream starts from real frames: `context` consecutive stacks of a recorded episode (held-out or
training, chosen with the env's seeded generator) warm up the GRU, then every step imagines the
next latent from the action taken, and the event heads say what it earned (the expected sign
of the reward, P(+) - P(-) from calibrated probabilities: smooth, and unbiased where the heads
are calibrated) and whether the game ended. Observations are the decoded frame stack (uint8,
as the real game's), the latent, or the latent with the GRU state (what the World Models
controller reads). `DreamBatch` steps many dreams in one batch; `DreamEnv` is one of them, `DreamVectorEnv`
many, with gymnasium's next-step autoreset.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from arcadedreamer.config import MAX_DREAM_STEPS, MAX_DREAMS, Params, load_params
from arcadedreamer.data.atari import minimal_action_set
from arcadedreamer.data.preprocessing import episode_ids, stack_start_indices, to_uint8
from arcadedreamer.data.storage import RECOLLECT, REGENERATE_HELDOUT, load_recordings
from arcadedreamer.errors import UserError
from arcadedreamer.models.checkpoints import check_trained_on, load_world_model, resolve_world_model
from arcadedreamer.models.events import expected_rewards
from arcadedreamer.models.world_model import WorldModel

OBSERVATIONS = ("frame", "latent", "latent_and_state")
RENDER_SCALE = 4


@dataclass
class Contexts:
    """Every start of `context` consecutive stacks inside one recorded episode, encoded once."""

    latents: torch.Tensor  # (N, D): the latent of the stack ending at each frame (0 where none)
    actions: torch.Tensor  # (N,) full-action ids taken from each frame
    starts: np.ndarray  # (S,) frames where a context of `length` stacks starts
    length: int

    @classmethod
    def from_recordings(
        cls,
        model: WorldModel,
        roots: Sequence[str | Path],
        game: str,
        stack_size: int,
        length: int,
        rebuild: str = REGENERATE_HELDOUT,
    ):
        game_dir = Path(roots[0]) / game
        if not game_dir.exists():
            raise UserError(f"{game_dir}: no recorded episodes of {game} to start dreams from; {rebuild}")
        data = load_recordings(list(roots), game, rebuild=rebuild)
        latents = model.vae.encode_recording(torch.from_numpy(data.frames), data.episode_ends)
        valid = stack_start_indices(np.asarray(data.episode_ends), stack_size)
        # a context is `length` stacks of one episode: valid at its first frame, same episode at its last
        is_valid = np.zeros(len(data), dtype=bool)
        is_valid[valid] = True
        ids = episode_ids(np.asarray(data.episode_ends))
        candidates = np.arange(max(0, len(data) - length + 1))
        starts = candidates[is_valid[candidates] & (ids[candidates + length - 1] == ids[candidates])]
        if len(starts) == 0:
            raise UserError(
                f"{game_dir}: no episode holds {length} consecutive frame stacks to start a dream"
            )
        actions = torch.from_numpy(np.asarray(data.actions).astype(np.int64))
        return cls(latents=latents, actions=actions, starts=starts, length=length)


class DreamBatch:
    """B dreams stepped together. Actions are indices into the game's minimal action set; each
    step imagines the world model's K frames (`dynamics.frames_per_step`) with the action held
    for all of them (Atari's action repeat), and a dream is truncated after `horizon` frames,
    rounded up to whole steps."""

    def __init__(
        self, model: WorldModel, contexts: Contexts, action_ids: tuple[int, ...], size: int, horizon: int
    ):
        self.model, self.contexts, self.size = model.eval(), contexts, size
        self.frames_per_step = model.frames_per_step
        self.horizon = math.ceil(horizon / self.frames_per_step)  # steps
        self.action_ids = torch.tensor(action_ids)
        self.latents = torch.zeros(size, model.vae.latent_dim)  # (B, D)
        self.hidden = torch.zeros(1, size, model.dynamics.hidden_size)  # (1, B, H)
        self.steps = np.zeros(size, dtype=np.int64)

    @torch.no_grad()
    def reset(self, which: np.ndarray, rngs: list[np.random.Generator]) -> None:
        """Restart the dreams where `which` (B,) is set, each from a context its generator draws."""
        rows = np.flatnonzero(which)
        if len(rows) == 0:
            return
        self.reset_to(rows, np.array([rngs[i].choice(self.contexts.starts) for i in rows]))

    @torch.no_grad()
    def reset_to(self, rows: np.ndarray, starts: np.ndarray) -> None:
        """Restart dreams `rows` (k,) from the contexts beginning at frames `starts` (k,)."""
        frames = torch.from_numpy(np.asarray(starts))[:, None] + torch.arange(self.contexts.length)  # (k, C)
        latents, hidden = self.model.warm_up(
            self.contexts.latents[frames], self.contexts.actions[frames[:, :-1]]
        )
        self.latents[rows] = latents
        self.hidden[:, rows] = hidden if hidden is not None else 0.0
        self.steps[rows] = 0

    @torch.no_grad()
    def advance(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """actions (B,) minimal-set indices, each held for the step's K frames → expected
        rewards (B,) and game-over probabilities (B,) of the step."""
        full_actions = self.action_ids[actions.long()]
        self.latents, self.hidden = self.model.step_held(self.latents, full_actions, self.hidden)
        reward_probs, game_over_probs = self.model.dynamics.events.probabilities(self.hidden[-1])
        self.steps += 1
        return expected_rewards(reward_probs), game_over_probs

    def step(self, actions: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """actions (B,) minimal-set indices → rewards (B,) float, terminated (B,), truncated (B,)."""
        rewards, game_over_probs = self.advance(torch.as_tensor(np.asarray(actions), dtype=torch.long))
        return rewards.double().numpy(), (game_over_probs > 0.5).numpy(), self.steps >= self.horizon

    def features(self) -> torch.Tensor:
        """(B, D + H): the latent and GRU state, what the controller reads."""
        return torch.cat([self.latents, self.hidden[-1]], dim=-1)

    @torch.no_grad()
    def observe(self, kind: str) -> np.ndarray:
        if kind == "frame":
            return to_uint8(self.model.decode(self.latents))  # (B, S, 64, 64)
        if kind == "latent":
            return self.latents.numpy().astype(np.float32)
        return self.features().numpy().astype(np.float32)


def _observation_space(kind: str, model: WorldModel, stack_size: int, frame_size: int) -> spaces.Space:
    if kind == "frame":
        return spaces.Box(0, 255, (stack_size, frame_size, frame_size), np.uint8)
    width = model.vae.latent_dim + (model.dynamics.hidden_size if kind == "latent_and_state" else 0)
    return spaces.Box(-np.inf, np.inf, (width,), np.float32)


def _check_count(name: str, value: object, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 < value <= high:
        raise UserError(f"{name}={value!r}: give a whole number in 1…{high}")


def open_dream(
    game: str,
    model: str | Path | None,
    params: str | Path | Params,
    observation: str,
    horizon: int | None,
    contexts: str | None,
    size: int,
    extra_recordings: Sequence[str | Path] = (),
) -> tuple[DreamBatch, Params]:
    """What both environments are built on: the world model checked against the game, its
    contexts encoded, `size` dreams. `extra_recordings`: more roots whose episodes start dreams
    beside the training data (the agent's rounds of real play)."""
    cfg = params if isinstance(params, Params) else load_params(params)
    if observation not in OBSERVATIONS:
        raise UserError(f"observation={observation!r}: choose one of {', '.join(OBSERVATIONS)}")
    if horizon is not None:
        _check_count("horizon", horizon, MAX_DREAM_STEPS)
    _check_count("num_envs", size, MAX_DREAMS)
    model_path = resolve_world_model(model, cfg)
    world_model, checkpoint = load_world_model(model_path, cfg)
    check_trained_on(checkpoint, game, model_path)
    source = contexts or "heldout"
    if source not in ("heldout", "training"):
        raise UserError(f"contexts={source!r}: choose heldout or training")
    root = cfg.heldout.out_dir if source == "heldout" else cfg.data.out_dir
    rebuild = REGENERATE_HELDOUT if source == "heldout" else RECOLLECT
    roots = [root, *extra_recordings] if source == "training" else [root]
    starts = Contexts.from_recordings(
        world_model, roots, game, cfg.data.stack_size, cfg.evaluation.context, rebuild
    )
    batch = DreamBatch(world_model, starts, minimal_action_set(game), size, horizon or cfg.controller.horizon)
    return batch, cfg


class DreamEnv(gymnasium.Env):
    """One dream of `game` (e.g. `gymnasium.make("ArcadeDreamer/Breakout-Dream-v0")`).

    kwargs: model (a dynamics checkpoint or models:/ URI; default the registry's @champion), params
    (params.yaml), observation ("frame", "latent" or "latent_and_state"), horizon (frames until
    truncation; default controller.horizon), contexts ("heldout" or "training"). One step is the
    world model's `dynamics.frames_per_step` frames, the action held for each."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        game: str,
        model: str | Path | None = None,
        params: str | Path | Params = "params.yaml",
        observation: str = "frame",
        horizon: int | None = None,
        contexts: str | None = None,
        render_mode: str | None = None,
    ):
        self.dream, cfg = open_dream(game, model, params, observation, horizon, contexts, size=1)
        self.game, self.kind, self.render_mode = game, observation, render_mode
        self.observation_space = _observation_space(
            observation, self.dream.model, cfg.data.stack_size, cfg.data.frame_size
        )
        self.action_space = spaces.Discrete(len(self.dream.action_ids))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.dream.reset(np.ones(1, dtype=bool), [self.np_random])
        return self.dream.observe(self.kind)[0], {"step": 0}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        rewards, terminated, truncated = self.dream.step(np.array([int(action)]))
        info = {
            "step": int(self.dream.steps[0]),
            "frames": int(self.dream.steps[0]) * self.dream.frames_per_step,
        }
        return (
            self.dream.observe(self.kind)[0],
            float(rewards[0]),
            bool(terminated[0]),
            bool(truncated[0]) and not bool(terminated[0]),
            info,
        )

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        frame = to_uint8(self.dream.model.decode(self.dream.latents))[0, -1]
        big = np.kron(frame, np.ones((RENDER_SCALE, RENDER_SCALE), dtype=np.uint8))
        return np.repeat(big[..., None], 3, axis=-1)


class DreamVectorEnv(VectorEnv):
    """`num_envs` dreams stepped in one batch (`gymnasium.make_vec(…, vectorization_mode=
    "vector_entry_point")`), with next-step autoreset: after a dream ends, the next step restarts
    it from a new context, ignores its action and returns reward 0."""

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        game: str,
        num_envs: int = 1,
        model: str | Path | None = None,
        params: str | Path | Params = "params.yaml",
        observation: str = "frame",
        horizon: int | None = None,
        contexts: str | None = None,
    ):
        if not 0 < num_envs <= 65_536:
            raise UserError(f"num_envs={num_envs}: give 1 to 65536 dreams")
        self.dream, cfg = open_dream(game, model, params, observation, horizon, contexts, size=num_envs)
        self.game, self.kind, self.num_envs = game, observation, num_envs
        self.single_observation_space = _observation_space(
            observation, self.dream.model, cfg.data.stack_size, cfg.data.frame_size
        )
        self.single_action_space = spaces.Discrete(len(self.dream.action_ids))
        self.observation_space = spaces.Box(
            np.repeat(self.single_observation_space.low[None], num_envs, 0),
            np.repeat(self.single_observation_space.high[None], num_envs, 0),
            dtype=self.single_observation_space.dtype,
        )
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, self.single_action_space.n))
        self.rngs = [np.random.default_rng(i) for i in range(num_envs)]
        self.needs_reset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            self.rngs = [np.random.default_rng(s) for s in seeds]
        self.dream.reset(np.ones(self.num_envs, dtype=bool), self.rngs)
        self.needs_reset[:] = False
        return self.dream.observe(self.kind), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if actions.min() < 0 or actions.max() >= self.single_action_space.n:
            raise ValueError(f"actions must lie in 0 … {self.single_action_space.n - 1}, got {actions}")
        restarting = self.needs_reset.copy()
        rewards, terminated, truncated = self.dream.step(actions)
        self.dream.reset(restarting, self.rngs)  # their step above is thrown away: next-step autoreset
        rewards = np.where(restarting, 0.0, rewards)
        terminated = terminated & ~restarting
        truncated = truncated & ~terminated & ~restarting
        self.needs_reset = terminated | truncated
        return self.dream.observe(self.kind), rewards, terminated, truncated, {}
