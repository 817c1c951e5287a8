"""The registered world model served by `mlflow models serve`, asked over real HTTP."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest

from arcadedreamer import tracking


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(port: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture()
def server(trained, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{trained.root / 'mlflow.db'}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{tracking.DYNAMICS_MODEL}@latest",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
    else:
        proc.kill()
        pytest.fail("the model server did not answer /ping within 180 s")
    yield port
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_the_served_world_model_dreams_and_refuses_a_bad_request_in_one_line(server, trained):
    context = np.random.default_rng(0).random((1, 2, 4, 64, 64), dtype=np.float32)
    status, body = post(server, {"inputs": context.tolist(), "params": {"actions": [0, 1, 3, 3]}})
    assert status == 200, body
    frames = np.asarray(body["predictions"])
    assert frames.shape == (1, 3, 64, 64) and 0 <= frames.min() and frames.max() <= 1
    # a wrong shape: MLflow's schema enforcement answers, from the signature, before the model runs
    status, body = post(server, {"inputs": np.zeros((1, 3)).tolist()})
    assert status == 400 and "does not match expected shape (-1, -1, 4, 64, 64)" in body["message"], body
    assert "Traceback" not in json.dumps(body) and "stack_trace" not in body
    # what the signature cannot say: the model's own one-line answer (MLflow's server puts its
    # "Failed to predict data '…'." line before it)
    status, body = post(server, {"inputs": context.tolist(), "params": {"actions": [0]}})
    assert status == 400, body
    assert body["message"].splitlines()[-1] == (
        "Error: params.actions: give 1 ALE action ids (0-17) between the 2 context stacks, "
        "then one per step to imagine; got 1"
    )
    assert "stack_trace" not in body


def test_a_registered_version_carries_its_code_signature_and_example(trained):
    mlflow.set_tracking_uri(f"sqlite:///{trained.root / 'mlflow.db'}")
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{tracking.DYNAMICS_MODEL}@latest"))
    assert (local / "code" / "arcadedreamer" / "registry_model.py").exists()
    info = mlflow.models.get_model_info(f"models:/{tracking.DYNAMICS_MODEL}@latest")
    assert info.signature.inputs.inputs[0].shape == (-1, -1, 4, 64, 64)
    assert info.signature.params.params[0].name == "actions"
    assert (local / "input_example.json").exists() or (local / "serving_input_example.json").exists()
