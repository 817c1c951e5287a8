"""The tests' fork server (tests/forkserver.py) runs a command as a fresh interpreter would: the
same output and exit code, the caller's folder and environment, signals passed on, and a command
that dies with its caller. Every other file's commands go through it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from arcadedreamer.fileio import lock_path_for
from conftest import CLI, FORKED_CLI, lock_held, run_cli, tiny_params_dict, wait_for, write_params

GAME = "PongNoFrameskip-v4"


@pytest.fixture()
def project(tmp_path):
    return tmp_path, write_params(tmp_path, tiny_params_dict(tmp_path, [GAME], frames=400))


def test_the_fork_server_is_running():
    if os.environ.get("ARCADEDREAMER_TEST_FORKSERVER") == "0":
        pytest.skip("ARCADEDREAMER_TEST_FORKSERVER=0: every command starts a fresh interpreter")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.connect(os.environ["ARCADEDREAMER_FORKSERVER"])  # refused if it died


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["dream", "--game", "Foo"],
        ["actions", "--game", GAME],
        ["train", "--stage", "gru"],
        ["dream", "--actions", "FIRE,JUMP", "--game", GAME],
    ],
    ids=["help", "unknown-game", "actions", "unknown-stage", "invalid-action"],
)
def test_a_forked_command_prints_and_exits_as_a_fresh_interpreter(project, args):
    root, params = project
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    fresh = subprocess.run([*CLI, *args], cwd=root, capture_output=True, text=True, env=env, timeout=120)
    forked = run_cli(*args, cwd=root)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_a_forked_command_reads_the_callers_folder_and_environment(tmp_path):
    raw = tiny_params_dict(tmp_path, [GAME])
    raw["tracking"]["experiment"] = "from-this-folder"
    write_params(tmp_path, raw)  # found as ./params.yaml: the command runs in the caller's folder
    chosen = tmp_path / "chosen.db"  # the tracking URI a user exports wins over params.yaml's
    shown = run_cli("ui", "--print-url", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{chosen}"})
    assert shown.returncode == 0, shown.stderr
    assert chosen.exists() and not (tmp_path / "mlflow.db").exists()
    import mlflow

    assert mlflow.MlflowClient(f"sqlite:///{chosen}").get_experiment_by_name("from-this-folder") is not None
    assert (
        yaml.safe_load((tmp_path / "params.yaml").read_text())["tracking"]["experiment"] == "from-this-folder"
    )


def group_members(pgid: int) -> dict[int, int]:
    """The live processes of process group `pgid` and their parents (Linux /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found[int(stat.parent.name)] = int(fields[1])
    return found


def test_a_signal_to_the_caller_reaches_its_command_and_a_killed_caller_takes_it_along(project):
    root, params = project
    lock = lock_path_for("collect", root / "data/collected" / GAME)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [*FORKED_CLI, "collect", "--frames", "1000000", "--params", str(params)]

    def playing(caller) -> bool:  # the command, in its caller's process group, and its emulators
        members = group_members(caller.pid)
        return lock_held(lock) and any(parent in members for parent in members.values())

    interrupted = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   process_group=0)  # fmt: skip
    assert wait_for(lambda: playing(interrupted))
    interrupted.send_signal(signal.SIGTERM)
    _, err = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not lock_held(lock)

    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              process_group=0)  # fmt: skip
    assert wait_for(lambda: playing(killed))
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert wait_for(lambda: not group_members(killed.pid), timeout=30), (
        "the command outlived its killed caller"
    )
    assert not lock_held(lock)
