"""Bad input, interruptions, concurrency and failing disks: one clear line, nothing half-written."""

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from arcadedreamer import fileio, tracking
from arcadedreamer.config import load_params
from arcadedreamer.data import storage
from arcadedreamer.data.storage import load_game_data
from arcadedreamer.errors import UserError
from arcadedreamer.fileio import lock_path_for
from conftest import (
    CLI,
    child_pids,
    collect_small,
    lock_held,
    run_cli,
    stage_runs,
    tiny_params_dict,
    wait_for,
    write_params,
)

GAME = "PongNoFrameskip-v4"


def start_cli(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [*CLI, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(
        p.name
        for p in directory.rglob("*")
        if p.name.startswith(".") and ("tmp" in p.name or ".old" in p.name)
    )


@pytest.fixture()
def project(tmp_path):
    raw = tiny_params_dict(tmp_path, [GAME], frames=400)
    return tmp_path, write_params(tmp_path, raw)


# ---------------------------------------------------------------- params.yaml and CLI input
@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file; run from the project root or pass --params PATH"),
        ("data: [1, 2\n", "not valid YAML at line"),
        ("vae:\n  latent_dim: many\n", "vae.latent_dim: Input should be a valid integer"),
        ("vae:\n  size: 3\n", "vae.size: unknown key"),
        ("data:\n  frames_per_game: -5\n", "data.frames_per_game: Input should be greater than 0"),
        (
            "dynamics:\n  scheduled_sampling_prob: -0.1\n",
            "dynamics.scheduled_sampling_prob: Input should be greater than or equal to 0",
        ),
        ("data:\n  games: [Tetris-v9]\n", "data.games: unknown game id 'Tetris-v9'"),
        (
            "training:\n  lr_scaling: cubic\n",
            "training.lr_scaling: Input should be 'none', 'linear' or 'sqrt'",
        ),
    ],
)
def test_bad_params_files(tmp_path, content, message):
    path = tmp_path / "params.yaml"
    if content is not None:
        path.write_text(content)
    result = run_cli("collect", "--params", str(path))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--stage", "world"], "unknown stage 'world'"),
        (["collect", "--game", "Zork-v4"], "unknown game id 'Zork-v4'"),
        (["dream", "--actions", ""], "--actions is empty"),
        (["dream", "--actions", "-2"], "'-2' is out of range 0…5"),  # Pong: 6 actions
        (["dream", "--actions", "7"], "'7' is out of range 0…5"),
        (["dream", "--actions", "FLY"], "unknown action 'FLY'"),
        (["dream", "--actions", "FIRE,"], "empty token at position 2"),
        (["evaluate", "--model", "missing.pt"], "missing.pt: checkpoint not found"),
        (["evaluate", "--model", "."], "is a directory; give the path of a .pt checkpoint file"),
    ],
)
def test_bad_cli_input(project, args, message):
    root, params = project
    result = run_cli(*args, "--params", str(params), cwd=root)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- interruptions
def test_sigterm_during_collection_keeps_the_previous_data(project):
    root, params = project
    assert run_cli("collect", "--params", str(params)).returncode == 0
    game_dir = root / "data/collected" / GAME
    before = json.loads((game_dir / "manifest.json").read_text())["content_hash"]
    proc = start_cli("collect", "--frames", "1000000", "--params", str(params))
    assert wait_for(lambda: lock_held(lock_path_for("collect", game_dir)))
    assert wait_for(lambda: child_pids(proc.pid)), "its emulators are playing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert load_game_data(game_dir).manifest["content_hash"] == before
    assert leftovers(root / "data/collected") == []


def test_an_interrupt_a_library_swallowed_still_stops_the_next_step():
    from arcadedreamer import interrupts

    before = signal.getsignal(signal.SIGTERM)
    with interrupts.installed():
        interrupts.raise_if_requested()  # nothing requested: a no-op
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)  # the handler raises KeyboardInterrupt in here
        except BaseException:
            pass  # what e.g. SQLAlchemy's connection clean-up does with it
        assert interrupts.requested()
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_if_requested()
    # afterwards the request is forgotten and the previous handler is back
    assert not interrupts.requested()
    interrupts.raise_if_requested()
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_interrupt_inside_a_store_call_waits_for_the_call_to_return():
    """A KeyboardInterrupt raised inside a database write can leave the store locked for the
    rest of the process; inside `deferred()` the stop is raised when the block returns, and a
    second signal still stops at once."""
    from arcadedreamer import interrupts

    finished = []
    with interrupts.installed():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)  # the handler has run by now, and raised nothing in here
                finished.append("the call")
        assert finished == ["the call"]
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                os.kill(os.getpid(), signal.SIGTERM)  # the second: raised here
                time.sleep(1.0)
                finished.append("never")
        assert finished == ["the call"]


def end_a_stage_run_on_a_locked_status_write(root, params_path, interrupted: bool) -> str:
    """Run a stage's MLflow run to its end (or a Ctrl-C) while its first status write meets
    "database is locked" (another stage writing the same SQLite store); returns its final status.
    mlflow.end_run takes the run off its stack before it writes, so retrying end_run alone left
    the run RUNNING for ever (seen in CI after a Ctrl-C)."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    params = load_params(params_path)
    refusals, raised = [], False

    def locked_once(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE runs SET status") and run_id in parameters and not refusals:
            refusals.append(statement)
            raise sqlite3.OperationalError("database is locked")

    try:
        with tracking.stage_run("vae", params) as run_id:
            event.listen(Engine, "before_cursor_execute", locked_once)
            if interrupted:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        raised = True  # the Ctrl-C goes on up, as it must
    finally:
        event.remove(Engine, "before_cursor_execute", locked_once)
    assert raised == interrupted
    assert refusals, "the status write met the lock"
    assert mlflow.active_run() is None
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return mlflow.get_run(run_id).info.status


def test_a_locked_store_as_a_stage_finishes_still_records_finished(project):
    assert end_a_stage_run_on_a_locked_status_write(*project, interrupted=False) == "FINISHED"


def test_a_locked_store_as_a_stage_is_interrupted_still_records_killed(project):
    assert end_a_stage_run_on_a_locked_status_write(*project, interrupted=True) == "KILLED"


def test_sigint_during_training_leaves_good_checkpoints_a_killed_run_and_resumes(project):
    root, params = project
    raw = tiny_params_dict(root, [GAME], frames=1200)
    raw["vae"]["epochs"] = 3  # interrupted in the second
    params = write_params(root, raw)
    assert run_cli("collect", "--params", str(params)).returncode == 0
    stale = root / "metrics/vae.json"  # an earlier run's summary
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text('{"val_psnr": 99.0}')
    proc = start_cli("train", "--stage", "vae", "--params", str(params))
    first = root / "checkpoints/vae/vae_epoch_1.pt"
    assert wait_for(first.exists)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err
    assert leftovers(root / "checkpoints") == []
    assert not stale.exists(), "no summary of another run beside this run's checkpoints"
    from arcadedreamer.models.checkpoints import load_checkpoint

    assert load_checkpoint(first)["epoch"] == 1
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    assert [r.info.status for r in stage_runs()] == ["KILLED"]
    resumed = run_cli("train", "--stage", "vae", "--resume", "--params", str(params))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming VAE training from" in resumed.stdout
    assert (root / "checkpoints/vae/vae_epoch_3.pt").exists()


def test_a_run_killed_before_its_first_checkpoint_is_closed_as_killed_at_the_next_start(project):
    """SIGKILL leaves no time to end the MLflow run; the next stage to start on this machine
    ends it as KILLED (its process is gone), so the UI does not show it running for ever."""
    root, params = project
    raw = tiny_params_dict(root, [GAME], frames=1200)
    raw["vae"]["epochs"] = 50
    params = write_params(root, raw)
    assert run_cli("collect", "--params", str(params)).returncode == 0
    proc = start_cli("train", "--stage", "vae", "--params", str(params))
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")

    def running() -> list:
        try:
            found = mlflow.search_runs(experiment_names=["arcadedreamer"], output_format="list")
        except Exception:  # the database is being created by the stage
            return []
        # the stage's own run: its pipeline's parent run is RUNNING only for a moment as it is made
        return [r for r in found if r.info.status == "RUNNING" and "stage" in r.data.tags]

    assert wait_for(running)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    abandoned = running()[0].info.run_id
    assert not (root / "checkpoints/vae/vae_epoch_1.pt").exists(), "killed before its first checkpoint"
    raw["vae"]["epochs"] = 1
    again = run_cli("train", "--stage", "vae", "--params", str(write_params(root, raw)))
    assert again.returncode == 0, again.stderr
    assert mlflow.get_run(abandoned).info.status == "KILLED"
    assert running() == []


# ---------------------------------------------------------------- concurrency
def test_two_collects_of_the_same_game_do_not_corrupt_each_other(project):
    root, params = project
    # long enough that the first still holds the lock when the second has started up
    first = start_cli("collect", "--frames", "100000", "--params", str(params))
    assert wait_for(lambda: lock_held(lock_path_for("collect", root / "data/collected" / GAME)))
    second = run_cli("collect", "--frames", "300", "--params", str(params))
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2 and "is already being written by another process" in second.stderr
    assert len(load_game_data(root / "data/collected" / GAME)) == 100000


def _log_many(db: str, worker: int) -> None:
    params = load_params(
        write_params(Path(db).parent / f"w{worker}", {"tracking": {"uri": f"sqlite:///{db}"}})
    )
    with tracking.stage_run(f"worker{worker}", params):
        for step in range(40):
            tracking.log_metrics({"value": float(step)}, step=step)


def test_two_stages_logging_to_one_sqlite_store_at_once(tmp_path):
    db = str(tmp_path / "mlflow.db")
    tracking.setup(load_params(write_params(tmp_path / "setup", {"tracking": {"uri": f"sqlite:///{db}"}})))
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_log_many, args=(db, i)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0]
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    client = mlflow.MlflowClient()
    runs = stage_runs()
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "value")) == 40


# ---------------------------------------------------------------- failing disks and bad files
def test_disk_full_while_writing_collected_data(tmp_path, monkeypatch):
    collect_small(tmp_path, 100, seed=0)
    good = load_game_data(tmp_path / GAME).manifest["content_hash"]
    real_save = np.save

    def full_disk(handle, array, allow_pickle=False):
        if array.dtype == np.float32:  # rewards: after frames and actions were written
            handle.write(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(handle, array, allow_pickle=allow_pickle)

    monkeypatch.setattr(storage.np, "save", full_disk)
    with pytest.raises(UserError, match="no space left on device; free some space and run again"):
        collect_small(tmp_path, 100, seed=1)
    monkeypatch.undo()
    assert load_game_data(tmp_path / GAME).manifest["content_hash"] == good
    assert leftovers(tmp_path) == []


def test_disk_full_during_an_atomic_write(tmp_path, monkeypatch):
    target = tmp_path / "eval.json"
    fileio.atomic_write_json(target, {"old": 1})

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", no_space)
    with pytest.raises(UserError, match="eval.json: no space left on device"):
        fileio.atomic_write_json(target, {"new": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_output_under_a_file_or_missing_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write|does not exist|not a directory"):
        fileio.atomic_write_text(blocker / "out.json", "{}")
    with pytest.raises(UserError, match="does not exist; create it or choose another path"):
        fileio.atomic_write_text(tmp_path / "missing" / "out.json", "{}")


def test_truncated_collected_data_says_to_recollect(tmp_path):
    collect_small(tmp_path, 50, seed=0)
    actions = tmp_path / GAME / "actions.npy"
    actions.write_bytes(actions.read_bytes()[:-3])
    with pytest.raises(UserError, match="re-collect it with `arcadedreamer collect`"):
        load_game_data(tmp_path / GAME)


def test_servers_bind_to_localhost_only():
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    assert "--host 127.0.0.1" in makefile and "0.0.0.0" not in makefile
