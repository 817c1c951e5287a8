"""Learning inside the dream: the world model as a gymnasium environment, and the World Models
controller trained in it and scored in the real game.

Importing this package registers `ArcadeDreamer/<Game>-Dream-v0` for the three games of params.yaml
(any other `…NoFrameskip-v4` game: `DreamEnv(game=…)`)
(`gymnasium.make("arcadedreamer.control:ArcadeDreamer/Breakout-Dream-v0")` imports it for you).
"""

from __future__ import annotations

import gymnasium

from arcadedreamer.config import DEFAULT_GAMES

NAMESPACE = "ArcadeDreamer"


def dream_env_id(game: str) -> str:
    """`BreakoutNoFrameskip-v4` → `ArcadeDreamer/Breakout-Dream-v0`."""
    return f"{NAMESPACE}/{game.removesuffix('NoFrameskip-v4')}-Dream-v0"


def register_dream_envs() -> None:
    for game in DEFAULT_GAMES:
        env_id = dream_env_id(game)
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point="arcadedreamer.control.dream_env:DreamEnv",
                vector_entry_point="arcadedreamer.control.dream_env:DreamVectorEnv",
                kwargs={"game": game},
            )


register_dream_envs()
