"""Hostile input, by kind: the params file, unbounded numbers, overlapping outputs, paths,
damaged checkpoints and manifests, a broken tracking store, diverging training, processes.
Each answer is one line naming the problem, a non-zero exit, nothing lost or half-written."""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from arcadedreamer import tracking
from arcadedreamer.config import MAX_PARAMS_BYTES, load_params
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import lock_path_for
from arcadedreamer.models import checkpoints as ckpt
from arcadedreamer.models.vae import VAE
from arcadedreamer.training.common import train_step
from conftest import child_pids, collect_small, lock_held, run_cli, tiny_params_dict, wait_for, write_params
from test_robustness import start_cli

GAME = "PongNoFrameskip-v4"


def one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------- the params file itself
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9)
)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (BOMB, "aliases (*name) are not allowed"),
        ("vae:\n  beta: 1\n  beta: 2\n", "duplicate key 'beta'"),
        ("vae:\n  beta: 1\nvae:\n  epochs: 2\n", "duplicate key 'vae'"),
        (
            "training:\n  batch_size: true\n",
            "training.batch_size: Input should be a valid integer (got True)",
        ),
        ("training:\n  lr: .inf\n", "training.lr: Input should be a finite number"),
        ("training:\n  lr: .nan\n", "training.lr: Input should be a finite number"),
        ("training:\n  lr: '0.001'\n", "training.lr: Input should be a valid number"),
        ("vae:\n  epochs: 2.0\n", "vae.epochs: Input should be a valid integer"),
        (
            "data:\n  frames_per_game: 99999999999999\n",
            "data.frames_per_game: Input should be less than or equal to 5000000",
        ),
        (
            "data:\n  seed: 100000000000000000000000\n",
            "data.seed: Input should be less than or equal to 2147483647",
        ),
        ("vae:\n  latent_dim: 100000000\n", "vae.latent_dim: Input should be less than or equal to 8192"),
        ("dream:\n  steps: 60000\n", "dream.steps: Input should be less than or equal to 10000"),
        ('training:\n  checkpoint_dir: "ck\\0pt"\n', "training.checkpoint_dir: contains a NUL byte"),
        (
            "heldout:\n  out_dir: data/collected\n",
            "data.out_dir (data/collected) and heldout.out_dir (data/collected) overlap",
        ),
        (
            "training:\n  checkpoint_dir: data/collected/models\n",
            "data.out_dir (data/collected) and training.checkpoint_dir",
        ),
        ("evaluation:\n  plots_dir: .\n", "evaluation.plots_dir is the project folder itself"),
        (
            "evaluation:\n  metrics_file: plots/eval.json\n",
            "evaluation.metrics_file lies inside evaluation.plots_dir",
        ),
        ("[" * 5000 + "]" * 5000 + "\n", "params.yaml"),
    ],
)
def test_hostile_params_files_are_refused_with_one_line(tmp_path, text, fragment):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_params(path)
    message = str(info.value)
    assert fragment in message and len(message.splitlines()) == 1 and len(message) < 400, message


def test_exponent_floats_are_numbers_and_defaults_still_load(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("training:\n  lr: 1e-3\nvae:\n  beta: 2E-4\n")
    params = load_params(path)
    assert (params.training.lr, params.vae.beta) == (1e-3, 2e-4)


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "huge"])
def test_only_regular_files_of_sane_size_are_read(tmp_path, kind):
    if kind == "dev_zero":
        path, fragment = "/dev/zero", "not a regular file"
    elif kind == "fifo":
        path, fragment = tmp_path / "params.yaml", "not a regular file"
        os.mkfifo(path)
    else:
        path, fragment = tmp_path / "params.yaml", f"at most {MAX_PARAMS_BYTES} bytes"
        path.write_text("# padding\n" * (MAX_PARAMS_BYTES // 10 + 10))
    started = time.monotonic()
    result = run_cli("config", "--params", str(path), timeout=60)
    one_line_error(result, fragment)
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------- numbers and paths on the command line
@pytest.fixture()
def project(tmp_path):
    return tmp_path, write_params(tmp_path, tiny_params_dict(tmp_path, [GAME], frames=400))


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["collect", "--frames", "99999999999999"], ["Invalid value for '--frames'"]),
        (["dream", "--actions", ",".join(["1"] * 60_000)], ["60000 actions; at most 10000"]),
        (["dream", "--steps", "1000000"], ["Invalid value for '--steps'"]),
        (["dream", "--out", "x.png"], ["--out: x.png must end in .gif"]),
        (["dream", "--out", "/proc/self/dream.gif"], ["inside /proc"]),
        (["play", "--headless", "--steps", "3", "--screenshot", "."], ["--screenshot: . must end in .png"]),
        (
            ["play", "--headless", "--steps", "3", "--record", "/proc/rec"],
            ["--record: /proc/rec is inside /proc"],
        ),
        (
            ["train", "--stage", "dynamics", "--vae-checkpoint", "./checkpoints/vae_epoch_50.pt"],
            ["not found; VAE checkpoints are written to"],
        ),
    ],
)
def test_out_of_bound_numbers_and_unusable_paths_fail_before_any_work(project, args, fragments):
    root, params = project
    started = time.monotonic()
    result = run_cli(*args, "--params", str(params), cwd=root, timeout=120)
    if "Invalid value" in fragments[0]:  # a usage error from the CLI parser: exit 2, no traceback
        assert result.returncode == 2 and fragments[0] in result.stderr and "Traceback" not in result.stderr
    else:
        one_line_error(result, *fragments)
    assert time.monotonic() - started < 60
    assert not (root / "data").exists() and not (root / "checkpoints" / "vae").exists()


def test_a_symlink_loop_and_a_directory_as_output_are_refused(project):
    root, params = project
    (root / "loop").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop")
    one_line_error(
        run_cli("dream", "--out", str(root / "loop" / "d.gif"), "--params", str(params)), "symlink loop"
    )
    (root / "a.gif").mkdir()
    one_line_error(run_cli("dream", "--out", str(root / "a.gif"), "--params", str(params)), "is a directory")
    assert [p.name for p in (root / "a.gif").iterdir()] == [], "no temporary file left behind"


# ---------------------------------------------------------------- checkpoints that are tensors but wrong
def _vae_checkpoint(tmp_path):
    model = VAE()
    return {
        "stage": "vae",
        "epoch": 1,
        "arch": {"stack_size": 4, "frame_size": 64, "latent_dim": 64},
        "model": model.state_dict(),
        "mean_frames": {"BreakoutNoFrameskip-v4": torch.zeros(64, 64)},
    }


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda c: c.update(arch="64"), "'arch' is missing or not a mapping"),
        (lambda c: c["arch"].update(latent_dim="64"), "arch.latent_dim is '64', not a positive integer"),
        (lambda c: c["arch"].update(latent_dim=32), "has shape (64, 512), its architecture needs (32, 512)"),
        (lambda c: c["model"].pop("decoder.fc.0.weight"), "does not hold the vae model's weights"),
        (lambda c: c.update(mean_frames=[1, 2]), "'mean_frames' is missing"),
        (lambda c: c.update(stage="dynamics"), "arch.num_actions is 'None', not a positive integer"),
    ],
)
def test_checkpoints_with_the_wrong_schema_name_what_does_not_match(tmp_path, damage, fragment):
    checkpoint = _vae_checkpoint(tmp_path)
    damage(checkpoint)
    path = tmp_path / "bad.pt"
    torch.save(checkpoint, path)
    with pytest.raises(UserError) as info:
        ckpt.load_checkpoint(path)
    assert fragment in str(info.value) and len(str(info.value).splitlines()) == 1


def test_a_text_file_as_checkpoint_and_a_good_one(tmp_path):
    path = tmp_path / "text.pt"
    path.write_text("hello\n")
    with pytest.raises(UserError, match="corrupt or truncated checkpoint"):
        ckpt.load_checkpoint(path)
    torch.save(_vae_checkpoint(tmp_path), path)
    assert ckpt.load_checkpoint(path, stage="vae")["epoch"] == 1


def test_a_manifest_with_a_malformed_stream_row(tmp_path):
    from arcadedreamer.data.storage import read_manifest

    collect_small(tmp_path, 40, seed=0)
    path = tmp_path / GAME / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["streams"]["rows"][0] = [0, "many"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="corrupt manifest"):
        read_manifest(tmp_path / GAME)


# ---------------------------------------------------------------- a diverging model
def test_a_non_finite_loss_stops_training_before_it_reaches_the_weights():
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = torch.rand(2, 4, 64, 64)
    frames[0, 0, 0, 0] = float("nan")  # what an exploding activation looks like downstream
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = model.compute_loss(frames, beta=1e-4)
    with pytest.raises(UserError, match="training diverged: the loss became nan"):
        train_step(model, losses, optimizer, grad_clip=1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- the tracking store
def test_a_broken_tracking_store_is_one_line_and_fast(tmp_path):
    def setup_with(uri):
        params = load_params(write_params(tmp_path / str(abs(hash(uri))), {"tracking": {"uri": uri}}))
        started = time.monotonic()
        with pytest.raises(UserError) as info:
            tracking.setup(params)
        assert time.monotonic() - started < 30
        return str(info.value)

    (tmp_path / "dir.db").mkdir()
    assert "is a directory, not an MLflow SQLite database" in setup_with(f"sqlite:///{tmp_path / 'dir.db'}")
    (tmp_path / "noise.db").write_bytes(os.urandom(4096))
    assert "is not an SQLite database" in setup_with(f"sqlite:///{tmp_path / 'noise.db'}")
    good = f"sqlite:///{tmp_path / 'good.db'}"
    tracking.setup(load_params(write_params(tmp_path / "g", {"tracking": {"uri": good}})))
    data = (tmp_path / "good.db").read_bytes()
    (tmp_path / "cut.db").write_bytes(data[: len(data) // 3])
    assert "database disk image is malformed" in setup_with(f"sqlite:///{tmp_path / 'cut.db'}")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert "does not answer" in setup_with(f"http://127.0.0.1:{port}")


def test_a_dream_keeps_its_gif_when_tracking_fails(trained, tmp_path):
    raw = yaml.safe_load(trained.params_path.read_text())
    (tmp_path / "mlflow.db").mkdir()
    raw["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = write_params(tmp_path, raw)
    model = ckpt.final_checkpoint_path(trained.params, "dynamics")
    out = tmp_path / "d.gif"
    result = run_cli(
        "dream", "--model", str(model), "--steps", "4", "--out", str(out), "--params", str(params)
    )
    one_line_error(result, "is a directory, not an MLflow SQLite database")
    assert out.read_bytes()[:6] == b"GIF89a"


# ---------------------------------------------------------------- processes
def test_kill_9_of_collect_takes_its_workers_and_lock_with_it(project):
    root, params = project
    proc = start_cli("collect", "--frames", "1000000", "--params", str(params))
    lock = lock_path_for("collect", root / "data/collected" / GAME)
    assert wait_for(lambda: lock_held(lock))
    assert wait_for(lambda: child_pids(proc.pid)), "its emulators are playing"
    workers = child_pids(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers)), "workers die with it"
    assert not lock_held(lock)
    again = run_cli("collect", "--frames", "200", "--params", str(params))
    assert again.returncode == 0, again.stderr


def test_a_second_training_of_the_same_stage_is_refused(project):
    root, params = project
    raw = tiny_params_dict(root, [GAME], frames=1200)
    raw["vae"]["epochs"] = 30
    params = write_params(root, raw)
    assert run_cli("collect", "--params", str(params)).returncode == 0
    first = start_cli("train", "--stage", "vae", "--params", str(params))
    assert wait_for(lambda: lock_held(lock_path_for("train-vae", root / "checkpoints")))
    second = run_cli("train", "--stage", "vae", "--params", str(params))
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    one_line_error(second, "vae training in", "is already being written by another process")


# ---------------------------------------------------------------- commands the other files do not reach
def test_scores_prints_the_last_evaluation_and_names_a_missing_one(trained, tmp_path):
    from arcadedreamer.evaluation.stage import run_evaluate

    raw = yaml.safe_load(trained.params_path.read_text())
    raw["evaluation"]["metrics_file"] = str(tmp_path / "metrics/eval.json")
    raw["evaluation"]["plots_dir"] = str(tmp_path / "plots")
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "register_models": False}
    params = write_params(tmp_path, raw)
    report = run_evaluate(load_params(params), ckpt.final_checkpoint_path(trained.params, "dynamics"))
    shown = run_cli("scores", "--params", str(params))
    assert shown.returncode == 0, shown.stderr
    breakout = report["games"]["BreakoutNoFrameskip-v4"]
    assert f"ball recall h1 {breakout['ball_recall_h1_model']:.2f}" in shown.stdout
    assert "the dream's ball misses: h1 faded" in shown.stdout
    (tmp_path / "metrics/eval.json").unlink()
    one_line_error(run_cli("scores", "--params", str(params)), "no scores yet; run `arcadedreamer evaluate`")


def test_a_tracking_uri_with_credentials_is_refused_without_showing_them(tmp_path):
    params = load_params(write_params(tmp_path, {"tracking": {"uri": "http://alice:s3cret@127.0.0.1:5999"}}))
    with pytest.raises(UserError) as info:
        tracking.setup(params)
    assert "carries credentials" in str(info.value) and "s3cret" not in str(info.value)


@pytest.fixture()
def read_only_folder(tmp_path):
    """A real read-only file system (root can write anywhere else)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def test_an_output_that_cannot_be_written_is_refused_before_any_work(trained, read_only_folder):
    model = ckpt.final_checkpoint_path(trained.params, "dynamics")
    result = run_cli("dream", "--model", str(model), "--steps", "3", "--out", str(read_only_folder / "d.gif"),
                     "--params", str(trained.params_path))  # fmt: skip
    one_line_error(result, "--out:", "is not writable; choose a writable location")


def test_a_training_that_diverges_registers_nothing(tmp_path):
    """A learning rate far too large: the loss or a gradient stops being finite, the command says
    so in one line, and no version of the model is registered."""
    import mlflow

    raw = tiny_params_dict(tmp_path, [GAME], frames=800)
    raw["training"].update(lr=10.0, warmup_steps=0, grad_clip=1e6, scheduler="constant")
    raw["vae"]["epochs"] = 3
    params = write_params(tmp_path, raw)
    assert run_cli("collect", "--params", str(params)).returncode == 0
    result = run_cli("train", "--stage", "vae", "--params", str(params))
    one_line_error(result, "training diverged")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert mlflow.MlflowClient().search_model_versions(f"name='{tracking.VAE_MODEL}'") == []
