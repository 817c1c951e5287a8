"""Dream GIFs from a tiny real model: frames, size, panels, and the CLI's errors."""

import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
from PIL import Image

from arcadedreamer.data.actions import parse_actions
from arcadedreamer.data.storage import load_game_data
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.viz.dream import HEADER, dream, run_dream
from conftest import run_cli

GAME = "BreakoutNoFrameskip-v4"


def test_dream_gif_has_real_and_dream_panels(trained, tmp_path):
    params = trained.params
    actions = parse_actions("FIRE,RIGHT,RIGHT,LEFT,2,3", GAME)
    out = tmp_path / "dream.gif"
    checkpoint = ckpt.final_checkpoint_path(params, "dynamics")
    run_dream(params, GAME, checkpoint, actions, steps=0, episode=0, start=0, out=out)
    gif = iio.imread(out)  # (frames, H, W, 3)
    context = params.data.stack_size + params.evaluation.context - 1
    scale = params.dream.upscale
    assert gif.shape == (context + len(actions), 64 * scale + HEADER, 2 * 64 * scale + 4, 3)
    meta = iio.immeta(out)
    assert meta["loop"] == 0 and abs(meta["duration"] - 1000 / params.dream.fps) <= 5

    model, _ = ckpt.load_world_model(checkpoint, params)
    result = dream(
        model,
        load_game_data(params.heldout.out_dir + f"/{GAME}"),
        actions,
        0,
        0,
        params.data.stack_size,
        params.evaluation.context,
    )
    assert result.real_frames is not None, "held-out stream replayed in the emulator"
    last = gif[-1, HEADER:, :, 0]
    real_panel, dream_panel = last[:, : 64 * scale], last[:, 64 * scale + 4 :]
    upscale = np.ones((scale, scale), dtype=np.uint8)
    np.testing.assert_array_equal(real_panel, np.kron(result.real_frames[-1], upscale))
    np.testing.assert_array_equal(dream_panel, np.kron(result.dream_frames[-1], upscale))
    # the label strip above each panel carries text (step and action)
    assert gif[-1, :HEADER, : 64 * scale].max() > 200


def test_real_continuation_follows_the_same_actions(trained):
    params = trained.params
    data = load_game_data(params.heldout.out_dir + f"/{GAME}")
    model, _ = ckpt.load_world_model(ckpt.final_checkpoint_path(params, "dynamics"), params)
    left = dream(
        model, data, parse_actions(",".join(["LEFT"] * 12), GAME), 0, 0, 4, params.evaluation.context
    )
    right = dream(
        model, data, parse_actions(",".join(["RIGHT"] * 12), GAME), 0, 0, 4, params.evaluation.context
    )
    assert not np.array_equal(left.real_frames[-1], right.real_frames[-1]), (
        "the real paddle answers the actions"
    )


def test_cli_dream_defaults_and_errors(trained, tmp_path):
    args = ["--params", str(trained.params_path)]
    ok = run_cli("dream", "--game", GAME, "--steps", "3", "--out", str(tmp_path / "d.gif"), *args)
    assert ok.returncode == 0, ok.stderr
    assert Image.open(tmp_path / "d.gif").n_frames == params_context(trained) + 3
    bad = run_cli("dream", "--game", GAME, "--actions", "1,,2", *args)
    assert bad.returncode == 2 and "empty token at position 2" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("dream", "--game", GAME, "--actions", "9", *args)
    assert bad.returncode == 2 and "'9' is out of range 0…3" in bad.stderr
    new_dir = run_cli("dream", "--steps", "2", "--out", str(tmp_path / "new/d.gif"), *args)
    assert (
        new_dir.returncode == 0 and Image.open(tmp_path / "new/d.gif").n_frames == params_context(trained) + 2
    )
    under_a_file = run_cli("dream", "--steps", "2", "--out", str(tmp_path / "d.gif" / "x.gif"), *args)
    assert under_a_file.returncode == 2 and "part of it is a file" in under_a_file.stderr
    no_model = run_cli("dream", "--steps", "2", "--model", str(tmp_path / "none.pt"), *args)
    assert no_model.returncode == 2 and "checkpoint not found" in no_model.stderr


def test_a_dream_leaves_nothing_in_home_and_reports_nowhere(trained, tmp_path):
    """Run as a user runs it (a fresh interpreter, without the CI and pytest variables that MLflow
    takes as a reason to keep quiet): no MLflow telemetry id in ~/.config, nothing in HOME or TMPDIR."""
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), scratch.mkdir()
    quiet_markers = (
        "CI",
        "PYTEST_CURRENT_TEST",
        "MLFLOW_DISABLE_TELEMETRY",
        "DO_NOT_TRACK",
        "GITHUB_ACTIONS",
    )
    env = {k: v for k, v in os.environ.items() if k not in quiet_markers} | {
        "HOME": str(home),
        "TMPDIR": str(scratch),
    }
    args = ["dream", "--steps", "2", "--out", str(tmp_path / "d.gif"), "--params", str(trained.params_path)]
    result = subprocess.run(
        [sys.executable, "-m", "arcadedreamer", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d.gif").exists()
    assert sorted(str(p.relative_to(tmp_path)) for p in [*home.rglob("*"), *scratch.rglob("*")]) == []


def params_context(trained) -> int:
    return trained.params.data.stack_size + trained.params.evaluation.context - 1
