"""Team mode for real: PostgreSQL (Debian's), an MLflow server with basic auth and proxied
artifacts, a DVC remote, two clones of one project, and a sweep through DVC's queue."""

import configparser
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import PROJECT_ROOT, free_port, stage_runs
from test_dvc_pipeline import STAGES, copy_tiny_project, in_pipeline_order, ran

sys.path.insert(0, str(PROJECT_ROOT / "tools"))
import local_postgres  # noqa: E402

ADMIN = ("admin", "admin-pass-4f9c1e")
ALICE, BOB, READER = (
    ("alice", "alice-pass-77d0a2"),
    ("bob", "bob-pass-1b2c3d"),
    ("reader", "reader-pass-9e8f7a"),
)
SECRETS = [p for _, p in (ADMIN, ALICE, BOB, READER)]
# Team mode shares the world model: the stages up to the dream (the controller's and the agent's
# stages log and register the same way, and run in tests/test_dvc_pipeline.py)
TARGETS = ("evaluate", "dream")
WORLD_MODEL_STAGES = [s for s in STAGES if s not in ("controller", "agent")]


def run(*args, cwd, user=None, env=None, check=True, timeout=600):
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if user:
        full["MLFLOW_TRACKING_USERNAME"], full["MLFLOW_TRACKING_PASSWORD"] = user
    full.update(env or {})
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=full, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module", autouse=True)
def _environment_as_it_was():
    """Credentials this file sets for MLflow's client never reach the files that run after it."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("team_server")
    # PostgreSQL runs as the `postgres` user under root: its folder must be reachable by it
    pg_root = Path(tempfile.mkdtemp(prefix="arcadedreamer-pg-"))
    backend = local_postgres.start(pg_root, free_port())
    port = free_port()
    auth = root / "auth.ini"
    # the shipped configuration (tools/basic_auth.ini), with its user store in this test's folder
    config = configparser.ConfigParser()
    config.read(PROJECT_ROOT / "tools/basic_auth.ini")
    config["mlflow"]["database_uri"] = f"sqlite:///{root / 'auth.db'}"
    with open(auth, "w") as out:
        config.write(out)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(auth), MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
               MLFLOW_FLASK_SERVER_SECRET_KEY="team-test-secret", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               PATH=f"{Path(sys.executable).parent}:{env['PATH']}")  # fmt: skip
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
         str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--app-name", "basic-auth"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            time.sleep(1)
    else:
        pytest.fail("the MLflow server did not start within 180 s")
    admin = admin_client(url)
    for name, password in (ALICE, BOB, READER):
        admin.create_user(name, password)
    yield {"url": url, "root": root, "backend": backend}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    local_postgres.stop(pg_root)
    shutil.rmtree(pg_root, ignore_errors=True)


def admin_client(url: str):
    from mlflow.server.auth.client import AuthServiceClient

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
    return AuthServiceClient(url)


def make_project(root: Path, url: str, remote: Path) -> Path:
    """A git + DVC copy of the project with tiny params, logging to the team's server."""
    # promote on recon_psnr: more VAE epochs reliably win it
    copy_tiny_project(root, {"evaluation": {"promote_on": "recon_psnr"}, "tracking": {"uri": url}})
    # the tiny held-out set is pinned in this project (data/heldout.dvc), not the real data.dvc
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                    ["git", "config", "user.name", "t"], ["dvc", "init", "-q"],
                    ["dvc", "remote", "add", "-d", "team", str(remote)], ["arcadedreamer", "heldout"],
                    ["dvc", "add", "-q", "data/heldout"]):  # fmt: skip
        run(*command, cwd=root)
    return root


def test_two_people_share_one_server_and_one_remote(server, tmp_path):
    """Alice runs the pipeline and pushes; Bob clones and pulls, finds nothing to rerun, dreams
    from the champion over the server, trains a better version that becomes champion, and Alice
    sees it; Alice sweeps a 2-point grid through DVC's queue, each point running only the stage
    its key reaches, grouped by its pipeline id. No credential reaches a log, a logged param or a
    message."""
    import mlflow

    url, remote = server["url"], tmp_path / "remote"
    admin = admin_client(url)
    alice = make_project(tmp_path / "alice", url, remote)
    first = run("dvc", "repro", *TARGETS, cwd=alice, user=ALICE)
    assert sorted(ran(first.stdout)) == sorted(WORLD_MODEL_STAGES) and in_pipeline_order(ran(first.stdout))
    run("git", "add", "-A", cwd=alice)
    run("git", "commit", "-qm", "tiny pipeline", cwd=alice)
    run("dvc", "push", "-q", "--with-deps", *TARGETS, cwd=alice)

    bob = tmp_path / "bob"
    run("git", "clone", "-q", str(alice), str(bob), cwd=tmp_path)
    run("dvc", "pull", "-q", "--with-deps", *TARGETS, cwd=bob)
    assert "up to date" in run("dvc", "status", "--with-deps", *TARGETS, cwd=bob).stdout
    again = run("dvc", "repro", *TARGETS, cwd=bob, user=BOB)
    assert ran(again.stdout) == [] and "didn't change, skipping" in again.stdout

    # Alice created the experiment and the registered models; the admin lets Bob work on them
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
    mlflow.set_tracking_uri(url)
    experiment = mlflow.get_experiment_by_name("arcadedreamer").experiment_id
    admin.grant_user_permission("bob", "experiment", experiment, "EDIT")
    # a reader: READ on the registered models, and on the experiment that logged their artifacts
    # (MLflow checks a version's artifacts against that experiment)
    admin.grant_user_permission("reader", "experiment", experiment, "READ")
    for name in ("arcadedreamer-vae", "arcadedreamer-dynamics"):
        admin.grant_user_permission("bob", "registered_model", name, "MANAGE")
        admin.grant_user_permission("reader", "registered_model", name, "READ")
    dream = run("arcadedreamer", "dream", "--steps", "3", "--out", "bob.gif", cwd=bob, user=BOB)
    assert (bob / "bob.gif").read_bytes()[:6] == b"GIF89a" and "Traceback" not in dream.stderr

    params = yaml.safe_load((bob / "params.yaml").read_text())
    params["vae"]["epochs"] = 4
    (bob / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    better = run("dvc", "repro", "evaluate", cwd=bob, user=BOB)  # the promotion is evaluate's
    assert sorted(ran(better.stdout)) == ["dynamics", "evaluate", "vae"], better.stdout
    assert "version 2 is now @champion" in better.stdout, better.stdout

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ALICE
    mlflow.set_tracking_uri(url)
    champion = mlflow.MlflowClient().get_model_version_by_alias("arcadedreamer-dynamics", "champion")
    assert champion.version == "2"

    # Alice sweeps a 2-point grid through DVC's queue (make sweep): every stage but the dream's
    # comes from the cache
    run("dvc", "exp", "run", "--queue", "-S", "dream.steps=3,5", *TARGETS, cwd=alice, user=ALICE)
    sweep = run("dvc", "exp", "run", "--run-all", "-j", "1", cwd=alice, user=ALICE, timeout=900)
    shown = json.loads(run("dvc", "exp", "show", "--json", cwd=alice).stdout)
    experiments = [e for commit in shown for e in (commit.get("experiments") or [])]
    steps = [e["revs"][0]["data"]["params"]["params.yaml"]["data"]["dream"]["steps"] for e in experiments]
    assert sorted(steps) == [3, 5]

    runs = stage_runs()
    assert {r.data.tags["stage"] for r in runs} >= {"vae", "dynamics", "evaluate", "dream"}
    by_pipeline: dict[str, set[str]] = {}
    for r in runs:
        by_pipeline.setdefault(r.data.tags["pipeline_id"], set()).add(r.data.tags["stage"])
    # Alice's first pipeline, Bob's better one (up to evaluate), and one per grid point (the dream)
    assert sorted(sorted(stages) for stages in by_pipeline.values()) == sorted(
        [sorted(WORLD_MODEL_STAGES[1:]), ["dynamics", "evaluate", "vae"], ["dream"], ["dream"]]
    ), by_pipeline
    outputs = (first, again, better, dream, sweep)
    texts = [out.stdout + out.stderr for out in outputs] + [(server["root"] / "server.log").read_text()]
    texts += [json.dumps(r.data.params) for r in runs]
    for secret in SECRETS:
        assert not any(secret in text for text in texts), "a password leaked"


LOGGER = """
import sys
import numpy as np
from arcadedreamer import tracking
from arcadedreamer.config import load_params
with tracking.stage_run("concurrency", load_params()) as run_id:
    for step in range(1, 101):
        tracking.log_metrics({f"m{i}": step * i for i in range(5)}, step=step)
    tracking.log_image(np.full((8, 8), int(sys.argv[1]), np.uint8), "probe", 1)
print(run_id)
"""


def test_two_processes_logging_to_the_server_at_once_lose_nothing(server, tmp_path):
    """Two trainings' worth of logging at the same moment: every step of every metric, the
    params and the artifact of both runs reach the server."""
    import mlflow

    project = make_project(tmp_path / "p", server["url"], tmp_path / "remote")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_USERNAME=ALICE[0], MLFLOW_TRACKING_PASSWORD=ALICE[1])
    writers = [
        subprocess.Popen([sys.executable, "-c", LOGGER, str(value)], cwd=project, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for value in (60, 200)
    ]  # fmt: skip
    results = [writer.communicate(timeout=300) for writer in writers]
    assert all(writer.returncode == 0 for writer in writers), results
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ALICE
    mlflow.set_tracking_uri(server["url"])
    client = mlflow.MlflowClient()
    for (out, _), value in zip(results, (60, 200)):
        run_id = out.strip().splitlines()[-1]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.params["vae.latent_dim"] == "64"
        for i in range(5):
            history = client.get_metric_history(run_id, f"m{i}")
            assert sorted((m.step, m.value) for m in history) == [(s, float(s * i)) for s in range(1, 101)]
        (image,) = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
        probe = np.asarray(Image.open(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=image,
                                                                            dst_path=str(tmp_path / run_id))))  # fmt: skip
        assert (probe == value).all()


def test_basic_auth_refuses_strangers_and_scopes_readers(server, tmp_path):
    """Runs after the two-people test of this file (pytest keeps the file's order), which
    registers the models and grants the reader READ on them."""
    url = server["url"]
    project = make_project(tmp_path / "p", url, tmp_path / "remote")
    stranger = run("arcadedreamer", "dream", "--steps", "2", cwd=project, check=False)
    assert stranger.returncode == 2 and "Traceback" not in stranger.stderr
    assert "refused the credentials; set MLFLOW_TRACKING_USERNAME" in stranger.stderr
    assert len(stranger.stderr.strip().splitlines()) == 1

    script = """
import mlflow, sys
from arcadedreamer import tracking
from arcadedreamer.config import load_params
from arcadedreamer.errors import UserError
params = load_params()
path = tracking.resolve_model_checkpoint("models:/arcadedreamer-dynamics@champion", params)
print("loaded", path.name)
for attempt in (lambda: tracking.set_alias("arcadedreamer-dynamics", "champion", "1"),
                lambda: mlflow.register_model(f"models:/arcadedreamer-dynamics/1", "arcadedreamer-dynamics")):
    try:
        tracking.with_retry(attempt)
        print("allowed")
    except UserError as exc:
        print("denied:", exc)
"""
    result = run(sys.executable, "-c", script, cwd=project, user=READER, check=False)
    assert "RESOURCE_DOES_NOT_EXIST" not in result.stdout + result.stderr, "no champion: run the whole file"
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3, result.stdout + result.stderr
    assert lines[0].startswith("loaded dynamics_epoch_") and lines[0].endswith(".pt"), (
        result.stdout + result.stderr
    )
    for line in lines[1:]:  # refused by the server for this account, not by any other failure
        assert line.startswith("denied: the MLflow server") and "denied this to your account" in line, lines
    assert not any(secret in result.stdout + result.stderr for secret in SECRETS)
