"""torchrun + DistributedDataParallel on CPU (gloo): 2 processes follow the 1-process curve."""

import json
import os
import subprocess
import sys

import mlflow

from conftest import FORKED_CLI, stage_runs, tiny_params_dict, write_params


def run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def curve(root, metric):
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    (run_info,) = stage_runs()
    return [
        m.value for m in sorted(client.get_metric_history(run_info.info.run_id, metric), key=lambda m: m.step)
    ]


def single_and_ddp(trained, tmp_path, stage: str, epochs: int, extra: list[str], training=None) -> dict:
    """Train `stage` once in one process and once under torchrun with 2 gloo processes, with
    the same global batch; returns each run's root."""
    roots = {}
    for name in ("single", "ddp"):
        root = tmp_path / name
        raw = tiny_params_dict(root, trained.games)
        raw["data"]["out_dir"] = str(trained.root / "data/collected")
        raw[stage]["epochs"] = epochs
        raw["training"]["batch_size"] = 64  # global batch: 2 × 32 under DDP
        raw["training"].update(training or {})
        raw["tracking"]["register_models"] = False
        roots[name] = (root, write_params(root, raw))
    # `arcadedreamer` as the tests run it (forked: tests/forkserver.py), alone and as torchrun's
    # two workers (--no-python: torchrun starts the command itself, with RANK etc. in its environment)
    command = [*FORKED_CLI, "train", "--stage", stage, *extra]
    single = run([*command, "--params", str(roots["single"][1])], tmp_path)
    assert single.returncode == 0, single.stderr
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--no-python",
    ]
    ddp = run([*torchrun, *command, "--params", str(roots["ddp"][1])], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return {name: root for name, (root, _) in roots.items()}


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(trained, tmp_path):
    roots = single_and_ddp(trained, tmp_path, "vae", 2, [])
    one, two = curve(roots["single"], "train_mse"), curve(roots["ddp"], "train_mse")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert abs(a - b) / a < 0.1, (one, two)
    assert two[-1] < two[0], "the 2-process run learns"
    tags = stage_runs()[0].data.tags
    assert tags["world_size"] == "2" and tags["ranks_in_step"] == "true", "the two processes ended in step"
    v1, v2 = (json.loads((roots[n] / "metrics/vae.json").read_text())["val_psnr"] for n in ("single", "ddp"))
    assert abs(v1 - v2) < 1.5, (v1, v2)


def test_dynamics_under_two_gloo_processes_follows_the_one_process_curve(trained, tmp_path):
    from arcadedreamer.models.checkpoints import final_checkpoint_path

    vae = final_checkpoint_path(trained.params, "vae")
    # ~10 steps an epoch: no warm-up, so the curve moves within the test
    fast = {"lr": 1e-3, "warmup_steps": 0, "scheduler": "constant"}
    roots = single_and_ddp(trained, tmp_path, "dynamics", 4, ["--vae-checkpoint", str(vae)], fast)
    one, two = curve(roots["single"], "train_loss"), curve(roots["ddp"], "train_loss")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert abs(a - b) / a < 0.15, (one, two)  # scheduled-sampling draws differ per process
    assert two[-1] < two[0], "the 2-process run learns"
    tags = stage_runs()[0].data.tags
    assert tags["world_size"] == "2" and tags["ranks_in_step"] == "true", "the two processes ended in step"
    summaries = [json.loads((roots[n] / "metrics/dynamics.json").read_text()) for n in ("single", "ddp")]
    assert summaries[0]["train_sequences"] == summaries[1]["train_sequences"]
