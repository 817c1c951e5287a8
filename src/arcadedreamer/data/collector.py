"""Real Atari collection with ale-py's native, multi-threaded vector environment.

Exploration policy (seeded): each emulator draws a uniformly random action among ALE's 18 and
holds it for a uniform number of frames in [action_hold_min, action_hold_max]. Held actions
move paddles and ships across the screen instead of jittering in place, so the data reaches
varied game states.

The vector env converts to grayscale natively (ALE's palette, byte-identical to cv2's RGB→gray;
tested) and runs asynchronously: half the emulators step while the other half's screens are
resized (exact cv2 INTER_AREA, `resize.py`) and stored. Frameskip 1, no sticky actions, no-op
starts, fire resets, reward clipping or max-pooling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from arcadedreamer import interrupts
from arcadedreamer.data.actions import NUM_ACTIONS
from arcadedreamer.data.resize import AreaResizer, exact_area_resize_supported
from arcadedreamer.data.storage import library_versions, save_game_data
from arcadedreamer.fileio import exclusive_lock


def ale_game_name(game_id: str) -> str:
    """`SpaceInvadersNoFrameskip-v4` → `space_invaders` (the vector env's ROM name)."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    return gym.spec(game_id).kwargs["game"]


def make_vector_env(
    game_id: str, num_envs: int, screen_size: tuple[int, int], num_threads: int, max_episode_frames: int
):
    """Asynchronous (half the emulators step while we store the other half's frames)."""
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        ale_game_name(game_id), num_envs, batch_size=max(1, num_envs // 2),
        num_threads=num_threads, frameskip=1, maxpool=False, noop_max=0,
        use_fire_reset=False, reward_clipping=False, full_action_space=True,
        repeat_action_probability=0.0, img_height=screen_size[0], img_width=screen_size[1],
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


def action_schedule(num_envs: int, rows: int, hold_min: int, hold_max: int, seed: int) -> np.ndarray:
    """(num_envs, rows) actions: the policy does not look at frames, so it is drawn up front.

    Drawing it step by step for all emulators at once keeps the data independent of the order
    in which the asynchronous vector env hands emulators back. The last row leads nowhere (0).
    """
    policy = HeldRandomPolicy(num_envs, hold_min, hold_max, seed)
    schedule = np.zeros((num_envs, rows), dtype=np.int64)
    for t in range(rows - 1):
        schedule[:, t] = policy()
    return schedule


SCREEN = (210, 160)  # ALE's screen (height, width)


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

    Emulator i is reset with seed `seed + i` and follows row i of the action schedule. Each
    emulator's frames form consecutive episodes; its last (unfinished) episode is cut where its
    quota ends.
    """
    num_envs = max(1, min(num_envs, total_frames))
    quotas = np.array(frames_per_env(total_frames, num_envs))
    starts = np.concatenate([[0], np.cumsum(quotas)[:-1]])  # each emulator's first row
    schedule = action_schedule(num_envs, int(quotas.max()), hold_min, hold_max, seed)
    actions = np.concatenate([schedule[i, :quota] for i, quota in enumerate(quotas)])  # per row
    # Full-size grayscale screens resized by our exact kernel (faster than the env's cv2 path);
    # sizes the kernel does not serve are resized natively by the env (same bytes either way).
    resizer = AreaResizer(*SCREEN, frame_size) if exact_area_resize_supported(*SCREEN, frame_size) else None
    env = make_vector_env(
        game_id, num_envs, SCREEN if resizer else (frame_size, frame_size), num_threads, max_episode_frames
    )
    frames = np.empty((total_frames, frame_size, frame_size), dtype=np.uint8)
    arrived_rewards = np.zeros(total_frames, dtype=np.float32)  # the reward that came with this row
    ends = np.zeros(total_frames, dtype=bool)  # this row is its episode's last frame
    recorded = np.zeros(num_envs, dtype=np.int64)  # rows filled per emulator
    bar = tqdm(
        total=total_frames, desc=f"collect {game_id}", unit="frame", disable=not progress, mininterval=0.5
    )
    try:
        obs, info = env.reset(seed=np.arange(seed, seed + num_envs, dtype=np.int64))
        reward, finished = np.zeros(len(obs), dtype=np.float32), np.zeros(len(obs), dtype=bool)
        while True:
            env_ids = info["env_id"]
            rows = recorded[env_ids]
            keep = rows < quotas[env_ids]  # emulators past their quota still step (action 0)
            dest = (starts[env_ids] + rows)[keep]
            screens = obs[:, 0] if keep.all() else obs[keep, 0]
            if resizer:
                resizer.resize_into(screens, frames, dest)
            else:
                frames[dest] = screens
            arrived_rewards[dest] = reward[keep]
            ends[dest] = finished[keep]
            recorded[env_ids[keep]] += 1
            bar.update(len(dest))
            if (recorded >= quotas).all():
                break
            env.send(np.where(keep, actions[np.minimum(starts[env_ids] + rows, total_frames - 1)], 0))
            obs, reward, terminated, truncated, info = env.recv()
            interrupts.raise_if_requested()
            finished = terminated | truncated
    finally:
        bar.close()
        env.close()
    ends[starts + quotas - 1] = True  # each emulator's quota cuts its last episode
    # A row that ends an episode leads nowhere: the next step resets and ignores its action.
    rewards = np.append(arrived_rewards[1:], 0.0).astype(np.float32)
    arrays = {
        "frames": frames,
        "actions": np.where(ends, 0, actions).astype(np.uint8),
        "rewards": np.where(ends, 0.0, rewards).astype(np.float32),
        "episode_ends": ends,
    }
    # Where each emulator's frames start, and the seed it was reset with: enough to replay it.
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
