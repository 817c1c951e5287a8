"""RAM object maps against the rendered screen, and the object scores on synthetic frames."""

import gymnasium as gym
import numpy as np
import pytest

from arcadedreamer.data.objects import (
    GAMES,
    LIVES_ADDRESS,
    ObjectBoxes,
    box_coverage,
    lives_lost,
    object_boxes,
)
from arcadedreamer.data.preprocessing import preprocess_frame
from arcadedreamer.evaluation.objects import (
    FAINT,
    MIN_MASS,
    NO_PLAYER,
    NOT_SCORED,
    OUTCOMES,
    PLAYER_READABLE,
    ObjectTruth,
    ball_hits,
    ball_outcomes,
    block_sums,
    false_balls,
    object_scores,
    object_truth,
    outcome_shares,
    player_errors,
    player_outcomes,
    player_positions,
)

# colour of each game's ball (or shot) and player on the RGB screen, and how to serve
BALL_RGB = {
    "BreakoutNoFrameskip-v4": (200, 72, 72),
    "PongNoFrameskip-v4": (236, 236, 236),
    "SpaceInvadersNoFrameskip-v4": (142, 142, 142),
}
PLAYER_RGB = {
    "BreakoutNoFrameskip-v4": (200, 72, 72),
    "PongNoFrameskip-v4": (92, 186, 92),
    "SpaceInvadersNoFrameskip-v4": (50, 132, 50),
}


def play(game: str, steps: int = 800, seed: int = 3):
    """Real ALE: RGB screens and RAM of a held random policy that fires often (serves)."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(game, full_action_space=True, repeat_action_probability=0.0)
    rng = np.random.default_rng(seed)
    screen, _ = env.reset(seed=seed)
    screens, rams, action = [screen], [env.unwrapped.ale.getRAM().copy()], 0
    for t in range(steps):
        if t % 6 == 0:
            action = 1 if rng.random() < 0.3 else int(rng.integers(18))
        screen, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            screen, _ = env.reset(seed=seed + t)
        screens.append(screen)
        rams.append(env.unwrapped.ale.getRAM().copy())
    env.close()
    return np.stack(screens), np.stack(rams)


@pytest.fixture(scope="module", params=list(GAMES))
def played(request):
    game = request.param
    screens, rams = play(game)
    return game, screens, rams, object_boxes(game, rams)


def _pixels(screen, rgb, region):
    x0, y0, x1, y1 = region
    mask = np.zeros(screen.shape[:2], dtype=bool)
    mask[y0:y1, x0:x1] = np.all(screen[y0:y1, x0:x1] == rgb, axis=-1)
    return mask


def test_the_ram_ball_box_holds_the_ball_drawn_on_screen(played):
    """Where the RAM puts a ball over the open court, every ball-coloured pixel of the court
    lies in its box; where it puts none, the court has none."""
    game, screens, _, boxes = played
    spec = GAMES[game]
    agree = checked = 0
    for screen, box in zip(screens, boxes.ball):
        if game == "SpaceInvadersNoFrameskip-v4":  # shots share their colour with the aliens' shots
            if np.isnan(box).any():
                continue
            x = int(box[0])
            region = (x, spec.open_court[1], x + 1, spec.open_court[3])
        else:
            region = spec.open_court
        drawn = _pixels(screen, BALL_RGB[game], region)
        if np.isnan(box).any():
            agree += not drawn.any()
        else:
            x, y, w, h = box.astype(int)
            inside = region[0] <= x and region[1] <= y and x + w <= region[2] and y + h <= region[3]
            if not inside:
                continue
            in_box = drawn[y : y + h, x : x + w].sum()
            agree += drawn.any() and in_box == drawn.sum()
        checked += 1
    assert checked >= 150, f"only {checked} frames to check"
    assert agree / checked >= 0.97, f"{game}: RAM and screen agree on {agree} of {checked} frames"


def test_the_ram_player_box_holds_the_player_drawn_on_screen(played):
    game, screens, _, boxes = played
    spec = GAMES[game]
    agree = shown = 0
    for screen, box, ball in zip(screens, boxes.player, boxes.ball):
        drawn = _pixels(screen, PLAYER_RGB[game], spec.player_track)
        if not drawn.any():  # between lives, or blinking
            continue
        if PLAYER_RGB[game] == BALL_RGB[game] and ball[1] + ball[3] > spec.player_track[1]:
            continue  # Breakout: the ball (same colour) is in the paddle's rows
        x, y, w, h = box.astype(int)
        agree += drawn[y : y + h, x : x + w].sum() == drawn.sum()
        shown += 1
    assert shown >= 0.7 * len(screens)
    assert agree / shown >= 0.97, f"{game}: player in its box on {agree} of {shown} frames"


def test_the_ball_box_maps_onto_the_frame_pixels_the_ball_changes(played):
    """Erasing the ball from the screen changes exactly the frame pixels its box covers."""
    game, screens, _, boxes = played
    spec = GAMES[game]
    court_rgb = screens[0][spec.open_court[1] + 1, spec.open_court[0] + 1] if spec.court_level else (0, 0, 0)
    checked = 0
    for screen, box in zip(screens, boxes.ball):
        if np.isnan(box).any():
            continue
        x, y, w, h = box.astype(int)
        ball = np.zeros(screen.shape[:2], dtype=bool)
        ball[y : y + h, x : x + w] = np.all(screen[y : y + h, x : x + w] == BALL_RGB[game], axis=-1)
        if ball.sum() < 8:
            continue  # partly hidden
        erased = screen.copy()
        erased[ball] = court_rgb
        changed = preprocess_frame(screen) != preprocess_frame(erased)
        assert changed.any()
        assert not (changed & (box_coverage(box, 64) == 0)).any(), f"{game}: a change outside the mapped box"
        checked += 1
    assert checked >= 100


def test_the_player_read_from_true_frames_matches_the_ram(played):
    game, screens, _, boxes = played
    spec = GAMES[game]
    frames = np.stack([preprocess_frame(s) for s in screens]).astype(np.float32) / 255
    truth = object_truth(frames, boxes, spec)
    assert np.isfinite(truth.player).mean() >= 0.8, "most frames show the player where the RAM says"
    read = player_positions(frames, spec)
    ok = np.isfinite(truth.player)
    assert np.abs(read[ok] - truth.player[ok]).mean() < 0.6


# --- the scores on synthetic frames ------------------------------------------------------------

BREAKOUT = GAMES["BreakoutNoFrameskip-v4"]


def synthetic(ball_xy=(70, 140), paddle_x=60):
    """One 64×64 Breakout-like frame drawn from screen boxes: a ball and a paddle on black."""
    ball = np.array([[*ball_xy, 2, 4]], dtype=float)
    player = np.array([[paddle_x, 189, 16, 4]], dtype=float)
    frame = 0.43 * box_coverage(ball[0], 64) + 0.43 * box_coverage(player[0], 64)
    return frame[None].astype(np.float32), ObjectBoxes(ball=ball, player=player)


def scores(pred, truth, player_tolerance=2.0):
    return object_scores(
        pred, truth, BREAKOUT, tolerance=2, visibility=0.5, typical_mass=float(truth.mass[0]),
        player_tolerance=player_tolerance,
    )  # fmt: skip


def test_a_ball_at_the_right_place_scores_recall_one_and_no_false_ball():
    frame, boxes = synthetic()
    truth = object_truth(frame, boxes, BREAKOUT)
    result = scores(frame, truth)
    assert (result.ball_recall, result.false_ball_rate, result.scored_balls) == (1.0, 0.0, 1)
    assert result.player_error < 0.3
    shifted, _ = synthetic(ball_xy=(72, 143))  # 0.8 and 0.9 frame pixels off: within tolerance
    assert ball_hits(shifted, truth, 2, 0.5).all()
    for xy in ((78, 140), (70, 150)):  # 3.2 frame pixels right, 3.0 below: beyond it
        beyond, _ = synthetic(ball_xy=xy)
        assert not ball_hits(beyond, truth, 2, 0.5).any(), xy


@pytest.mark.parametrize(
    "name",
    ["absent", "misplaced", "smeared", "noise"],
)
def test_a_missing_misplaced_smeared_or_noisy_ball_scores_zero(name):
    frame, boxes = synthetic()
    truth = object_truth(frame, boxes, BREAKOUT)
    no_ball = frame - 0.43 * box_coverage(boxes.ball[0], 64)[None]
    if name == "absent":
        pred = no_ball
    elif name == "misplaced":  # 4 frame pixels right: beyond the 2-pixel tolerance
        pred, _ = synthetic(ball_xy=(80, 140))
    elif name == "smeared":  # the same brightness spread over 5×5 pixels: below visibility
        pred = no_ball.copy()
        row, col = int(truth.centres[0, 1]), int(truth.centres[0, 0])
        pred[0, row - 2 : row + 3, col - 2 : col + 3] += truth.mass[0] / 25
    else:
        pred = np.random.default_rng(0).random(frame.shape).astype(np.float32)
    result = scores(pred, truth)
    assert result.ball_recall == 0.0, name
    if name == "misplaced":
        assert result.false_ball_rate == 1.0, "a ball drawn where there is none"
    if name == "noise":
        assert result.false_ball_rate == 1.0, "noise draws balls everywhere, so it is flagged"


def test_a_frame_without_a_ball_counts_a_drawn_ball_as_false():
    frame, boxes = synthetic()
    empty = ObjectBoxes(ball=np.full((1, 4), np.nan), player=boxes.player)
    truth = object_truth(frame - 0.43 * box_coverage(boxes.ball[0], 64)[None], empty, BREAKOUT)
    assert np.isnan(truth.mass).all()
    assert false_balls(frame, truth, BREAKOUT, 2, 0.2).all()
    assert not false_balls(truth.erased, truth, BREAKOUT, 2, 0.2).any()
    assert np.isnan(object_scores(frame, truth, BREAKOUT, 2, 0.5, 0.4, 2.0).ball_recall)


def test_a_ball_is_scored_from_min_mass_up():
    frame, boxes = synthetic()
    ball = 0.43 * box_coverage(boxes.ball[0], 64)[None]
    full = float(object_truth(frame, boxes, BREAKOUT).mass[0])  # the drawn ball's block sum
    assert full > MIN_MASS and MIN_MASS == pytest.approx(8 / 255)
    for mass, scored in ((8.2 / 255, True), ((8 / 255 + 8 / 256) / 2, False), (7 / 255, False)):
        dim = frame - ball + ball * (mass / full)
        truth = object_truth(dim.astype(np.float32), boxes, BREAKOUT)
        assert np.isfinite(truth.mass[0]) == scored, mass * 255


def test_the_ball_is_erased_to_the_courts_own_level():
    pong = GAMES["PongNoFrameskip-v4"]  # a grey court (level 87), unlike Breakout's black one
    court = pong.court_level / 255
    ball, paddle = np.array([[80, 100, 2, 4]], dtype=float), np.array([[140, 100, 4, 16]], dtype=float)
    frame = court + (0.9 - court) * (box_coverage(ball[0], 64) + box_coverage(paddle[0], 64))
    truth = object_truth(frame[None].astype(np.float32), ObjectBoxes(ball=ball, player=paddle), pong)
    no_ball = court + (0.9 - court) * box_coverage(paddle[0], 64)
    assert np.allclose(truth.erased[0], no_ball)
    assert truth.mass[0] == pytest.approx(float((frame - no_ball).sum()), rel=1e-5)
    # the paddle is read above the grey court: centred on its box, 108 screen rows → frame rows
    assert player_positions(frame[None], pong)[0] == pytest.approx(108 * 64 / 210, abs=0.3)
    assert truth.player[0] == pytest.approx(108 * 64 / 210, abs=0.3)
    assert truth.player_half[0] == pytest.approx(16 * 64 / 210 / 2)  # Pong's paddle stands upright


def test_the_player_tolerance_decides_a_near_miss():
    frame, boxes = synthetic(paddle_x=60)
    truth = object_truth(frame, boxes, BREAKOUT)
    moved, _ = synthetic(paddle_x=67)  # 7 screen pixels = 2.8 frame pixels off
    assert scores(moved, truth, player_tolerance=2.0).player_misplaced == 1.0
    assert scores(moved, truth, player_tolerance=3.0).player_recall == 1.0


def test_player_error_is_the_distance_in_frame_pixels_and_a_missing_player_the_half_track():
    frame, boxes = synthetic(paddle_x=60)
    truth = object_truth(frame, boxes, BREAKOUT)
    moved, _ = synthetic(paddle_x=85)  # 25 screen pixels = 10 frame pixels
    assert scores(moved, truth).player_error == pytest.approx(10.0, abs=0.3)
    blank = np.zeros_like(frame)
    assert scores(blank, truth).player_error > 25
    assert PLAYER_READABLE == 2.0


# --- what a miss is ----------------------------------------------------------------------------


def ball_outcome(pred, truth) -> str:
    outcome = ball_outcomes(pred, truth, BREAKOUT, 2, 0.5, float(truth.mass[0]))[0]
    return OUTCOMES[outcome]


def diagonal_streak(frame, truth, length):
    """The true ball's brightness spread along a diagonal of `length` pixels through its centre."""
    streak = frame.copy()
    streak[0] = truth.erased[0]
    row, col = int(truth.centres[0, 1]), int(truth.centres[0, 0])
    for k in range(length):
        streak[0, row - length // 2 + k, col - length // 2 + k] += truth.mass[0] / length
    return streak


@pytest.mark.parametrize(
    "name, expected",
    [
        ("right place", "hit"),
        ("short streak", "hit"),
        ("dim", "faded"),
        ("long streak", "faded"),
        ("4 pixels right", "misplaced"),
        ("two balls, the bright one elsewhere", "misplaced"),
        ("none", "absent"),
        ("a trace", "absent"),
    ],
)
def test_a_ball_miss_is_faded_misplaced_or_absent(name, expected):
    frame, boxes = synthetic()
    truth = object_truth(frame, boxes, BREAKOUT)
    ball = 0.43 * box_coverage(boxes.ball[0], 64)[None]
    no_ball = frame - ball
    elsewhere, _ = synthetic(ball_xy=(80, 140))
    pred = {
        "right place": frame,
        "short streak": diagonal_streak(frame, truth, 3),  # two of its pixels in one block: 2/3 bright
        "dim": no_ball + 0.3 * ball,  # 0.3 of the brightness: under visibility 0.5, over FAINT 0.2
        "long streak": diagonal_streak(frame, truth, 7),  # a block holds 2/7 of the ball
        "4 pixels right": elsewhere,
        "two balls, the bright one elsewhere": elsewhere + 0.3 * ball,
        "none": no_ball,
        "a trace": no_ball + 0.1 * ball,
    }[name]
    assert ball_outcome(pred.astype(np.float32), truth) == expected


def test_a_ball_drawn_brighter_than_the_truth_or_in_faint_noise_is_still_shown():
    frame, boxes = synthetic()
    truth = object_truth(frame, boxes, BREAKOUT)
    ball = 0.43 * box_coverage(boxes.ball[0], 64)[None]
    brighter = frame + 2 * ball  # three times the true ball's brightness, nothing around it
    assert ball_outcome(brighter.astype(np.float32), truth) == "hit"
    # a haze of 1/4 the brightness a clean neighbourhood allows, everywhere
    haze = 0.25 * 0.5 * float(truth.mass[0]) / 8
    assert ball_outcome((frame + haze).astype(np.float32), truth) == "hit"


def test_a_ball_over_the_courts_edge_is_not_scored():
    # the open court is x 8-152, y 93-189 (screen pixels): over its walls or the paddle's rows
    for xy in ((151, 140), (7, 140), (70, 187), (70, 92)):
        frame, boxes = synthetic(ball_xy=xy)
        assert np.isnan(object_truth(frame, boxes, BREAKOUT).mass[0]), xy
    for xy in ((148, 183), (8, 140), (70, 93), (150, 185)):  # wholly inside, touching its edges
        frame, boxes = synthetic(ball_xy=xy)
        assert np.isfinite(object_truth(frame, boxes, BREAKOUT).mass[0]), xy


def test_block_sums_add_each_two_by_two_block():
    images = np.arange(9, dtype=float).reshape(3, 3)
    assert block_sums(images).tolist() == [[8.0, 12.0], [20.0, 24.0]]
    assert block_sums(np.stack([images, 2 * images])).shape == (2, 2, 2)


def test_the_ball_shares_add_up_to_one_and_recall_is_the_hit_share():
    frame, boxes = synthetic()
    four = ObjectBoxes(ball=np.repeat(boxes.ball, 4, 0), player=np.repeat(boxes.player, 4, 0))
    truth = object_truth(np.repeat(frame, 4, 0), four, BREAKOUT)
    ball = 0.43 * box_coverage(boxes.ball[0], 64)
    preds = np.repeat(frame, 4, 0)
    preds[1] -= 0.7 * ball  # faded
    preds[2] -= ball  # absent
    preds[3] -= ball  # absent
    result = object_scores(preds, truth, BREAKOUT, 2, 0.5, float(truth.mass[0]), 2.0)
    assert (result.ball_recall, result.ball_faded, result.ball_misplaced, result.ball_absent) == (
        0.25,
        0.25,
        0.0,
        0.5,
    )
    assert outcome_shares(np.array([-1, -1])) == dict.fromkeys(OUTCOMES, pytest.approx(np.nan, nan_ok=True))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("right place", "hit"),
        ("1 pixel off", "hit"),
        ("10 pixels off", "misplaced"),
        ("dim", "faded"),
        ("smeared over the track", "faded"),
        ("none", "absent"),
    ],
)
def test_a_paddle_miss_is_faded_misplaced_or_absent(name, expected):
    frame, boxes = synthetic(paddle_x=72)  # centred in the track: a smear keeps its centre
    truth = object_truth(frame, boxes, BREAKOUT)
    paddle = 0.43 * box_coverage(boxes.player[0], 64)[None]
    no_paddle = frame - paddle
    rows = slice(int(189 * 64 / 210), int(np.ceil(193 * 64 / 210)))
    smeared = no_paddle.copy()
    smeared[0, rows, 4:60] += paddle.sum() / (56 * (rows.stop - rows.start))
    pred = {
        "right place": frame,
        "1 pixel off": synthetic(paddle_x=74)[0],  # 2.5 screen pixels = 1 frame pixel
        "10 pixels off": synthetic(paddle_x=97)[0],
        "dim": no_paddle + 0.3 * paddle,
        "smeared over the track": smeared,
        "none": no_paddle,
    }[name]
    outcome = player_outcomes(pred.astype(np.float32), truth, BREAKOUT, tolerance=2, visibility=0.5)[0]
    assert OUTCOMES[outcome] == expected


# --- each bound is inclusive, as documented: values exactly on it ------------------------------


def hand_truth(ball_centre=(20.5, 20.5), ball_mass=1.0, player=30.5, player_mass=2.0) -> ObjectTruth:
    """One scored frame of a black court, its truth given directly (exact binary values)."""
    return ObjectTruth(
        erased=np.zeros((1, 64, 64), dtype=np.float32),
        centres=np.array([ball_centre], dtype=float),
        mass=np.array([ball_mass]),
        player=np.array([player]),
        player_mass=np.array([player_mass]),
        player_half=np.array([3.0]),
    )


def with_block(value: float, row: int = 20, col: int = 20) -> np.ndarray:
    """A black frame with one 2×2 block of `value` per pixel (block sum 4 × value)."""
    pred = np.zeros((1, 64, 64), dtype=np.float32)
    pred[0, row : row + 2, col : col + 2] = value
    return pred


def test_a_ball_drawn_exactly_as_bright_as_the_visibility_asks_is_shown_and_at_faint_is_faded():
    truth = hand_truth()  # true ball 1.0; visibility 0.5 asks for a block sum of 0.5
    assert ball_hits(with_block(0.125), truth, 2, 0.5).all()
    assert ball_outcomes(with_block(0.125), truth, BREAKOUT, 2, 0.5, 1.0)[0] == OUTCOMES.index("hit")
    faint = hand_truth(ball_mass=1.25)  # FAINT × 1.25 = 0.25: a block sum of exactly that
    assert FAINT * 1.25 == 4 * 0.0625
    assert ball_outcomes(with_block(0.0625), faint, BREAKOUT, 2, 0.5, 1.25)[0] == OUTCOMES.index("faded")
    assert ball_outcomes(with_block(0.0625 - 1 / 1024), faint, BREAKOUT, 2, 0.5, 1.25)[0] == OUTCOMES.index(
        "absent"
    )


def test_a_true_ball_of_exactly_min_mass_is_scored():
    box = np.array([[68.0, 140.0, 6.0, 8.0]])  # a footprint of at least 2×2 frame pixels
    footprint = box_coverage(box[0], 64) > 0
    rows, cols = np.flatnonzero(footprint.any(1)), np.flatnonzero(footprint.any(0))
    frame = np.zeros((1, 64, 64))  # float64: 4 × 2/255 is exactly 8/255
    frame[0, rows[0] : rows[0] + 2, cols[0] : cols[0] + 2] = 2 / 255
    truth = object_truth(frame, ObjectBoxes(ball=box, player=np.full((1, 4), np.nan)), BREAKOUT)
    assert truth.mass[0] == MIN_MASS


def paddle_profile(weights: dict[int, float]) -> np.ndarray:
    """A black Breakout frame with brightness `weights[column]` in one row of the paddle's track
    (track column c has the frame coordinate c + 0.5)."""
    pred = np.zeros((1, 64, 64), dtype=np.float32)
    for col, weight in weights.items():
        pred[0, 58, col] = weight
    return pred


def paddle_outcome(weights: dict[int, float]) -> str:
    truth = hand_truth()  # the paddle at 30.5 (column 30), half length 3, brightness 2
    return OUTCOMES[player_outcomes(paddle_profile(weights), truth, BREAKOUT, tolerance=2, visibility=0.5)[0]]


def test_a_paddle_exactly_at_the_tolerance_and_its_extent_counts_and_a_smear_of_exactly_half_is_faded():
    assert paddle_outcome({30: 2.0}) == "hit"
    assert paddle_outcome({32: 2.0}) == "hit"  # its centre 2 pixels off: exactly the tolerance
    assert paddle_outcome({33: 2.0}) == "misplaced"
    # brightness 5 pixels either side (half length 3 + tolerance 2) still lies within its extent
    assert paddle_outcome({25: 0.5, 30: 1.0, 35: 0.5}) == "hit"
    # half the true brightness beyond the extent, symmetric so the centre stays: a smear
    assert paddle_outcome({20: 0.5, 30: 1.0, 40: 0.5}) == "faded"
    assert paddle_outcome({20: 0.25, 30: 1.5, 40: 0.25}) == "hit"


def test_object_scores_refuse_frames_that_are_not_square():
    frame, boxes = synthetic()
    with pytest.raises(ValueError, match="square frames, got 64×63"):
        object_truth(frame[:, :, :63], boxes, BREAKOUT)


def test_a_ball_in_the_frames_corner_is_found_and_noise_beyond_the_ring_is_ignored():
    corner = hand_truth(ball_centre=(1.0, 1.0))  # the window is cut by the frame's edges
    assert ball_hits(with_block(0.2, row=0, col=0), corner, 2, 0.5).all()  # half of it would not do
    truth = hand_truth(ball_centre=(30.5, 30.5), ball_mass=0.25)
    pred = with_block(0.0625, row=29, col=29)  # the true ball's brightness, in place
    pred[0, 35, 25:36] = 1.0  # a bright line 5 pixels below: beyond the ring (tolerance 2 + 2)
    assert ball_hits(pred, truth, 2, 0.5).all()
    pred[0, 34, 34] = 1.0  # 4 pixels off: in the ring, far brighter than a clean ring allows
    assert not ball_hits(pred, truth, 2, 0.5).any()


@pytest.mark.parametrize("haze, shown", [(0.95, True), (1.0, False), (1.5, False)])
def test_a_haze_around_the_ball_spoils_it_from_the_allowed_level_on(haze, shown):
    truth = hand_truth(ball_centre=(30.5, 30.5), ball_mass=2.0)  # a clean ring: under 0.5 × 2 / 8
    pred = with_block(0.5, row=29, col=29) + np.float32(haze * 0.5 * 2.0 / 8)
    assert ball_hits(pred, truth, 2, 0.5)[0] == shown


def test_on_a_grey_court_the_true_frame_shows_the_ball_and_the_erased_one_does_not():
    pong = GAMES["PongNoFrameskip-v4"]
    court = pong.court_level / 255
    ball, paddle = np.array([[80, 100, 2, 4]], dtype=float), np.array([[140, 100, 4, 16]], dtype=float)
    frame = (court + (0.9 - court) * (box_coverage(ball[0], 64) + box_coverage(paddle[0], 64)))[None]
    truth = object_truth(frame.astype(np.float32), ObjectBoxes(ball=ball, player=paddle), pong)
    assert ball_outcomes(frame, truth, pong, 2, 0.5, float(truth.mass[0]))[0] == OUTCOMES.index("hit")
    assert ball_outcomes(truth.erased, truth, pong, 2, 0.5, float(truth.mass[0]))[0] == OUTCOMES.index(
        "absent"
    )


def test_a_block_exactly_at_the_threshold_is_a_false_ball():
    truth = hand_truth(ball_centre=(float("nan"), float("nan")))
    assert false_balls(with_block(0.125, row=40, col=30), truth, BREAKOUT, 2, 0.5).all()
    assert not false_balls(with_block(0.124, row=40, col=30), truth, BREAKOUT, 2, 0.5).any()


@pytest.mark.parametrize(
    "game, row, col, false_ball",
    [
        ("BreakoutNoFrameskip-v4", 55, 30, False),  # touches the row above the paddle's track
        ("BreakoutNoFrameskip-v4", 54, 30, True),  # one row further up: the open court
        ("PongNoFrameskip-v4", 30, 54, False),  # touches the column beside the paddle's track
        ("PongNoFrameskip-v4", 30, 53, True),
    ],
)
def test_the_pixels_beside_the_players_track_draw_no_false_ball(game, row, col, false_ball):
    truth = hand_truth(ball_centre=(float("nan"), float("nan")))
    block = with_block(0.125, row=row, col=col)  # only the whole block reaches the threshold 0.5
    assert false_balls(block, truth, GAMES[game], 2, 0.5)[0] == false_ball


def test_a_faint_paddle_is_read_and_none_below_the_noise_floor():
    faint = paddle_profile({30: 1.5 * NO_PLAYER})
    assert player_positions(faint, BREAKOUT)[0] == pytest.approx(30.5)
    # a third of one grey level in all is a paddle drawn very dim, not noise
    assert player_positions(paddle_profile({30: 0.0013}), BREAKOUT)[0] == pytest.approx(30.5)
    assert np.isnan(player_positions(paddle_profile({30: 0.6 * NO_PLAYER}), BREAKOUT)[0])


@pytest.mark.parametrize("game, half_track", [("BreakoutNoFrameskip-v4", 28.0), ("PongNoFrameskip-v4", 24.0)])
def test_a_prediction_without_a_player_costs_half_the_track(game, half_track):
    truth = hand_truth(player=20.5)
    blank = np.full((1, 64, 64), GAMES[game].court_level / 255, dtype=np.float32)
    assert player_errors(blank, truth, GAMES[game])[0] == half_track


def test_a_paddle_at_exactly_the_visibility_is_whole_and_exactly_faint_is_not_absent():
    assert paddle_outcome({30: 1.0}) == "hit"  # half the true brightness 2, all within its extent
    assert paddle_outcome({30: 0.3}) == "absent"  # under FAINT × 2 = 0.4
    truth = hand_truth(player_mass=1.25)  # FAINT × 1.25 = 0.25 exactly
    outcome = player_outcomes(paddle_profile({30: 0.25}), truth, BREAKOUT, tolerance=2, visibility=0.5)[0]
    assert OUTCOMES[outcome] == "faded"


def test_a_player_is_scored_where_the_truth_shows_one():
    for mass, scored in ((0.0, False), (0.5, True)):
        truth = hand_truth(player_mass=mass)
        outcome = player_outcomes(paddle_profile({30: 0.5}), truth, BREAKOUT, tolerance=2, visibility=0.5)[0]
        assert (outcome != NOT_SCORED) == scored, mass


@pytest.mark.parametrize("game", sorted(LIVES_ADDRESS))
def test_the_ram_lives_counter_is_the_emulators_own(game):
    """Random play through several lost lives and a game over: the RAM byte reads ALE's count."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(game)
    env.reset(seed=3)
    rng, counts, ram = np.random.default_rng(0), [], []
    for _ in range(3000):
        *_, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        counts.append(env.unwrapped.ale.lives())
        ram.append(env.unwrapped.ale.getRAM().copy())
        if terminated or truncated:
            env.reset(seed=4)
    env.close()
    assert len(set(counts)) >= 3, "the play lost lives"
    assert np.array_equal(np.array(ram)[:, LIVES_ADDRESS[game]], np.array(counts))


def test_a_life_is_lost_where_the_counter_falls_within_an_episode():
    ram = np.zeros((6, 128), dtype=np.uint8)
    ram[:, 57] = [5, 5, 4, 4, 5, 3]  # a new episode starts at row 4, with 5 lives again
    ends = np.array([False, False, False, True, False, True])
    assert lives_lost("BreakoutNoFrameskip-v4", ram, ends).tolist() == [
        False,
        True,
        False,
        False,
        True,
        False,
    ]
    assert lives_lost("PongNoFrameskip-v4", ram, ends) is None
