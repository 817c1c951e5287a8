"""Look before a long write, and a full disk met anyway: one line, nothing half-written.

A real small file system (a tmpfs of a few MiB, mounted for the test: needs root, as CI has)
stands for the full disk; nothing is simulated."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from arcadedreamer import preflight
from arcadedreamer.errors import UserError
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.viz.dream import write_gif
from conftest import run_cli, tiny_params_dict, write_params

GAME = "PongNoFrameskip-v4"


@pytest.fixture()
def small_disk(tmp_path):
    """A 3 MiB file system of its own."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> None:
    """Fill the file system to its last byte."""
    with open(disk / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        except OSError:
            pass


def one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_the_size_of_a_stored_frame():
    assert preflight.frame_record_bytes(64) == 64 * 64 + 128 + 1 + 4 + 1
    assert preflight.human(3 * 1024 * 1024) == "3.0 MiB"
    assert preflight.human(20 * 1024**3) == "20.0 GiB"


def test_a_collection_larger_than_the_memory_is_refused_with_the_numbers(tmp_path):
    available = preflight.available_memory()
    frames = available // preflight.frame_record_bytes(64)  # its arrays alone fill the memory
    with pytest.raises(UserError) as info:
        preflight.check_collect(tmp_path, [GAME], frames, 64)
    assert f"collecting {frames} frames of a game needs about" in str(info.value)
    assert "of memory and" in str(info.value) and "collect fewer frames" in str(info.value)
    preflight.check_collect(tmp_path, [GAME], 1000, 64)  # a small one passes


def test_a_collection_larger_than_the_disk_is_refused_before_it_starts(small_disk):
    raw = tiny_params_dict(small_disk, [GAME], frames=5000)  # ~20 MiB into 3 MiB
    params = write_params(small_disk.parent / "p", raw)
    result = run_cli("collect", "--params", str(params))
    one_line_error(result, "collecting 1 game(s) × 5000 frames needs about 20.2 MiB of disk", "free")
    assert not (small_disk / "data/collected" / GAME).exists()


def test_a_replaced_collection_counts_the_space_its_old_copies_free():
    assert preflight.collect_disk_peak(10, [0, 0]) == 20, "two new games, nothing to replace"
    assert preflight.collect_disk_peak(10, [10, 10]) == 10, "each new copy beside its old one"
    assert preflight.collect_disk_peak(10, [4, 0]) == 16
    assert preflight.collect_disk_peak(10, [0, 30]) == 20, "the second's old copy goes only at its end"


def test_a_training_whose_checkpoints_do_not_fit_is_refused_before_it_starts(small_disk, tmp_path):
    raw = tiny_params_dict(tmp_path, [GAME], frames=400)
    assert run_cli("collect", "--params", str(write_params(tmp_path, raw))).returncode == 0
    raw["training"]["checkpoint_dir"] = str(small_disk / "checkpoints")
    raw["vae"]["epochs"] = 5
    params = write_params(tmp_path / "small-checkpoints", raw)
    result = run_cli("train", "--stage", "vae", "--params", str(params))
    one_line_error(result, "vae training's 5 checkpoint(s) needs about", "raise training.checkpoint_every")
    assert not (small_disk / "checkpoints/vae").exists()


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_leaves_no_file(small_disk):
    fill(small_disk)
    path = small_disk / "vae_epoch_1.pt"
    with pytest.raises(UserError) as info:
        ckpt.save_checkpoint(path, {"stage": "vae", "model": {"w": torch.zeros(100_000)}})
    assert "no space left on device" in str(info.value) and "earlier checkpoints are intact" in str(
        info.value
    )
    assert not path.exists() and [p.name for p in small_disk.iterdir()] == ["filler"]


def test_a_full_disk_during_a_gif_write_is_one_line_and_leaves_no_file(small_disk):
    fill(small_disk)
    path = small_disk / "dream.gif"
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(20)]
    with pytest.raises(UserError) as info:
        write_gif(images, path, fps=15)
    assert "no space left on device" in str(info.value)
    assert not path.exists() and [p.name for p in small_disk.iterdir()] == ["filler"]


def test_a_tracking_database_on_a_full_disk_is_one_line(trained, small_disk):
    """The dream is written; the MLflow store that cannot grow says so in one line."""
    raw = yaml.safe_load(trained.params_path.read_text())
    raw["tracking"]["uri"] = f"sqlite:///{small_disk / 'mlflow.db'}"
    params = write_params(small_disk.parent / "full-db", raw)
    fill(small_disk)
    out = small_disk.parent / "d.gif"
    model = ckpt.final_checkpoint_path(trained.params, "dynamics")
    result = run_cli(
        "dream", "--model", str(model), "--steps", "4", "--out", str(out), "--params", str(params)
    )
    one_line_error(result, "MLflow tracking at sqlite:///")
    assert "Traceback" not in result.stderr and "sqlalchemy" not in result.stderr.lower()
    assert out.read_bytes()[:6] == b"GIF89a"
