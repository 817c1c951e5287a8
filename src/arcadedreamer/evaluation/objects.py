"""Object scores: does a predicted frame show the ball where the emulator says it is?

Full-frame PSNR cannot see a one-pixel ball (a model without it scores 41 dB on Breakout), so
these scores look where the truth is. The truth comes from the emulator's RAM
(`data/objects.py`), never from a model's pixels. Pure functions over frames in [0, 1].

- A predicted frame *shows the ball* when, within `tolerance` frame pixels of the true ball,
  a 2×2 block is brighter than the ball-free true frame by at least `visibility` × the true
  ball's own brightness, and the prediction around that window is clean (noise is no ball).
- A *false ball* is a 2×2 block of the open court, away from the true ball and the player's
  track, as bright above the ball-free true frame as `visibility` × a typical ball.
- The *player position* is the centroid of the frame's brightness above the court along the
  player's track; its error is in frame pixels.
- A miss is *explained* as one of three kinds (`BALL_OUTCOMES`, `PLAYER_OUTCOMES`): *faded*
  (something at the right place, but too dim or smeared to count), *misplaced* (a whole
  object's brightness drawn elsewhere) or *absent* (neither). Faded misses point at blur from
  averaging uncertain futures, misplaced ones at drift, absent ones at a model that dropped
  the object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arcadedreamer.data.objects import (
    GameSpec,
    ObjectBoxes,
    box_coverage,
    frame_centres,
    frame_region,
    frame_scale,
)

MIN_MASS = 8 / 255  # a true ball fainter than this (mostly hidden) is not scored
FAINT = 0.2  # a miss drawn with at least this fraction of the truth's brightness is "faded", not absent
OUTCOMES = ("hit", "faded", "misplaced", "absent")  # what each scored frame of a prediction shows
NOT_SCORED = -1  # outcome of a frame without a scorable ball or player


PLAYER_READABLE = 2.0  # frame pixels: the true frame must show the player this close to RAM
NO_PLAYER = 1e-3  # brightness above the court, summed along the track, under which no player is drawn


@dataclass(frozen=True)
class ObjectTruth:
    """The truth the object scores compare against, for B frames."""

    erased: np.ndarray  # (B, H, W): the true frame with the ball's pixels set to the court level
    centres: np.ndarray  # (B, 2): the ball's centre (x, y) in frame pixels; NaN where not scored
    mass: np.ndarray  # (B,): the true ball's brightness above the court, summed over the 2×2
    #                   block holding it (steady whatever its sub-pixel position); NaN: not scored
    player: np.ndarray  # (B,): the player's position along its axis; NaN where not scored
    player_mass: np.ndarray  # (B,): the true player's brightness above the court in its track
    player_half: np.ndarray  # (B,): half the player's length along its axis, frame pixels


def frame_side(frames: np.ndarray) -> int:
    """The side of square frames (…, S, S): the RAM's boxes map onto square frames only."""
    height, width = frames.shape[-2:]
    if height != width:
        raise ValueError(f"object scores need square frames, got {height}×{width}")
    return width


def block_sums(images: np.ndarray) -> np.ndarray:
    """(..., H, W) → (..., H-1, W-1): sums over every 2×2 block. A ball (under 1×1.3 frame
    pixels at 64×64) always lies within one block, so its block sum is its whole brightness."""
    return images[..., :-1, :-1] + images[..., 1:, :-1] + images[..., :-1, 1:] + images[..., 1:, 1:]


def object_truth(true_frames: np.ndarray, boxes: ObjectBoxes, spec: GameSpec) -> ObjectTruth:
    """true_frames (B, H, W) in [0, 1] and the RAM's boxes for them.

    A ball is scored where it lies wholly inside the open court (over the empty court, not
    over bricks, walls or paddles) and is visible in the true frame. The player is scored
    where the true frame itself shows it within PLAYER_READABLE pixels of the RAM's position
    (not where a HUD element shares its track, as SpaceInvaders' lives counter does).
    """
    ball_boxes = boxes.ball
    size = frame_side(true_frames)
    erased = np.array(true_frames, dtype=np.float32, copy=True)
    centres = frame_centres(ball_boxes, size)
    mass = np.full(len(true_frames), np.nan)
    court = spec.court_level / 255.0
    x0, y0, x1, y1 = spec.open_court
    for i, box in enumerate(ball_boxes):
        if np.isnan(box).any():
            continue
        footprint = box_coverage(box, size) > 0
        erased[i][footprint] = court
        inside = box[0] >= x0 and box[1] >= y0 and box[0] + box[2] <= x1 and box[1] + box[3] <= y1
        ball_mass = float(block_sums(true_frames[i] - erased[i]).max())
        if inside and ball_mass >= MIN_MASS:
            mass[i] = ball_mass
        else:
            centres[i] = np.nan  # present but not scorable: no recall, and no false ball near it
    player = frame_centres(boxes.player, size)[:, spec.player_axis]
    readable = np.abs(player_positions(true_frames, spec) - player) <= PLAYER_READABLE
    profile, _ = track_profiles(true_frames, spec)
    return ObjectTruth(
        erased=erased,
        centres=centres,
        mass=mass,
        player=np.where(readable, player, np.nan),
        player_mass=profile.sum(axis=1),
        player_half=boxes.player[:, 2 + spec.player_axis] * frame_scale(size)[spec.player_axis] / 2,
    )


def _window(centre: np.ndarray, radius: int, size: int) -> tuple[slice, slice]:
    col, row = int(centre[0]), int(centre[1])  # the frame pixel holding the centre
    return (
        slice(max(row - radius, 0), min(row + radius + 1, size)),
        slice(max(col - radius, 0), min(col + radius + 1, size)),
    )


def ball_hits(pred: np.ndarray, truth: ObjectTruth, tolerance: int, visibility: float) -> np.ndarray:
    """(B, H, W) predictions → (B,) bool, True where the prediction shows the true ball: a 2×2
    block within `tolerance` pixels of it at least `visibility` × as bright above the ball-free
    truth as the true ball, in a clean neighbourhood. Only meaningful where `truth.mass` is
    finite."""
    peaks, clean = ball_peaks(pred, truth, tolerance, visibility)
    return (peaks >= visibility * truth.mass) & clean


def ball_peaks(
    pred: np.ndarray, truth: ObjectTruth, tolerance: int, visibility: float
) -> tuple[np.ndarray, np.ndarray]:
    """(B, H, W) predictions → (B,) the brightest 2×2 block above the ball-free truth within
    `tolerance` pixels of the true ball (NaN where not scored), and (B,) bool whether the ring
    around that window is clean (close to the truth: noise is not a ball). A tolerance of at
    least 1 keeps a 2×2 block inside the window, even at the frame's edge."""
    size = frame_side(pred)
    peaks = np.full(len(pred), np.nan)
    clean = np.zeros(len(pred), dtype=bool)
    for i in np.flatnonzero(np.isfinite(truth.mass)):
        brighter = pred[i] - truth.erased[i]
        rows, cols = _window(truth.centres[i], tolerance, size)
        peak = block_sums(brighter[rows, cols]).max()  # the 2×2 blocks inside the window
        outer = _window(truth.centres[i], tolerance + 2, size)
        ring = np.abs(brighter[outer]).sum() - np.abs(brighter[rows, cols]).sum()
        ring_pixels = brighter[outer].size - brighter[rows, cols].size
        # noise is not a ball: around the window the prediction must be close to the truth
        clean[i] = ring / ring_pixels < visibility * truth.mass[i] / 8  # the ring is never empty
        peaks[i] = peak
    return peaks, clean


def ball_outcomes(
    pred: np.ndarray,
    truth: ObjectTruth,
    spec: GameSpec,
    tolerance: int,
    visibility: float,
    typical_mass: float,
    elsewhere: np.ndarray | None = None,
) -> np.ndarray:
    """(B, H, W) predictions → (B,) index into OUTCOMES (NOT_SCORED where no ball is scored).

    hit: `ball_hits`. misplaced: otherwise a ball-bright block away from the true ball (a
    false ball). faded: otherwise a block within `tolerance` of the true ball at least FAINT ×
    its brightness (a dim ball, or a streak through the right place). absent: none of these.
    `elsewhere`: the frames' `false_balls`, when already known.
    """
    peaks, clean = ball_peaks(pred, truth, tolerance, visibility)
    if elsewhere is None:
        elsewhere = false_balls(pred, truth, spec, tolerance, visibility * typical_mass)
    outcome = np.full(len(pred), OUTCOMES.index("absent"))
    outcome[peaks >= FAINT * truth.mass] = OUTCOMES.index("faded")
    outcome[elsewhere] = OUTCOMES.index("misplaced")
    outcome[(peaks >= visibility * truth.mass) & clean] = OUTCOMES.index("hit")
    outcome[~np.isfinite(truth.mass)] = NOT_SCORED
    return outcome


def false_balls(
    pred: np.ndarray, truth: ObjectTruth, spec: GameSpec, tolerance: int, threshold: float
) -> np.ndarray:
    """(B, H, W) predictions → (B,) bool: a 2×2 block of the open court, away from the true
    ball and the player's track, at least `threshold` brighter than the ball-free truth."""
    size = frame_side(pred)
    rows, cols = frame_region(spec.open_court, size)
    track_rows, track_cols = _track(spec, size)
    allowed = np.zeros((size, size), dtype=bool)
    allowed[rows, cols] = True
    allowed[
        max(track_rows.start - 1, 0) : track_rows.stop + 1, max(track_cols.start - 1, 0) : track_cols.stop + 1
    ] = False
    found = np.zeros(len(pred), dtype=bool)
    for i in range(len(pred)):
        mask = allowed.copy()
        if np.isfinite(truth.centres[i]).all():
            mask[_window(truth.centres[i], tolerance, size)] = False
        block_allowed = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
        found[i] = bool((block_sums(pred[i] - truth.erased[i]) >= threshold)[block_allowed].any())
    return found


def _track(spec: GameSpec, size: int) -> tuple[slice, slice]:
    """The player's track in frame pixels: along its axis the pixels wholly inside, across it
    every pixel it touches (a paddle spans parts of two rows at 64×64)."""
    inside = frame_region(spec.player_track, size)
    touching = frame_region(spec.player_track, size, touching=True)
    return (touching[0], inside[1]) if spec.player_axis == 0 else (inside[0], touching[1])


def track_profiles(frames: np.ndarray, spec: GameSpec) -> tuple[np.ndarray, np.ndarray]:
    """(B, H, W) frames → (B, L) brightness above the court along the player's track (summed
    across it), and (L,) the frame coordinate of each of its pixel centres."""
    rows, cols = _track(spec, frame_side(frames))
    band = np.clip(frames[:, rows, cols] - spec.court_level / 255.0, 0, None)  # (B, h, w)
    if spec.player_axis == 0:
        weights, start = band.sum(axis=1), cols.start
    else:
        weights, start = band.sum(axis=2), rows.start
    return weights, start + np.arange(weights.shape[1]) + 0.5


def player_positions(frames: np.ndarray, spec: GameSpec) -> np.ndarray:
    """(B, H, W) frames → (B,) the player's position along its axis, in frame pixels (pixel
    centres at +0.5), from the brightness above the court in its track; NaN where none."""
    weights, coords = track_profiles(frames, spec)
    mass = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > NO_PLAYER, (weights * coords).sum(axis=1) / mass, np.nan)


def player_errors(pred: np.ndarray, truth: ObjectTruth, spec: GameSpec) -> np.ndarray:
    """(B,) |predicted − true| player position in frame pixels (NaN where not scored); a
    prediction with no player drawn counts as the track's half length (a guess at its middle)."""
    true = truth.player
    predicted = player_positions(pred, spec)
    along = _track(spec, frame_side(pred))[1 - spec.player_axis]
    return np.where(np.isnan(predicted), (along.stop - along.start) / 2, np.abs(predicted - true))


def player_outcomes(
    pred: np.ndarray, truth: ObjectTruth, spec: GameSpec, tolerance: int, visibility: float
) -> np.ndarray:
    """(B, H, W) predictions → (B,) index into OUTCOMES (NOT_SCORED where the player is not).

    absent: the track holds under FAINT × the true player's brightness. misplaced: otherwise its
    centre is more than `tolerance` pixels off. faded: otherwise under `visibility` × the true
    brightness lies within the player's extent (± tolerance), or as much lies outside it (a
    smear). hit: the rest — the player drawn whole at the right place.
    """
    weights, coords = track_profiles(pred, spec)
    total = weights.sum(axis=1)
    near_mask = np.abs(coords[None] - truth.player[:, None]) <= (truth.player_half + tolerance)[:, None]
    near = (weights * near_mask).sum(axis=1)
    need = visibility * truth.player_mass
    with np.errstate(invalid="ignore"):
        off = np.abs(player_positions(pred, spec) - truth.player) > tolerance
    outcome = np.full(len(pred), OUTCOMES.index("hit"))
    outcome[(near < need) | (total - near >= need)] = OUTCOMES.index("faded")
    outcome[off] = OUTCOMES.index("misplaced")
    outcome[total < FAINT * truth.player_mass] = OUTCOMES.index("absent")
    outcome[~np.isfinite(truth.player) | (truth.player_mass <= 0)] = NOT_SCORED
    return outcome


def outcome_shares(outcomes: np.ndarray) -> dict[str, float]:
    """(B,) outcomes → the share of each of OUTCOMES among the scored frames (NaN: none scored)."""
    scored = outcomes[outcomes != NOT_SCORED]
    if len(scored) == 0:
        return dict.fromkeys(OUTCOMES, float("nan"))
    return {name: float((scored == i).mean()) for i, name in enumerate(OUTCOMES)}


@dataclass(frozen=True)
class ObjectScores:
    ball_recall: float  # of frames with a scorable ball, the fraction whose prediction shows it
    false_ball_rate: float  # fraction of frames with a ball drawn where there is none
    player_error: float  # mean |predicted − true| player position, frame pixels
    scored_balls: int  # frames the recall is over
    scored_players: int  # frames the player error is over
    ball_faded: float  # of scored balls: a dim or smeared ball at the right place
    ball_misplaced: float  # of scored balls: no ball there, a ball drawn elsewhere
    ball_absent: float  # of scored balls: neither
    player_recall: float  # of scored players: drawn whole at the right place
    player_faded: float  # of scored players: at the right place, too dim or smeared
    player_misplaced: float  # of scored players: centred more than the tolerance away
    player_absent: float  # of scored players: not drawn


def object_scores(
    pred: np.ndarray,
    truth: ObjectTruth,
    spec: GameSpec,
    tolerance: int,
    visibility: float,
    typical_mass: float,
    player_tolerance: float,
) -> ObjectScores:
    """`tolerance` (ball) and `player_tolerance` in frame pixels; `visibility` the fraction of
    the true object's brightness a drawn one needs; `typical_mass` a typical ball's brightness
    (what a false ball must reach)."""
    false = false_balls(pred, truth, spec, tolerance, visibility * typical_mass)
    balls = outcome_shares(ball_outcomes(pred, truth, spec, tolerance, visibility, typical_mass, false))
    players = outcome_shares(player_outcomes(pred, truth, spec, player_tolerance, visibility))
    errors = player_errors(pred, truth, spec)
    scored_players = np.isfinite(errors)
    return ObjectScores(
        ball_recall=balls["hit"],
        false_ball_rate=float(false.mean()),
        player_error=float(errors[scored_players].mean()) if scored_players.any() else float("nan"),
        scored_balls=int(np.isfinite(truth.mass).sum()),
        scored_players=int(scored_players.sum()),
        ball_faded=balls["faded"],
        ball_misplaced=balls["misplaced"],
        ball_absent=balls["absent"],
        player_recall=players["hit"],
        player_faded=players["faded"],
        player_misplaced=players["misplaced"],
        player_absent=players["absent"],
    )
