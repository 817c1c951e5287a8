"""Shared fixtures: tiny params files and one tiny world model trained for real on real ALE data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests choose their own temporary databases
os.environ["DVC_NO_ANALYTICS"] = "1"  # no background reporter process after every dvc command

from arcadedreamer.config import load_params  # noqa: E402

os.environ["GIT_PYTHON_REFRESH"] = "quiet"

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# the real console entry point in a fresh interpreter: for tests that signal a command or look at
# its children (the pid they hold must be the command's own)
CLI = [sys.executable, "-m", "arcadedreamer"]
# `arcadedreamer` forked from tests/forkserver.py's server (the imports paid once a worker); also
# first on PATH, so the commands `dvc repro` runs are forked too
FORKED_CLI = [str(PROJECT_ROOT / "tests/bin/arcadedreamer")]
_FORK_SERVER = pytest.StashKey[tuple]()
_SAVED_ENV = pytest.StashKey[dict]()


# The files in the order of their measured durations, longest first, so that under `make test`'s
# two xdist workers (one file per worker) the short ones fill in beside the long ones and both
# workers finish together (`--no-loadscope-reorder` in the Makefile keeps this order: by default
# xdist starts the files with the most tests first, which put the three-test team file, the
# longest, last). Files not named run after these.
LONGEST_FIRST = (
    "test_team.py",
    "test_training.py",
    "test_robustness.py",
    "test_distributed.py",
    "test_dvc_pipeline.py",
    "test_mlflow_ui.py",
    "test_evaluation.py",
    "test_models.py",
    "test_control.py",
    "test_structure.py",
    "test_agent.py",
    "test_hardening.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def tiny_params_dict(root: Path, games: list[str], frames: int = 600) -> dict:
    """A CPU-second-sized configuration, every path under `root`."""
    return {
        "data": {
            "games": games,
            "frames_per_game": frames,
            "num_envs": 2,
            "num_workers": 1,
            "out_dir": str(root / "data/collected"),
        },
        "heldout": {"episodes_per_game": 2, "frames_per_episode": 60, "out_dir": str(root / "data/heldout")},
        "vae": {"epochs": 1, "latent_dim": 64},
        "dynamics": {"epochs": 1, "seq_len": 8, "burn_in": 2, "hidden_size": 32},
        "training": {
            "batch_size": 32,
            "checkpoint_every": 1,
            "device": "cpu",
            "num_threads": 1,
            "checkpoint_dir": str(root / "checkpoints"),
            "metrics_dir": str(root / "metrics"),
        },
        "evaluation": {
            "horizons": 10,
            "context": 4,
            "headline_horizons": [1, 5, 10],
            "promote_on": "psnr_h10_gain",
            "metrics_file": str(root / "metrics/eval.json"),
            "plots_dir": str(root / "plots"),
        },
        "dream": {"game": games[0], "steps": 6, "out_dir": str(root / "outputs")},
        "controller": {
            "game": games[0],
            "horizon": 6,
            "population": 4,
            "rollouts": 2,
            "generations": 2,
            "contexts": "heldout",
            "eval_episodes": 2,
            "eval_max_frames": 40,
            "out_dir": str(root / "checkpoints/controller"),
            "metrics_file": str(root / "metrics/controller.json"),
        },
        "agent": {
            "game": games[0],
            "updates": 3,
            "dreams": 8,
            "horizon": 6,
            "units": 16,
            "layers": 1,
            "contexts": "heldout",
            "eval_episodes": 2,
            "eval_max_frames": 40,
            "out_dir": str(root / "checkpoints/agent"),
            "metrics_file": str(root / "metrics/agent.json"),
        },
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"},
    }


def collect_small(root: Path, frames: int, seed: int = 0, game: str = "PongNoFrameskip-v4") -> list[dict]:
    """A few real frames of one game, one emulator, straight to `root/<game>/`."""
    from arcadedreamer.data.collector import collect_to_disk

    return collect_to_disk([game], frames, root, seed=seed, num_envs=1, frame_size=64, hold_min=1, hold_max=2,
                           max_episode_frames=1000, progress=False)  # fmt: skip


def free_port() -> int:
    """A port of 127.0.0.1 free now (a server started right after binds it)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float = 120.0) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False): tests await an
    event, never a fixed sleep."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def lock_held(path: Path) -> bool:
    """Whether a process holds the flock on `path` now (the event a test waits for, not a sleep)."""
    import fcntl

    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def child_pids(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def stage_runs(stage: str | None = None) -> list:
    """The stage runs of the current tracking store's experiment (its pipelines' parent runs
    left out), newest first; only `stage`'s when given."""
    import mlflow

    runs = mlflow.search_runs(experiment_names=["arcadedreamer"], output_format="list")
    return [r for r in runs if "stage" in r.data.tags and stage in (None, r.data.tags["stage"])]


def write_params(root: Path, params: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """The real console entry point in a process of its own: exit code, stdout, stderr."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | (env or {})
    return subprocess.run(
        [*FORKED_CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


_FORK_ENV = ("PATH", "ARCADEDREAMER_FORKSERVER", "ARCADEDREAMER_TEST_PYTHON")


def pytest_configure(config: pytest.Config) -> None:
    """One fork server for the whole run (tests/forkserver.py), started by pytest's main process
    before xdist starts its workers, which inherit its address; without it
    (ARCADEDREAMER_TEST_FORKSERVER=0) every command starts a fresh interpreter."""
    import tempfile

    if hasattr(config, "workerinput"):  # an xdist worker: the main process set it all up
        return
    config.stash[_SAVED_ENV] = {key: os.environ.get(key) for key in _FORK_ENV}
    os.environ["ARCADEDREAMER_TEST_PYTHON"] = sys.executable
    # the forked `arcadedreamer` first, then the environment's own tools (dvc, mlflow)
    os.environ["PATH"] = os.pathsep.join(
        [str(PROJECT_ROOT / "tests/bin"), str(Path(sys.executable).parent), os.environ["PATH"]]
    )
    if os.environ.get("ARCADEDREAMER_TEST_FORKSERVER", "1") == "0":
        return
    folder = Path(tempfile.mkdtemp(prefix="arcadedreamer-fork-"))  # short: a socket path is < 108 bytes
    with open(folder / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "tests/forkserver.py"), "serve", str(folder / "socket")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    config.stash[_FORK_SERVER] = (server, folder)
    # bound before its imports: a moment
    assert (
        wait_for(lambda: (folder / "socket").exists() or server.poll() is not None) and server.poll() is None
    ), (folder / "server.log").read_text()
    os.environ["ARCADEDREAMER_FORKSERVER"] = str(folder / "socket")


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    if _FORK_SERVER in config.stash:
        server, folder = config.stash[_FORK_SERVER]
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    for key, value in config.stash.get(_SAVED_ENV, {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Collect 600 frames of Breakout and Pong, held-out episodes, 1-epoch VAE and dynamics."""
    from arcadedreamer.data.collector import collect_dataset
    from arcadedreamer.training.dynamics_trainer import train_dynamics
    from arcadedreamer.training.vae_trainer import train_vae

    root = tmp_path_factory.mktemp("trained")
    games = ["BreakoutNoFrameskip-v4", "PongNoFrameskip-v4"]
    path = write_params(root, tiny_params_dict(root, games))
    params = load_params(path)
    collect_dataset(params, progress=False)
    collect_dataset(params, heldout=True, progress=False)
    vae_summary = train_vae(params, progress=False)
    dyn_summary = train_dynamics(params, progress=False)
    return SimpleNamespace(
        root=root,
        params=params,
        params_path=path,
        games=games,
        vae_summary=vae_summary,
        dynamics_summary=dyn_summary,
    )
