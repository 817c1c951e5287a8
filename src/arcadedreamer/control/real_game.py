"""Policies scored in the real game: seeded episodes played side by side, and the confidence
interval of their mean return."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from arcadedreamer.data.atari import minimal_action_set
from arcadedreamer.data.emulator import Emulator
from arcadedreamer.data.preprocessing import to_unit_float
from arcadedreamer.models.controller import exploration_draws, explore
from arcadedreamer.progress import progress_bar

# stacks (B, S, 64, 64) in [0, 1] of the B episodes → their next full-action ids (B,)
Policy = Callable[[torch.Tensor], torch.Tensor]


def random_policy(game: str, seed: int) -> Policy:
    """Uniform over the game's own actions, every frame: the baseline a learned policy must beat."""
    action_ids = torch.tensor(minimal_action_set(game))
    generator = torch.Generator().manual_seed(seed)
    return lambda stacks: action_ids[torch.randint(len(action_ids), (len(stacks),), generator=generator)]


def constant_policy(action_id: int, game: str, epsilon: float, seed: int) -> Policy:
    """One action every frame, but a uniformly random one with probability `epsilon`: the
    simplest policies a controller with the same ε should beat (in Breakout a paddle that stays
    put, or stays right, returns serves the random policy's jitter misses)."""
    action_ids = torch.tensor(minimal_action_set(game))
    generator = torch.Generator().manual_seed(seed)

    def act(stacks: torch.Tensor) -> torch.Tensor:
        draws, random_choices = exploration_draws(len(stacks), len(action_ids), generator)
        chosen = torch.full((len(stacks),), int(action_id))
        return explore(chosen, epsilon, draws, action_ids[random_choices])

    return act


def play_episodes(
    game: str,
    policy: Policy,
    episodes: int,
    seed: int,
    max_frames: int,
    stack_size: int = 4,
    frame_size: int = 64,
    label: str = "real episodes",
    progress: bool = True,
    record: bool = False,
) -> dict[str, np.ndarray]:
    """Episode i is reset with seed + i; all are stepped together, one policy call per frame.

    Returns each episode's return, frames played and whether the game ended (else it was cut at
    `max_frames`); with `record`, also "recording": the episodes one after another in the
    layout `collect` stores (data/storage.py), for the agent's rounds of real play."""
    emulators = [Emulator(game, frame_size) for _ in range(episodes)]
    history = np.zeros((episodes, stack_size, frame_size, frame_size), dtype=np.uint8)
    recorders = [EpisodeRecorder() for _ in range(episodes)] if record else []
    for i, emulator in enumerate(emulators):
        history[i] = emulator.reset(seed=seed + i)  # the first frame fills the stack
        if record:
            recorders[i].frame(history[i, -1], emulator.ram())
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    ended = np.zeros(episodes, dtype=bool)
    active = np.ones(episodes, dtype=bool)
    try:
        with progress_bar(episodes * max_frames, label, "frame", progress) as bar:
            for _ in range(max_frames):
                actions = policy(to_unit_float(torch.from_numpy(history))).numpy()
                for i in np.flatnonzero(active):
                    frame, reward, done = emulators[i].step(int(actions[i]))
                    history[i] = np.roll(history[i], -1, axis=0)
                    history[i, -1] = frame
                    returns[i] += reward
                    lengths[i] += 1
                    if record:
                        recorders[i].step(int(actions[i]), reward)
                        recorders[i].frame(frame, emulators[i].ram())
                    if done:
                        ended[i], active[i] = True, False
                bar.update(episodes)
                if not active.any():
                    break
            bar.update(bar.total - bar.n)
    finally:
        for emulator in emulators:
            emulator.close()
    result = {"returns": returns, "frames": lengths, "game_over": ended}
    if record:
        result["recording"] = EpisodeRecorder.concatenate(recorders)
    return result


class EpisodeRecorder:
    """One real episode in the stored layout: row t holds frame t, the RAM as it was shown, the
    action taken from it and the reward that action earned; the last row ends the episode."""

    def __init__(self):
        self.frames, self.ram, self.actions, self.rewards = [], [], [], []

    def frame(self, frame: np.ndarray, ram: np.ndarray) -> None:
        self.frames.append(frame.copy())
        self.ram.append(np.array(ram, dtype=np.uint8))

    def step(self, action: int, reward: float) -> None:
        self.actions.append(action)
        self.rewards.append(reward)

    def arrays(self) -> dict[str, np.ndarray]:
        rows = len(self.frames)
        ends = np.zeros(rows, dtype=bool)
        ends[-1] = True  # no transition leaves the last frame: action and reward 0
        return {
            "frames": np.stack(self.frames),
            "actions": np.array([*self.actions, 0], dtype=np.uint8),
            "rewards": np.array([*self.rewards, 0.0], dtype=np.float32),
            "episode_ends": ends,
            "ram": np.stack(self.ram),
        }

    @staticmethod
    def concatenate(recorders: list[EpisodeRecorder]) -> dict[str, np.ndarray]:
        parts = [r.arrays() for r in recorders]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def mean_and_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student's t)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()) if len(values) else math.nan, math.nan
    sem = values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(stats.t.ppf(0.975, len(values) - 1) * sem)


def difference_ci95(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """Mean of `first` minus mean of `second`, and its 95% half-width (Welch's t)."""
    from scipy import stats

    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    var1, var2 = first.var(ddof=1) / len(first), second.var(ddof=1) / len(second)
    se = math.sqrt(var1 + var2)
    if se == 0:
        return float(first.mean() - second.mean()), 0.0
    dof = (var1 + var2) ** 2 / (var1**2 / (len(first) - 1) + var2**2 / (len(second) - 1))
    return float(first.mean() - second.mean()), float(stats.t.ppf(0.975, dof) * se)
