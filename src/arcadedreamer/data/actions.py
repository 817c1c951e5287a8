"""ALE's 18 actions, each game's minimal set, and parsing of user action strings.

Inside the models every action is one of ALE's full 18 ids (same order for every game).
On the command line an action is a name (`FIRE`, `UPLEFTFIRE`) or a number of the game's
own minimal action set, as `arcadedreamer actions --game ID` lists it.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from arcadedreamer.config import MAX_DREAM_STEPS
from arcadedreamer.data.atari import minimal_action_set
from arcadedreamer.errors import UserError

# ALE's canonical full action set (ale_py.Action order).
FULL_ACTIONS: tuple[str, ...] = (
    "NOOP",
    "FIRE",
    "UP",
    "RIGHT",
    "LEFT",
    "DOWN",
    "UPRIGHT",
    "UPLEFT",
    "DOWNRIGHT",
    "DOWNLEFT",
    "UPFIRE",
    "RIGHTFIRE",
    "LEFTFIRE",
    "DOWNFIRE",
    "UPRIGHTFIRE",
    "UPLEFTFIRE",
    "DOWNRIGHTFIRE",
    "DOWNLEFTFIRE",
)
NUM_ACTIONS = len(FULL_ACTIONS)
ACTION_ID = {name: i for i, name in enumerate(FULL_ACTIONS)}


@functools.cache
def minimal_action_ids(game_id: str) -> tuple[int, ...]:
    """The game's minimal action set as full-action ids, in the game's own order."""
    return minimal_action_set(game_id)


def minimal_action_names(game_id: str) -> list[str]:
    return [FULL_ACTIONS[i] for i in minimal_action_ids(game_id)]


def describe_actions(game_id: str) -> str:
    return ", ".join(f"{n}={name}" for n, name in enumerate(minimal_action_names(game_id)))


def action_from_keys(up: bool, down: bool, left: bool, right: bool, fire: bool) -> int:
    """Arrow keys and fire combined into one of ALE's full-action ids (opposites cancel)."""
    vertical = "UP" if up and not down else "DOWN" if down and not up else ""
    horizontal = "RIGHT" if right and not left else "LEFT" if left and not right else ""
    name = vertical + horizontal + ("FIRE" if fire else "")
    return ACTION_ID[name or "NOOP"]


def parse_actions(text: str, game_id: str) -> list[int]:
    """`"FIRE,RIGHT,2"` → full-action ids; numbers index the game's minimal set."""
    minimal = minimal_action_ids(game_id)
    valid = f"valid actions for {game_id}: {describe_actions(game_id)} (or any of {', '.join(FULL_ACTIONS)})"
    if not text.strip():
        raise UserError(f"--actions is empty; {valid}")
    count = text.count(",") + 1
    if count > MAX_DREAM_STEPS:
        raise UserError(
            f"--actions: {count} actions; at most {MAX_DREAM_STEPS} (use --steps for long random dreams)"
        )
    actions = []
    for position, raw in enumerate(text.split(","), start=1):
        token = raw.strip()
        if not token:
            raise UserError(f"--actions: empty token at position {position} (stray comma?); {valid}")
        if re.fullmatch(r"-?[0-9]+", token):  # ASCII digits only: str.isdigit also takes ² and ٣
            number = int(token)
            if not 0 <= number < len(minimal):
                raise UserError(f"--actions: '{token}' is out of range 0…{len(minimal) - 1}; {valid}")
            actions.append(minimal[number])
        elif token.upper() in ACTION_ID:
            actions.append(ACTION_ID[token.upper()])
        else:
            raise UserError(f"--actions: unknown action '{token}'; {valid}")
    return actions


def format_actions(action_ids: list[int] | np.ndarray) -> str:
    return ",".join(FULL_ACTIONS[int(a)] for a in action_ids)
