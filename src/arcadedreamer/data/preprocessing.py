"""Frame preprocessing exactly as the original: RGB → grayscale → 64×64 INTER_AREA → uint8.

Collection gets the same bytes from ALE's palette grayscale and the exact INTER_AREA kernel in
`resize.py`; tests check the two paths agree byte for byte on replayed games. Frames are stored
as uint8 and become floats in [0, 1] only when a batch is made.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def preprocess_frame(rgb: np.ndarray, size: int = 64) -> np.ndarray:
    """(210, 160, 3) uint8 RGB → (size, size) uint8 grayscale."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


def to_unit_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames → float32 in [0, 1] (the models' input range)."""
    return frames.float().div_(255.0)


def to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Floats in [0, 1] → uint8, rounding; for images and GIFs."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().float().cpu().numpy()
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio (dB) of a mean squared error on frames in [0, 1]."""
    return float("inf") if mse <= 0 else float(10.0 * np.log10(1.0 / mse))


def stack_start_indices(episode_ends: np.ndarray, stack_size: int) -> np.ndarray:
    """Indices i whose frames i-stack_size+1 … i lie in one episode (stacks never cross).

    Returns the index of each valid stack's *last* frame, so stack i = frames[i-k+1 : i+1].
    """
    episode_ends = np.asarray(episode_ends, dtype=bool)
    n = len(episode_ends)
    # position of each frame inside its episode (the first episode starts at 0)
    starts = np.zeros(n, dtype=bool)
    starts[1:] = episode_ends[:-1]
    episode_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    position = np.arange(n) - episode_start
    return np.flatnonzero(position >= stack_size - 1)


def episode_ids(episode_ends: np.ndarray) -> np.ndarray:
    """Episode number of every frame (0, 0, …, 1, 1, …)."""
    episode_ends = np.asarray(episode_ends, dtype=bool)
    ids = np.zeros(len(episode_ends), dtype=np.int64)
    ids[1:] = np.cumsum(episode_ends[:-1])
    return ids


# Reward classes the dynamics' reward head predicts: the sign of a transition's reward.
REWARD_SIGNS = (-1.0, 0.0, 1.0)
NO_REWARD = 1  # the class of a zero reward: by far the most frequent


def reward_classes(rewards: np.ndarray) -> np.ndarray:
    """(N,) rewards → (N,) int64 classes 0 (negative), 1 (none), 2 (positive)."""
    return (np.sign(np.asarray(rewards, dtype=np.float64)) + 1).astype(np.int64)


def game_over_frames(episode_ends: np.ndarray, cut_rows: np.ndarray, max_episode_frames: int) -> np.ndarray:
    """(N,) bool: frame t is the last frame of an episode the game itself ended.

    An episode also ends where collection cut it (an emulator's quota, `cut_rows`) or where it
    reached `max_episode_frames` (truncation): those are not game overs, and a head taught that
    they were would learn to predict the end of the budget, not of the game.
    """
    ends = np.asarray(episode_ends, dtype=bool).copy()
    ends[np.asarray(cut_rows, dtype=np.int64)] = False
    last_rows = np.flatnonzero(np.asarray(episode_ends, dtype=bool))
    lengths = np.diff(np.concatenate([[-1], last_rows]))
    ends[last_rows[lengths >= max_episode_frames]] = False
    return ends
