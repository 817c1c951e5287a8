"""torchrun + DistributedDataParallel on CPU (gloo): 2 processes follow the 1-process curve."""

import json
import os
import subprocess
import sys

import mlflow

from conftest import tiny_params_dict, write_params


def run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )


def curve(root, metric):
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    (run_info,) = mlflow.search_runs(experiment_names=["arcadedreamer"], output_format="list")
    return [
        m.value for m in sorted(client.get_metric_history(run_info.info.run_id, metric), key=lambda m: m.step)
    ]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(trained, tmp_path):
    roots = {}
    for name in ("single", "ddp"):
        root = tmp_path / name
        raw = tiny_params_dict(root, trained.games)
        raw["data"]["out_dir"] = str(trained.root / "data/collected")
        raw["vae"]["epochs"] = 3
        raw["training"]["batch_size"] = 64  # global batch: 2 × 32 under DDP
        raw["tracking"]["register_models"] = False
        roots[name] = (root, write_params(root, raw))
    single = run(
        ["-m", "arcadedreamer", "train", "--stage", "vae", "--params", str(roots["single"][1])], tmp_path
    )
    assert single.returncode == 0, single.stderr
    ddp = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "arcadedreamer",
               "train", "--stage", "vae", "--params", str(roots["ddp"][1])], tmp_path)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = (curve(roots[n][0], "train_mse") for n in ("single", "ddp"))
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert abs(a - b) / a < 0.1, (one, two)
    assert two[-1] < two[0], "the 2-process run learns"
    world = mlflow.search_runs(experiment_names=["arcadedreamer"], output_format="list")[0].data.tags[
        "world_size"
    ]
    assert world == "2"
    v1, v2 = (
        json.loads((roots[n][0] / "metrics/vae.json").read_text())["val_psnr"] for n in ("single", "ddp")
    )
    assert abs(v1 - v2) < 1.5, (v1, v2)
