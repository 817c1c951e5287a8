"""Preprocessing against cv2, real ALE collection, determinism, stacking and storage."""

import json

import ale_py
import cv2
import numpy as np
import pytest
import torch

import arcadedreamer
from arcadedreamer.config import DEFAULT_GAMES
from arcadedreamer.data.collector import collect_game, collect_to_disk
from arcadedreamer.data.dataset import FrameStacks, gather_stacks, load_episodes, split_episodes
from arcadedreamer.data.emulator import replay
from arcadedreamer.data.preprocessing import (
    NO_REWARD,
    REWARD_SIGNS,
    episode_ids,
    preprocess_frame,
    psnr,
    reward_classes,
    stack_start_indices,
    to_uint8,
    to_unit_float,
)
from arcadedreamer.data.resize import UNKNOWN_LEVEL, AreaResizer, exact_area_resize_supported
from arcadedreamer.data.storage import load_game_data
from arcadedreamer.errors import UserError

SETTINGS = dict(
    num_envs=2,
    frame_size=64,
    hold_min=1,
    hold_max=8,
    max_episode_frames=10_000,
    num_workers=1,
    progress=False,
)


def test_preprocess_matches_cv2_directly():
    rgb = np.random.default_rng(0).integers(0, 256, size=(210, 160, 3), dtype=np.uint8)
    frame = preprocess_frame(rgb)
    expected = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_AREA)
    assert frame.shape == (64, 64) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, expected)


@pytest.mark.parametrize("size", [64, 32, 96])
def test_exact_area_resize_equals_cv2_inter_area_on_random_screens(size):
    assert exact_area_resize_supported(210, 160, size)
    screens = np.random.default_rng(size).integers(0, 256, size=(300, 210, 160), dtype=np.uint8)
    expected = np.stack([cv2.resize(s, (size, size), interpolation=cv2.INTER_AREA) for s in screens])
    np.testing.assert_array_equal(AreaResizer(210, 160, size)(screens), expected)


def test_palette_screens_resized_row_by_row_as_they_change_equal_cv2():
    """Codes + a levels table, and only changed rows recomputed, give cv2's bytes on the gray screen."""
    rng = np.random.default_rng(0)
    levels = rng.permutation(256).astype(np.float32)  # code → gray level
    resizer = AreaResizer(210, 160, 64)
    screen = rng.integers(0, 256, size=(210, 160), dtype=np.uint8)
    previous_screen, previous_frame = None, None
    for _ in range(60):
        screen = screen.copy()
        rows = rng.choice(210, size=rng.integers(0, 12), replace=False)  # a few rows change
        screen[rows] = rng.integers(0, 256, size=(len(rows), 160), dtype=np.uint8)
        frame = np.full((64, 64), 7, dtype=np.uint8)
        assert resizer.resize_into(screen, frame, levels, previous_screen, previous_frame)
        gray = levels[screen].astype(np.uint8)
        np.testing.assert_array_equal(frame, cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA))
        previous_screen, previous_frame = screen, frame
    unknown = levels.copy()
    unknown[screen[100, 50]] = UNKNOWN_LEVEL
    assert not resizer.resize_into(screen, np.zeros((64, 64), np.uint8), unknown), (
        "unlearned code is reported"
    )


def test_sizes_with_rounding_ties_are_left_to_cv2():
    assert not exact_area_resize_supported(210, 160, 84)  # 5/2 x 40/21: even denominator
    with pytest.raises(ValueError, match="rounding ties"):
        AreaResizer(210, 160, 84)


def test_collection_at_a_size_the_kernel_does_not_serve_still_matches_cv2():
    arrays, streams = collect_game("PongNoFrameskip-v4", 60, seed=0, **{**SETTINGS, "frame_size": 84})
    assert arrays["frames"].shape == (60, 84, 84)
    start, length, seed = streams[0]
    emulator, frames = replay("PongNoFrameskip-v4", seed, arrays["actions"][start : start + length - 1], 84)
    emulator.close()
    np.testing.assert_array_equal(frames, arrays["frames"][start : start + length])


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    root = tmp_path_factory.mktemp("collected")
    manifests = collect_to_disk(DEFAULT_GAMES, 300, root, seed=5, **SETTINGS)
    return root, manifests


def test_collection_writes_each_default_game_with_a_manifest(collected):
    root, manifests = collected
    for game, manifest in zip(DEFAULT_GAMES, manifests):
        data = load_game_data(root / game)
        assert data.frames.shape == (300, 64, 64) and data.frames.dtype == np.uint8
        assert data.actions.dtype == np.uint8 and data.actions.max() < 18
        assert data.rewards.dtype == np.float32 and data.episode_ends.dtype == bool
        on_disk = json.loads((root / game / "manifest.json").read_text())
        assert on_disk == manifest
        assert on_disk["game"] == game and on_disk["frames"] == 300 and on_disk["seed"] == 5
        assert on_disk["episodes"] == int(data.episode_ends.sum()) >= 2  # one stream per emulator
        # what makes the bytes, and nothing else: a new opencv must not change a pinned manifest
        assert on_disk["versions"] == {"ale_py": ale_py.__version__, "arcadedreamer": arcadedreamer.__version__,
                                       "resize": "exact area kernel (arcadedreamer)"}  # fmt: skip
        assert len(on_disk["content_hash"]) == 64
        assert data.frames.std() > 0, "real game pixels, not a blank screen"
        # rows that end an episode lead nowhere: no action, no reward
        assert (data.actions[data.episode_ends] == 0).all() and (data.rewards[data.episode_ends] == 0).all()


def test_collected_frames_equal_cv2_preprocessing_of_the_replayed_rgb(collected):
    """Collection (ALE grayscale + our INTER_AREA kernel) gives the bytes cv2 gives on the RGB screen."""
    root, manifests = collected
    for game, manifest in zip(DEFAULT_GAMES, manifests):
        data = load_game_data(root / game)
        start, length, seed = manifest["streams"]["rows"][0]
        emulator, _ = replay(game, seed, [])
        for t in range(length - 1):
            np.testing.assert_array_equal(preprocess_frame(emulator.rgb), data.frames[start + t])
            emulator.step(int(data.actions[start + t]))
        emulator.close()


def test_every_row_equals_the_replayed_emulator_across_game_overs_and_truncations():
    """Last frames, reset frames, rewards and episode ends of every emulator, against gymnasium's
    AtariEnv reset with the emulator's recorded seed (one worker plays the three in turn)."""
    import ale_py
    import gymnasium as gym

    game, limit = "BreakoutNoFrameskip-v4", 600  # seed 3: game overs and truncations
    arrays, streams = collect_game(
        game, 3 * 2400, seed=3, **{**SETTINGS, "num_envs": 3, "num_workers": 1, "max_episode_frames": limit}
    )
    gym.register_envs(ale_py)
    env = gym.make(
        game, full_action_space=True, repeat_action_probability=0.0, max_num_frames_per_episode=limit
    )
    assert [stream[:2] for stream in streams] == [[0, 2400], [2400, 2400], [4800, 2400]]
    outcomes = []
    for start, length, seed in streams:
        rgb, _ = env.reset(seed=seed)
        for t in range(start, start + length):
            np.testing.assert_array_equal(preprocess_frame(rgb), arrays["frames"][t], err_msg=f"row {t}")
            if t == start + length - 1:
                break
            if arrays["episode_ends"][t]:
                rgb, _ = env.reset()
                continue
            rgb, reward, terminated, truncated, _ = env.step(int(arrays["actions"][t]))
            assert arrays["rewards"][t] == reward
            if t + 1 < start + length - 1:  # the last row ends its episode because the quota does
                assert arrays["episode_ends"][t + 1] == (terminated or truncated), f"row {t + 1}"
            if terminated or truncated:
                outcomes.append("game over" if terminated else "truncated")
    env.close()
    assert {"game over", "truncated"} <= set(outcomes), outcomes


@pytest.mark.parametrize("game", DEFAULT_GAMES)
def test_the_ale_seed_changes_nothing_with_sticky_actions_off(game):
    """Why collection may fork every emulator from one loaded emulator (collector's docstring)."""
    from arcadedreamer.data.atari import open_emulator, rom_path

    first, other = (open_emulator(rom_path(game), seed, max_episode_frames=300) for seed in (0, 12345))
    action_set = first.getLegalActionSet()
    episode_ends = 0
    for action in np.random.default_rng(0).integers(0, 18, size=1500):
        assert first.act(action_set[action]) == other.act(action_set[action])
        np.testing.assert_array_equal(first.getScreen(), other.getScreen())
        np.testing.assert_array_equal(first.getRAM(), other.getRAM())
        assert first.game_over() == other.game_over()
        if first.game_over():
            first.reset_game(), other.reset_game()
            episode_ends += 1
    assert episode_ends >= 4, "resets are compared too"


def test_same_seed_gives_byte_identical_data_and_another_seed_differs(tmp_path):
    game = "PongNoFrameskip-v4"
    a = collect_to_disk([game], 200, tmp_path / "a", seed=1, **SETTINGS)[0]
    b = collect_to_disk([game], 200, tmp_path / "b", seed=1, **SETTINGS)[0]
    c = collect_to_disk([game], 200, tmp_path / "c", seed=2, **SETTINGS)[0]
    assert a["content_hash"] == b["content_hash"]
    for name in ("frames.npy", "actions.npy", "rewards.npy", "episode_ends.npy"):
        assert (tmp_path / "a" / game / name).read_bytes() == (tmp_path / "b" / game / name).read_bytes()
    assert c["content_hash"] != a["content_hash"]


def test_policy_holds_actions_for_several_frames():
    arrays, _ = collect_game("BreakoutNoFrameskip-v4", 400, seed=0, **SETTINGS)
    actions = arrays["actions"][~arrays["episode_ends"]]
    changes = np.count_nonzero(np.diff(actions.astype(int)))
    assert changes < len(actions) / 2.5, "held actions (mean hold 4.5 frames), not per-frame flicker"
    assert len(np.unique(actions)) > 10, "the whole 18-action space is explored"


def test_stacks_never_cross_an_episode_boundary():
    ends = np.array([0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0], dtype=bool)
    # episode 0: rows 0-5, episode 1: rows 6-9 (exactly one stack), episode 2: rows 10-13
    assert stack_start_indices(ends, 4).tolist() == [3, 4, 5, 9, 13]
    frames = np.arange(14, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)

    stacks = gather_stacks(torch.from_numpy(frames), torch.tensor([9]), 4)
    assert (stacks[0, :, 0, 0] * 255).round().tolist() == [6, 7, 8, 9]


def test_preprocessing_helpers_by_hand():
    # PSNR of a mean squared error on [0, 1] frames: 10·log10(1/mse); a perfect frame is infinite
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(1.0) == pytest.approx(0.0)
    assert psnr(0.0) == float("inf")
    # episode numbers restart nowhere and step right after each episode's last frame
    ends = np.array([0, 0, 1, 0, 1, 0], dtype=bool)
    assert episode_ids(ends).tolist() == [0, 0, 0, 1, 1, 2]
    assert episode_ids(np.zeros(0, dtype=bool)).tolist() == []
    # a stack needs stack_size frames of one episode; an empty recording has none
    assert stack_start_indices(np.array([1, 0, 0, 0], dtype=bool), 2).tolist() == [2, 3]
    assert stack_start_indices(np.zeros(0, dtype=bool), 4).tolist() == []
    # reward classes index REWARD_SIGNS: the sign of what the action earned
    rewards = np.array([-3.0, 0.0, 0.5, 7.0])
    assert [REWARD_SIGNS[c] for c in reward_classes(rewards)] == [-1.0, 0.0, 1.0, 1.0]
    assert REWARD_SIGNS[NO_REWARD] == 0.0
    # uint8 ↔ [0, 1] floats: exact both ways for every level, rounding and clipping on the way back
    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_unit_float(levels), levels.float() / 255)
    assert to_uint8(to_unit_float(levels)).tolist() == list(range(256))
    assert to_uint8(np.array([-0.5, 0.5 / 255 + 1e-6, 1.7])).tolist() == [0, 1, 255]


def test_validation_split_takes_whole_episodes_per_game(collected):
    root, _ = collected
    episodes = load_episodes(root, DEFAULT_GAMES)
    is_val = split_episodes(episodes, 0.5, seed=0)
    ids = episodes.episode_id
    for episode in np.unique(ids):
        assert len(set(is_val[ids == episode])) == 1, "an episode is wholly train or wholly val"
    for game in range(3):
        rows = episodes.game_index == game
        assert is_val[rows].any() and (~is_val[rows]).any()
    stacks = FrameStacks(episodes, 4, ~is_val)
    assert len(stacks) > 0 and not is_val[stacks.indices.numpy()].any()


def test_corrupted_or_truncated_files_are_detected(collected, tmp_path):
    import shutil

    root, _ = collected
    game_dir = tmp_path / "Breakout"
    shutil.copytree(root / "BreakoutNoFrameskip-v4", game_dir)
    frames = game_dir / "frames.npy"
    frames.write_bytes(frames.read_bytes()[:-100])
    with pytest.raises(UserError, match="does not match its manifest hash .* re-collect"):
        load_game_data(game_dir)
    (game_dir / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt manifest; re-collect"):
        load_game_data(game_dir)
