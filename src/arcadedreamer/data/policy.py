"""The one exploration policy: random actions among ALE's 18, each held for a random number of
frames, seeded. Collect draws its schedule with it, dream its random actions, headless play its
keys: held actions move paddles and ships across the screen instead of jittering in place."""

from __future__ import annotations

import numpy as np

from arcadedreamer.data.actions import NUM_ACTIONS

# dream's random actions and headless play hold each action 4-11 frames, so a viewer sees it
VIEWING_HOLD = (4, 11)


class HeldRandomPolicy:
    """Random full-set actions for `num_envs` emulators at once, each held `hold_min`…`hold_max`
    frames (inclusive)."""

    def __init__(self, num_envs: int, hold_min: int, hold_max: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.hold_min, self.hold_max = hold_min, hold_max
        self.actions = np.zeros(num_envs, dtype=np.int64)
        self.remaining = np.zeros(num_envs, dtype=np.int64)

    def __call__(self) -> np.ndarray:
        """The next action of every emulator, (num_envs,) full-action ids."""
        renew = self.remaining <= 0
        count = int(renew.sum())
        if count:
            self.actions[renew] = self.rng.integers(0, NUM_ACTIONS, size=count)
            self.remaining[renew] = self.rng.integers(self.hold_min, self.hold_max + 1, size=count)
        self.remaining -= 1
        return self.actions.copy()

    def sequence(self, steps: int) -> list[int]:
        """`steps` actions of the first emulator (dream's random actions)."""
        return [int(self()[0]) for _ in range(steps)]
