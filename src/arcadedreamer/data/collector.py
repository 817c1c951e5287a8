"""Real Atari collection with ale-py's native, multi-threaded vector environment.

Exploration policy (seeded): each emulator draws a uniformly random action among ALE's 18 and
holds it for a uniform number of frames in [action_hold_min, action_hold_max]. Held actions
move paddles and ships across the screen instead of jittering in place, so the data reaches
varied game states.

The vector env does the preprocessing natively (ALE palette grayscale + INTER_AREA resize,
byte-identical to cv2's RGB→gray path; tested), at frameskip 1 with no sticky actions, no-op
starts, fire resets, reward clipping or max-pooling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from arcadedreamer.data.actions import NUM_ACTIONS
from arcadedreamer.data.storage import library_versions, save_game_data
from arcadedreamer.fileio import exclusive_lock


def ale_game_name(game_id: str) -> str:
    """`SpaceInvadersNoFrameskip-v4` → `space_invaders` (the vector env's ROM name)."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    return gym.spec(game_id).kwargs["game"]


def make_vector_env(game_id: str, num_envs: int, frame_size: int, num_threads: int, max_episode_frames: int):
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        ale_game_name(game_id), num_envs,
        num_threads=num_threads, frameskip=1, maxpool=False, noop_max=0,
        use_fire_reset=False, reward_clipping=False, full_action_space=True,
        repeat_action_probability=0.0, img_height=frame_size, img_width=frame_size,
        stack_num=1, grayscale=True, episodic_life=False,
        max_num_frames_per_episode=max_episode_frames,
    )  # fmt: skip


class HeldRandomPolicy:
    """Random full-set actions, each held for a random number of frames (vectorised)."""

    def __init__(self, num_envs: int, hold_min: int, hold_max: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.hold_min, self.hold_max = hold_min, hold_max
        self.actions = np.zeros(num_envs, dtype=np.int64)
        self.remaining = np.zeros(num_envs, dtype=np.int64)

    def __call__(self) -> np.ndarray:
        renew = self.remaining <= 0
        count = int(renew.sum())
        if count:
            self.actions[renew] = self.rng.integers(0, NUM_ACTIONS, size=count)
            self.remaining[renew] = self.rng.integers(self.hold_min, self.hold_max + 1, size=count)
        self.remaining -= 1
        return self.actions.copy()


def frames_per_env(total: int, num_envs: int) -> list[int]:
    return [total // num_envs + (1 if i < total % num_envs else 0) for i in range(num_envs)]


def collect_game(
    game_id: str,
    total_frames: int,
    *,
    num_envs: int,
    seed: int,
    frame_size: int = 64,
    hold_min: int = 1,
    hold_max: int = 8,
    max_episode_frames: int = 10_000,
    num_threads: int = 0,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], list[list[int]]]:
    """Play `total_frames` frames of `game_id`; returns the arrays `storage` writes and streams.

    Emulator i is reset with seed `seed + i`; the policy draws from `seed` too. Each emulator's
    frames form consecutive episodes; its last (unfinished) episode is cut where its quota ends.
    """
    num_envs = max(1, min(num_envs, total_frames))
    quotas = frames_per_env(total_frames, num_envs)
    env = make_vector_env(game_id, num_envs, frame_size, num_threads, max_episode_frames)
    policy = HeldRandomPolicy(num_envs, hold_min, hold_max, seed)
    frames = np.empty((num_envs, max(quotas), frame_size, frame_size), dtype=np.uint8)
    actions = np.zeros((num_envs, max(quotas)), dtype=np.uint8)
    rewards = np.zeros((num_envs, max(quotas)), dtype=np.float32)
    ends = np.zeros((num_envs, max(quotas)), dtype=bool)
    bar = tqdm(
        total=total_frames, desc=f"collect {game_id}", unit="frame", disable=not progress, mininterval=0.5
    )
    try:
        obs, _ = env.reset(seed=np.arange(seed, seed + num_envs, dtype=np.int64))
        frames[:, 0] = obs[:, 0]
        bar.update(num_envs)
        for t in range(max(quotas) - 1):
            step_actions = policy()
            obs, reward, terminated, truncated, _ = env.step(step_actions)
            finished = terminated | truncated
            actions[:, t] = step_actions
            rewards[:, t] = reward
            # `finished`: the obs just returned is the episode's last frame (row t+1).
            ends[:, t + 1] = finished
            frames[:, t + 1] = obs[:, 0]
            bar.update(sum(q > t + 1 for q in quotas))
    finally:
        bar.close()
        env.close()
    pieces = {name: [] for name in ("frames", "actions", "rewards", "episode_ends")}
    for i, quota in enumerate(quotas):
        env_ends = ends[i, :quota].copy()
        env_ends[quota - 1] = True
        # A row that ends an episode leads nowhere: the next step resets and ignores its action.
        env_actions = np.where(env_ends, 0, actions[i, :quota]).astype(np.uint8)
        env_rewards = np.where(env_ends, 0.0, rewards[i, :quota]).astype(np.float32)
        pieces["frames"].append(frames[i, :quota])
        pieces["actions"].append(env_actions)
        pieces["rewards"].append(env_rewards)
        pieces["episode_ends"].append(env_ends)
    arrays = {name: np.concatenate(parts) for name, parts in pieces.items()}
    # Where each emulator's frames start, and the seed it was reset with: enough to replay it.
    starts = np.concatenate([[0], np.cumsum(quotas)[:-1]])
    streams = [[int(start), int(q), int(seed + i)] for i, (start, q) in enumerate(zip(starts, quotas))]
    return arrays, streams


def collect_to_disk(
    games: list[str],
    frames_per_game: int,
    out_root: str | Path,
    *,
    seed: int,
    num_envs: int,
    frame_size: int,
    hold_min: int,
    hold_max: int,
    max_episode_frames: int,
    num_threads: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Collect each game and write it atomically to `out_root/<game>/`; returns the manifests."""
    manifests = []
    for game in games:
        game_dir = Path(out_root) / game
        # The lock sits beside the output folder, so DVC never hashes it as data.
        lock = Path(out_root).parent / f".{Path(out_root).name}.{game}.lock"
        with exclusive_lock(lock, f"{game_dir}"):
            arrays, streams = collect_game(
                game, frames_per_game, num_envs=num_envs, seed=seed, frame_size=frame_size,
                hold_min=hold_min, hold_max=hold_max, max_episode_frames=max_episode_frames,
                num_threads=num_threads, progress=progress,
            )  # fmt: skip
            manifest = {
                "game": game,
                "frames": int(len(arrays["frames"])),
                "episodes": int(arrays["episode_ends"].sum()),
                "seed": seed,
                "num_envs": min(num_envs, frames_per_game),
                "frame_size": frame_size,
                "policy": f"uniform random full-set action held {hold_min}-{hold_max} frames",
                "max_episode_frames": max_episode_frames,
                "streams": {"columns": ["start_row", "frames", "reset_seed"], "rows": streams},
                "versions": library_versions(),
            }
            manifests.append(save_game_data(game_dir, arrays, manifest))
    return manifests
