"""Every ALE and gymnasium call of the project, so the emulator's settings live in one place.

Games are the `…NoFrameskip-v4` ids (frameskip 1) with ALE's full 18 actions and no sticky
actions, as collected. ALE logs at error level only: its banner is not news to a user.
"""

from __future__ import annotations

import functools


@functools.cache
def _gym():
    import ale_py
    import gymnasium as gym

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    gym.register_envs(ale_py)
    return gym


def make_env(game_id: str, full_action_space: bool = True):
    """A gymnasium AtariEnv with the collection settings."""
    return _gym().make(game_id, full_action_space=full_action_space, repeat_action_probability=0.0)


@functools.cache
def minimal_action_set(game_id: str) -> tuple[int, ...]:
    """The game's own actions as ALE full-action ids, in the game's order (read once a process:
    each read opens an emulator, and a stage with its baselines asks a dozen times)."""
    env = _gym().make(game_id)
    try:
        return tuple(int(getattr(a, "value", a)) for a in env.unwrapped.ale.getMinimalActionSet())
    finally:
        env.close()


def rom_path(game_id: str) -> str:
    """`SpaceInvadersNoFrameskip-v4` → the ROM inside the ale-py wheel (`…/space_invaders.bin`)."""
    import ale_py

    return str(ale_py.roms.get_rom_path(_gym().spec(game_id).kwargs["game"]))


def open_emulator(rom: str, seed: int, max_episode_frames: int = 0):
    """A raw ALE emulator as the NoFrameskip-v4 ids configure it (no sticky actions).

    With `max_episode_frames`, ALE itself truncates episodes: the step that reaches the limit
    is emulated and then reports game over (`max_num_frames_per_episode`, as AtariEnv sets it).
    """
    import ale_py

    _gym()
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.setInt("max_num_frames_per_episode", max_episode_frames)
    ale.loadROM(rom)
    return ale
