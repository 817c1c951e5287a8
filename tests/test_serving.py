"""The registered world model served by `mlflow models serve`, asked over real HTTP."""

import json
import os
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
from conftest import free_port


def post(port: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),  # NaN and Infinity as Python's json writes them
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("serve")
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
    # what the signature cannot say: the model's own one-line answer, without the input echoed back
    status, body = post(server, {"inputs": context.tolist(), "params": {"actions": [0]}})
    assert (status, body["message"]) == (
        400,
        "params.actions: give 1 ALE action ids between the 2 context stacks, then one per step to "
        "imagine; got 1 in all",
    ), body
    assert "stack_trace" not in body


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "a negative action",
            "params.actions: each action is an ALE action id, a whole number in 0…17; got '-1'",
        ),
        ("a NaN pixel", "inputs: every pixel must be a finite number in [0, 1] (found NaN or infinity)"),
        (
            "an infinite pixel",
            "inputs: every pixel must be a finite number in [0, 1] (found NaN or infinity)",
        ),
        ("a pixel of 255", "inputs: every pixel must lie in [0, 1] (gray levels / 255)"),
        (
            "3 dreams of 1 000 steps",
            "at most 10000 steps a dream and 2048 imagined frames a request (batch × steps); got 3 × 1000: "
            "split it into several requests",
        ),
        (
            "a million actions",
            "params.actions: at most 10064 actions, got 1000000",
        ),
    ],
)
def test_the_served_world_model_refuses_what_it_cannot_answer_in_one_line(server, case, message):
    """Bad values answer 400 at once, with the problem alone (never the input echoed back, never
    NaN predictions, never a dream the server cannot hold)."""
    context = np.zeros((1, 2, 4, 64, 64), dtype=np.float32)
    actions = [0, 1, 3, 3]
    if case == "a negative action":
        actions = [0, -1, 3]
    elif case == "a NaN pixel":
        context[0, 0, 0, 0, 0] = np.nan
    elif case == "an infinite pixel":
        context[0, 1, 3, 10, 10] = np.inf
    elif case == "a pixel of 255":
        context[0, 1, 3, 10, 10] = 255
    elif case == "3 dreams of 1 000 steps":
        context = np.zeros((3, 2, 4, 64, 64), dtype=np.float32)
        actions = [0] * 1001
    elif case == "a million actions":
        actions = [0] * 1_000_000
    status, body = post(server, {"inputs": context.tolist(), "params": {"actions": actions}})
    assert (status, body["message"]) == (400, message)


def test_a_registered_version_carries_its_code_signature_and_example(trained):
    mlflow.set_tracking_uri(f"sqlite:///{trained.root / 'mlflow.db'}")
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{tracking.DYNAMICS_MODEL}@latest"))
    assert (local / "code" / "arcadedreamer" / "registry_model.py").exists()
    info = mlflow.models.get_model_info(f"models:/{tracking.DYNAMICS_MODEL}@latest")
    assert info.signature.inputs.inputs[0].shape == (-1, -1, 4, 64, 64)
    assert info.signature.params.params[0].name == "actions"
    assert (local / "input_example.json").exists() or (local / "serving_input_example.json").exists()
