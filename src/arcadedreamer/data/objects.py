"""Where each game's ball and player are, read from the emulator's RAM: the object scores' truth.

Addresses and offsets follow AtariARI (Anand et al. 2019) and OCAtari's `ram/` extractors;
`tests/test_objects.py` checks every map against the rendered screen over hundreds of frames.
Boxes are (x, y, width, height) in pixels of ALE's 210×160 screen, NaN where the object is
not on screen; `frame_boxes` maps them onto the stored frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SCREEN_HEIGHT, SCREEN_WIDTH = 210, 160
RAM_SIZE = 128
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in screen pixels (x1, y1 exclusive)


@dataclass(frozen=True)
class ObjectBoxes:
    ball: np.ndarray  # (N, 4) float: x, y, width, height; NaN rows where no ball is on screen
    player: np.ndarray  # (N, 4) float, same layout


@dataclass(frozen=True)
class GameSpec:
    """What the object scores need to know about one game's screen."""

    boxes: Callable[[np.ndarray], ObjectBoxes]  # (N, 128) uint8 RAM → boxes
    open_court: Box  # where the ball flies over the empty court: the region balls are scored in
    court_level: int  # gray level (0-255) of the empty court in the stored frames
    player_track: Box  # the band the player moves in (its position is read from it)
    player_axis: int  # 0: the player moves along x, 1: along y


def _nan_boxes(count: int) -> np.ndarray:
    return np.full((count, 4), np.nan, dtype=np.float64)


def _breakout(ram: np.ndarray) -> ObjectBoxes:
    ram = ram.astype(np.int64)
    ball = _nan_boxes(len(ram))
    ball_y = ram[:, 101] + 9
    present = (ram[:, 101] != 0) & (ball_y <= 196)
    ball[present] = np.stack(
        [ram[present, 99] - 49, ball_y[present], np.full(present.sum(), 2), np.full(present.sum(), 4)], axis=1
    )
    # The paddle is 16 pixels wide and slides behind the side walls (x < 8 or x >= 152).
    left = np.clip(ram[:, 72] - 47, 8, 152)
    right = np.clip(ram[:, 72] - 47 + 16, 8, 152)
    player = np.stack([left, np.full(len(ram), 189), right - left, np.full(len(ram), 4)], 1)
    return ObjectBoxes(ball=ball, player=player.astype(np.float64))


def _pong(ram: np.ndarray) -> ObjectBoxes:
    ram = ram.astype(np.int64)
    # The ball is 4 lines tall and the paddle 16, each drawn from 14 or 15 (ball) / 13 or 14
    # (paddle) lines above its address depending on frame timing: the boxes hold both.
    ball = _nan_boxes(len(ram))
    present = ram[:, 54] != 0
    ball[present] = np.stack(
        [ram[present, 49] - 49, ram[present, 54] - 15, np.full(present.sum(), 2), np.full(present.sum(), 5)],
        axis=1,
    )
    # The paddle is clipped by the court's top (row 34) and bottom (row 194) walls.
    top = np.clip(ram[:, 51] - 14, 34, 194)
    bottom = np.clip(ram[:, 51] + 3, 34, 194)
    player = np.stack([np.full(len(ram), 140), top, np.full(len(ram), 4), bottom - top], axis=1)
    return ObjectBoxes(ball=ball, player=player.astype(np.float64))


def _space_invaders(ram: np.ndarray) -> ObjectBoxes:
    """The player's cannon, and as the 'ball' the player's shot. The shot is drawn every other
    frame: on the frames where its height (address 85, two lines a unit) kept the value it
    took on the frame before, while it flies (the value differs from two frames back)."""
    ram = ram.astype(np.int64)
    # the cannon is 7 pixels wide, drawn from 0 to 2 pixels left of its address
    player = np.stack(
        [ram[:, 28] - 2, np.full(len(ram), 185), np.full(len(ram), 9), np.full(len(ram), 10)], 1
    )
    shot = _nan_boxes(len(ram))
    height = ram[:, 85]
    shown = np.zeros(len(ram), dtype=bool)
    shown[2:] = (height[2:] == height[1:-1]) & (height[2:] != height[:-2])
    shot_y = 2 * height + 3
    present = shown & (shot_y >= 30) & (shot_y + 10 <= 185)
    shot[present] = np.stack(
        [ram[present, 87] - 2, shot_y[present], np.full(present.sum(), 1), np.full(present.sum(), 10)], axis=1
    )
    return ObjectBoxes(ball=shot, player=player.astype(np.float64))


GAMES: dict[str, GameSpec] = {
    "BreakoutNoFrameskip-v4": GameSpec(
        boxes=_breakout,
        open_court=(8, 93, 152, 189),
        court_level=0,
        player_track=(8, 189, 152, 193),
        player_axis=0,
    ),
    "PongNoFrameskip-v4": GameSpec(
        boxes=_pong,
        open_court=(20, 34, 140, 194),
        court_level=87,
        player_track=(140, 34, 144, 194),
        player_axis=1,
    ),
    "SpaceInvadersNoFrameskip-v4": GameSpec(
        boxes=_space_invaders,
        open_court=(0, 30, 160, 157),
        court_level=0,
        player_track=(0, 187, 160, 193),
        player_axis=0,
    ),
}


# The lives counter's RAM byte, checked against ALE's own count (tests/test_objects.py); Pong has none.
LIVES_ADDRESS = {"BreakoutNoFrameskip-v4": 57, "SpaceInvadersNoFrameskip-v4": 73}


def lives_lost(game: str, ram: np.ndarray, episode_ends: np.ndarray) -> np.ndarray | None:
    """(N,) bool: the transition from row t lost a life (the counter is lower on the next row of
    the same episode); None for a game without lives. ram (N, 128) as frame t was shown."""
    if game not in LIVES_ADDRESS:
        return None
    lives = ram[:, LIVES_ADDRESS[game]].astype(np.int64)
    lost = np.zeros(len(lives), dtype=bool)
    lost[:-1] = (lives[1:] < lives[:-1]) & ~np.asarray(episode_ends[:-1], dtype=bool)
    return lost


def object_boxes(game: str, ram: np.ndarray) -> ObjectBoxes | None:
    """(N, 128) RAM → the game's object boxes, or None for a game without a map."""
    spec = GAMES.get(game)
    return spec.boxes(np.asarray(ram)) if spec else None


def frame_scale(frame_size: int) -> tuple[float, float]:
    """Frame pixels per screen pixel along (x, y)."""
    return frame_size / SCREEN_WIDTH, frame_size / SCREEN_HEIGHT


def frame_centres(boxes: np.ndarray, frame_size: int) -> np.ndarray:
    """(N, 4) screen boxes → (N, 2) box centres in frame pixel coordinates (x, y), NaN kept.

    Frame pixel (i, j) spans [j, j+1) × [i, i+1), so its centre is at (j + 0.5, i + 0.5).
    """
    sx, sy = frame_scale(frame_size)
    return np.stack([(boxes[:, 0] + boxes[:, 2] / 2) * sx, (boxes[:, 1] + boxes[:, 3] / 2) * sy], axis=1)


def frame_region(box: Box, frame_size: int, touching: bool = False) -> tuple[slice, slice]:
    """A screen region → the (rows, cols) slices of the frame pixels lying wholly inside it
    (or, with `touching`, every frame pixel it overlaps)."""
    sx, sy = frame_scale(frame_size)
    x0, y0, x1, y1 = box
    first, last = (np.floor, np.ceil) if touching else (np.ceil, np.floor)
    cols = slice(int(first(x0 * sx)), int(last(x1 * sx)))
    rows = slice(int(first(y0 * sy)), int(last(y1 * sy)))
    return rows, cols


def box_coverage(box: np.ndarray, frame_size: int) -> np.ndarray:
    """One screen box (x, y, w, h) → (frame_size, frame_size) fraction of each frame pixel it
    covers: INTER_AREA's weights, so a uniform object of contrast c adds c × coverage."""
    sx, sy = frame_scale(frame_size)
    edges = np.arange(frame_size + 1)
    x0, x1 = box[0] * sx, (box[0] + box[2]) * sx
    y0, y1 = box[1] * sy, (box[1] + box[3]) * sy
    cover_x = np.clip(np.minimum(edges[1:], x1) - np.maximum(edges[:-1], x0), 0, None)
    cover_y = np.clip(np.minimum(edges[1:], y1) - np.maximum(edges[:-1], y0), 0, None)
    return np.outer(cover_y, cover_x)
