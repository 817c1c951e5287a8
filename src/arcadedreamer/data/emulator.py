"""A single real emulator with the collection settings, for play and for real continuations."""

from __future__ import annotations

import numpy as np

from arcadedreamer.data.atari import make_env
from arcadedreamer.data.preprocessing import preprocess_frame


class Emulator:
    """`…NoFrameskip-v4` with the full 18-action space and no sticky actions (as collected)."""

    def __init__(self, game_id: str, frame_size: int = 64):
        self.env = make_env(game_id)
        self.frame_size = frame_size
        self.rgb: np.ndarray | None = None
        self.score = 0.0

    def reset(self, seed: int | None = None) -> np.ndarray:
        """→ the first preprocessed frame (64, 64) uint8."""
        self.rgb, _ = self.env.reset(seed=seed)
        self.score = 0.0
        return preprocess_frame(self.rgb, self.frame_size)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        """Full-action id → (frame, reward, episode over)."""
        self.rgb, reward, terminated, truncated, _ = self.env.step(int(action))
        self.score += float(reward)
        return preprocess_frame(self.rgb, self.frame_size), float(reward), terminated or truncated

    def ram(self) -> np.ndarray:
        """(128,) uint8: the console's RAM as the current frame was shown."""
        return self.env.unwrapped.ale.getRAM()

    def close(self) -> None:
        self.env.close()


def replay(game_id: str, reset_seed: int, actions: np.ndarray, frame_size: int = 64):
    """Reset with `reset_seed` and apply `actions`; returns (emulator, frames seen incl. first).

    Collection is deterministic given the seed and the actions, so this reaches exactly the
    state a recorded stream was in (tests check the frames match byte for byte).
    """
    emulator = Emulator(game_id, frame_size)
    frames = [emulator.reset(seed=reset_seed)]
    for action in actions:
        frame, _, done = emulator.step(int(action))
        frames.append(frame)
        if done:
            break
    return emulator, np.stack(frames)
