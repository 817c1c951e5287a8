"""Play mode with the SDL dummy driver: panels, overlay colours, keys, reset, Esc, --record."""

import numpy as np
import pygame
import pytest
from PIL import Image

from arcadedreamer.data.actions import FULL_ACTIONS
from arcadedreamer.data.dataset import FrameStacks, load_episodes
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.viz.play import GAP, HUD, PlaySession, keys_to_action, overlay, run_play
from conftest import run_cli

GAME = "BreakoutNoFrameskip-v4"


@pytest.fixture(scope="module")
def model(trained):
    return ckpt.load_world_model(ckpt.final_checkpoint_path(trained.params, "dynamics"), trained.params)[0]


def test_overlay_colours_on_a_synthetic_pair():
    real = np.zeros((4, 4), dtype=np.uint8)
    pred = np.zeros((4, 4), dtype=np.uint8)
    real[0, 0] = pred[0, 1] = 255
    real[2, 2] = pred[2, 2] = 255
    image = overlay(real, pred)
    assert tuple(image[0, 0]) == (0, 255, 0), "real only: green"
    assert tuple(image[0, 1]) == (255, 0, 0), "predicted only: red"
    assert tuple(image[2, 2]) == (255, 255, 0), "both: yellow"
    assert tuple(image[3, 3]) == (0, 0, 0)


def test_every_arrow_and_space_combination_maps_to_an_ale_action():
    keys = [pygame.K_UP, pygame.K_DOWN, pygame.K_LEFT, pygame.K_RIGHT, pygame.K_SPACE]
    expected = {
        (): "NOOP",
        (pygame.K_SPACE,): "FIRE",
        (pygame.K_UP, pygame.K_RIGHT, pygame.K_SPACE): "UPRIGHTFIRE",
        (pygame.K_DOWN, pygame.K_LEFT): "DOWNLEFT",
        (pygame.K_LEFT,): "LEFT",
        (pygame.K_UP, pygame.K_SPACE): "UPFIRE",
    }
    seen = set()
    for mask in range(32):
        held = {k for i, k in enumerate(keys) if mask >> i & 1}
        pressed = {k: k in held for k in keys}
        name = FULL_ACTIONS[keys_to_action(pressed)]
        seen.add(name)
        combo = tuple(k for k in keys if k in held)
        if combo in expected:
            assert name == expected[combo]
    assert seen == set(FULL_ACTIONS)


def test_session_steps_predicts_and_resets(model):
    session = PlaySession(GAME, model)
    for _ in range(12):
        session.step(3)  # RIGHT
    assert len(session.frames) == 13 and session.predicted.shape == (64, 64)
    assert 0 <= session.error < 1
    session.reset()
    assert len(session.frames) == 1 and session.emulator.score == 0 and session.hidden is None
    session.toggle_dream()
    session.step(1)
    first = session.dream_latent.clone()
    session.step(1)
    assert session.dream and not np.allclose(first.numpy(), session.dream_latent.numpy()), (
        "dream feeds itself"
    )


def test_headless_loop_writes_a_three_panel_screenshot_and_a_recording(model, tmp_path):
    shot, record = tmp_path / "play.png", tmp_path / "recordings"
    summary = run_play(
        GAME, model, stack_size=4, fps=30, scale=3, headless=True, steps=25, screenshot=shot, record=record
    )
    assert summary["steps"] == 25 and summary["reason"] == "steps"
    image = np.asarray(Image.open(shot).convert("RGB"))
    size = 64 * 3
    assert image.shape == (size + HUD, 3 * size + 2 * GAP, 3)
    real = image[20:size, :size]
    assert (real[..., 0] == real[..., 1]).all(), "the Real panel is grayscale"
    over = image[20:size, 2 * (size + GAP) :]
    assert (over[..., 2] < 60).all(), "the Overlay panel has no blue: green = real, red = predicted"
    episodes = load_episodes(record, [GAME])
    assert len(episodes) == 26 and episodes.episode_ends[-1]
    assert len(FrameStacks(episodes, 4, np.ones(26, dtype=bool))) == 23


def test_esc_quits_cleanly(model):
    pygame.display.init()
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE))
    summary = run_play(GAME, model, stack_size=4, fps=30, scale=2, headless=True, steps=50)
    assert summary["reason"] == "quit" and summary["steps"] < 50


def test_cli_play_headless_and_missing_model(trained, tmp_path):
    args = ["--params", str(trained.params_path)]
    ok = run_cli(
        "play", "--game", GAME, "--headless", "--steps", "5", "--screenshot", str(tmp_path / "s.png"), *args
    )
    assert ok.returncode == 0, ok.stderr
    assert "played 5 steps" in ok.stdout and (tmp_path / "s.png").exists()
    missing = run_cli("play", "--headless", "--steps", "5", "--model", str(tmp_path / "none.pt"), *args)
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr
    assert "Traceback" not in missing.stderr
