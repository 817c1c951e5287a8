"""The DVC pipeline for real: dvc repro in a temporary git copy of the project, tiny params."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_ROOT

STAGES = ["collect", "vae", "dynamics", "evaluate", "dream", "controller", "agent"]
TINY = {
    "data": {"games": ["BreakoutNoFrameskip-v4"], "frames_per_game": 400, "num_envs": 2, "num_workers": 1},
    "heldout": {"episodes_per_game": 2, "frames_per_episode": 40},
    "vae": {"epochs": 1},
    "dynamics": {"epochs": 1, "seq_len": 8, "burn_in": 2, "hidden_size": 32},
    "training": {"batch_size": 32, "checkpoint_every": 1, "device": "cpu", "num_threads": 1},
    "evaluation": {"horizons": 6, "context": 4, "headline_horizons": [1, 3, 6], "promote_on": "psnr_h6_gain"},
    "dream": {"steps": 4},
    "controller": {
        "game": "BreakoutNoFrameskip-v4",
        "horizon": 5,
        "population": 4,
        "rollouts": 2,
        "generations": 2,
        "contexts": "heldout",
        "eval_episodes": 2,
        "eval_max_frames": 30,
        "constant_baselines": False,  # played in the controller's own stage test
    },
    "agent": {
        "updates": 2,
        "dreams": 4,
        "horizon": 5,
        "units": 16,
        "layers": 1,
        "contexts": "heldout",
        "eval_episodes": 2,
        "eval_max_frames": 30,
        "constant_baselines": False,  # played in the agent's own stage test
        "round_episodes": 1,
        "round_dynamics_epochs": 1,
        "round_updates": 1,
    },
}


def in_pipeline_order(stages: list[str]) -> bool:
    """Every stage after the stages it depends on (evaluate, dream and controller may interleave)."""
    chain = [s for s in stages if s in ("collect", "vae", "dynamics")]
    agent_last = (
        "agent" not in stages
        or "controller" not in stages
        or stages.index("agent") > stages.index("controller")
    )
    return (
        chain == sorted(chain, key=["collect", "vae", "dynamics"].index)
        and all(stages.index(s) > stages.index("dynamics") for s in stages if s not in chain)
        and agent_last  # the agent is scored beside the controller's games
    )


def sh(*args, cwd, check=True):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def set_param(root: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_tiny_project(root: Path, params: dict | None = None) -> None:
    """The project's pipeline files and code under `root`, params.yaml with TINY (and `params`)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    merged = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for overrides in (TINY, params or {}):
        for section, values in overrides.items():
            merged[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvcproject")
    copy_tiny_project(root)
    sh("git", "init", "-q", cwd=root)
    sh("git", "config", "user.email", "test@example.com", cwd=root)
    sh("git", "config", "user.name", "test", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("arcadedreamer", "heldout", cwd=root)
    sh("dvc", "add", "-q", "data/heldout", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "tiny project", cwd=root)
    return root


def test_repro_runs_every_stage_and_produces_every_output(project):
    result = sh("dvc", "repro", cwd=project)
    assert sorted(ran(result.stdout)) == sorted(STAGES) and in_pipeline_order(ran(result.stdout))
    for path in (
        "data/collected/BreakoutNoFrameskip-v4/frames.npy",
        "checkpoints/vae/vae_epoch_1.pt",
        "checkpoints/dynamics/dynamics_epoch_1.pt",
        "metrics/vae.json",
        "metrics/dynamics.json",
        "metrics/eval.json",
        "plots/psnr_BreakoutNoFrameskip-v4.tsv",
        "plots/eval_curves.png",
        "outputs/dream_BreakoutNoFrameskip-v4.gif",
        "checkpoints/controller/controller.pt",
        "metrics/controller.json",
        "checkpoints/agent/agent.pt",
        "metrics/agent.json",
        "dvc.lock",
        "mlflow.db",
    ):
        assert (project / path).exists(), path
    metrics = sh("dvc", "metrics", "show", "--json", cwd=project).stdout
    assert "psnr_h1_gain" in metrics and "val_psnr" in metrics and "real_minus_random_ci95" in metrics
    assert "reward_events" in metrics and "game_over_majority_accuracy" in metrics
    plots = sh("dvc", "plots", "show", "--json", cwd=project).stdout
    assert "psnr_BreakoutNoFrameskip-v4.tsv" in plots and "dream_BreakoutNoFrameskip-v4.gif" in plots
    # a log a user reads top to bottom: one line per epoch, none of the libraries' chatter
    log = result.stdout + result.stderr
    assert "vae epoch 1: val PSNR" in log and "dynamics epoch 1: train" in log
    assert "controller generation 2/2: dream return mean" in log and "controller in the real game:" in log
    assert "agent update 2/2: dream value" in log and "agent in the real game:" in log
    for noise in (
        "A.L.E: Arcade Learning Environment",
        "[Powered by Stella]",
        "Add type hints",
        "INFO mlflow.system_metrics",
        "Creating initial MLflow database",
        "\r",
        "it/s]",
        "Traceback",
        "Warning",
    ):
        assert noise not in log, noise


def test_second_repro_runs_nothing(project):
    result = sh("dvc", "repro", cwd=project)
    assert ran(result.stdout) == []
    assert all(f"Stage '{s}' didn't change, skipping" in result.stdout for s in STAGES)


def test_changing_a_key_reruns_only_the_stages_that_read_it(project):
    # a controller key reaches the controller and the agent scored beside it, nothing upstream
    set_param(project, "controller", "generations", 1)
    stages = ran(sh("dvc", "repro", cwd=project).stdout)
    assert stages == ["controller", "agent"]
    set_param(project, "agent", "updates", 1)
    assert ran(sh("dvc", "repro", cwd=project).stdout) == ["agent"]
    set_param(project, "dream", "steps", 5)
    assert ran(sh("dvc", "repro", cwd=project).stdout) == ["dream"]
    assert "up to date" in sh("dvc", "status", cwd=project).stdout


def test_raising_agent_rounds_runs_only_the_new_round(project):
    """A round of real play is one more step of the agent stage: the finished round 0 is read
    back, round 1 plays, fine-tunes the world model and learns; then nothing is left to run."""
    set_param(project, "agent", "rounds", 1)
    result = sh("dvc", "repro", cwd=project)
    log = result.stdout + result.stderr
    assert ran(result.stdout) == ["agent"]
    assert "agent round 0: finished before with these settings" in log
    assert "agent round 1/1: the agent plays 1 real games" in log and "dynamics epoch 1: train" in log
    assert (project / "checkpoints/agent/rounds/round_1/data/BreakoutNoFrameskip-v4/frames.npy").exists()
    assert '"rounds": 1' in (project / "metrics/agent.json").read_text()
    assert ran(sh("dvc", "repro", cwd=project).stdout) == []
    # the round's run names the data it grew and the registered world model it dreamt in
    script = (
        "import mlflow\n"
        "c = mlflow.MlflowClient('sqlite:///mlflow.db')\n"
        "e = c.get_experiment_by_name('arcadedreamer').experiment_id\n"
        "run = c.search_runs([e], \"tags.`agent.round` = '1'\")[0]\n"
        "uri = run.data.tags['world_model.model_uri']\n"
        "v = c.get_model_version('arcadedreamer-dynamics', uri.rsplit('/', 1)[1])\n"
        "print(uri, v.tags['data_hash'] == run.data.tags['data_hash'], c.get_model_version_by_alias("
        "'arcadedreamer-dynamics', 'champion').version != v.version)\n"
    )
    shown = sh("python", "-c", script, cwd=project).stdout.split()
    assert shown[0].startswith("models:/arcadedreamer-dynamics/") and shown[1:] == ["True", "True"]


def test_checkout_restores_deleted_outputs_from_the_cache(project):
    gif = project / "outputs/dream_BreakoutNoFrameskip-v4.gif"
    before = gif.read_bytes()
    shutil.rmtree(project / "checkpoints")
    shutil.rmtree(project / "outputs")
    sh("dvc", "checkout", cwd=project)
    assert gif.read_bytes() == before
    assert (project / "checkpoints/dynamics/dynamics_epoch_1.pt").exists()
    assert "up to date" in sh("dvc", "status", cwd=project).stdout


def test_malformed_params_stop_repro_at_the_first_stage(project):
    good = (project / "params.yaml").read_text()
    try:
        set_param(project, "data", "frames_per_gme", 10)
        result = sh("dvc", "repro", "--force", cwd=project, check=False)
        assert result.returncode != 0
        assert ran(result.stdout) == ["collect"]
        assert "params.yaml: data.frames_per_gme: unknown key" in result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
    finally:
        (project / "params.yaml").write_text(good)


def test_make_data_regenerates_the_pinned_heldout_set_and_refuses_other_bytes(tmp_path):
    """`make data` without a DVC remote: it regenerates data/heldout and checks its bytes against
    the hash data.dvc pins; other settings give other bytes, and it says so and fails."""
    root = tmp_path / "project"
    copy_tiny_project(root)
    shutil.copy(PROJECT_ROOT / "Makefile", root / "Makefile")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["arcadedreamer", "heldout"],
                    ["dvc", "add", "-q", "data/heldout"]):  # fmt: skip
        sh(*command, cwd=root)
    pin = (root / "data/heldout.dvc").read_text().replace("path: heldout", "path: data/heldout")
    (root / "data.dvc").write_text(pin)  # where the project pins it
    (root / "data/heldout.dvc").unlink()
    shutil.rmtree(root / "data/heldout")
    again = sh("make", "-o", "install", "data", cwd=root)
    assert "2 held-out episodes" in again.stdout, "regenerated"
    assert "data/heldout matches data.dvc" in again.stdout
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["heldout"]["seed"] += 1  # other episodes
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(root / "data/heldout")
    pinned = (root / "data.dvc").read_text()
    refused = sh("make", "-o", "install", "data", cwd=root, check=False)
    assert refused.returncode != 0
    assert "data/heldout does not match the hash pinned in data.dvc" in refused.stderr
    # a clean clone has nothing in its cache: the other bytes are refused as loudly, the pin untouched
    shutil.rmtree(root / ".dvc/cache")
    shutil.rmtree(root / "data/heldout")
    refused = sh("make", "-o", "install", "data", cwd=root, check=False)
    assert refused.returncode != 0
    assert "data/heldout does not match the hash pinned in data.dvc" in refused.stderr
    assert (root / "data.dvc").read_text() == pinned and not (root / ".data.dvc.pinned").exists()


def test_make_seeds_runs_each_seed_as_an_experiment_and_reports_them(project):
    """`make seeds-quickstart-long` (the ablation's seed loop) on the tiny settings: a seed DVC has
    already run is restored from its cache with the time it was trained in; a variant (SEEDS_ROW)
    trains, is timed by its dynamics stage's own clock and reported as a row of its own;
    params.yaml is as it was. (The mean ± sd over a row's seeds: tests/test_docs.py.) Last in
    this file: it leaves seed 1's outputs in the workspace."""
    shutil.copy(PROJECT_ROOT / "Makefile", project / "Makefile")
    shutil.copytree(PROJECT_ROOT / "tools", project / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    sh("dvc", "repro", "evaluate", cwd=project)  # already done when the tests above ran
    seed_0_seconds = json.loads((project / "metrics/dynamics.json").read_text())["train_seconds"]
    params_before = (project / "params.yaml").read_text()
    make = ["make", "-o", "install", "-o", "data", "-o", "mlflow.db", f"BIN={Path(sys.executable).parent}",
            "seeds-quickstart-long", "QUICKSTART_LONG=", "SEEDS_RESULTS=results/seeds.json"]  # fmt: skip
    sh(*make, "DYNAMICS_SEEDS=0", cwd=project)
    out = sh(*make, "DYNAMICS_SEEDS=1", "SEEDS_ROW=narrow-heads|-S dynamics.head_size=16", cwd=project)
    results = json.loads((project / "results/seeds.json").read_text())
    by_row = {run["row"]: run for run in results["runs"]}
    assert sorted(by_row) == ["narrow-heads", "quickstart-long"] and len(results["runs"]) == 2
    cached, variant = by_row["quickstart-long"], by_row["narrow-heads"]
    assert cached["seed"] == 0 and cached["wall_seconds"] == seed_0_seconds, (
        "seed 0 came from DVC's cache: the time it was trained in"
    )
    seed_1_seconds = json.loads((project / "metrics/dynamics.json").read_text())["train_seconds"]
    assert variant["seed"] == 1 and variant["wall_seconds"] == seed_1_seconds > 0, (
        "the dynamics stage's own clock, not the whole experiment's"
    )
    assert variant["settings"]["dynamics"]["head_size"] == 16 and variant["settings"]["dynamics"]["seed"] == 1
    assert cached["settings"]["dynamics"]["head_size"] != 16
    assert cached["scores"] != variant["scores"], "another seed, another model"
    assert results["command"] == "make seeds-quickstart-long"
    assert re.search(r"^\| `quickstart-long` \| 1 \| ", out.stdout, re.M), out.stdout
    assert re.search(r"^\| `narrow-heads` \| 1 \| ", out.stdout, re.M), out.stdout
    assert (project / "params.yaml").read_text() == params_before
