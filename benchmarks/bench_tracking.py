"""What logging to a team's MLflow server (PostgreSQL backend) costs against the embedded SQLite
store: the seconds one training epoch spends in MLflow (its metrics, and a reconstruction grid
at a checkpoint), as a share of that epoch's training time in the quickstart.

Target: per-epoch logging slows training by at most 2%.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).parent))

# the quickstart's epochs on this machine (metrics/*.json: a VAE epoch of 44 618 stacks at 278 stacks/s,
# a dynamics epoch of 42 602 sequences at ~1 040 seq/s)
EPOCH_SECONDS = {"vae": 44_618 / 278, "dynamics": 42_602 / 1_040}
METRICS_PER_EPOCH = {"vae": 12, "dynamics": 7}
ADMIN = ("admin", "bench-admin-pass")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def epoch_logging_seconds(uri: str, stage: str, epochs: int = 10) -> float:
    """Median seconds one epoch's MLflow calls take, as the trainer makes them."""
    from arcadedreamer import tracking
    from arcadedreamer.config import parse_params

    params = parse_params({"tracking": {"uri": uri}})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    tracking._USER_TRACKING_URI = None
    times = []
    grid = np.random.default_rng(0).integers(0, 255, (256, 1024), dtype=np.uint8)
    with tracking.stage_run(stage, params):
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            tracking.log_metrics(
                {f"m{i}": float(epoch * i) for i in range(METRICS_PER_EPOCH[stage])}, step=epoch
            )
            if stage == "vae":
                tracking.log_image(grid, f"reconstructions/epoch_{epoch:04d}.png")
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def start_server(work: str, backend: str, auth: bool) -> tuple[subprocess.Popen, str]:
    """An MLflow server on `backend`, as `make server` (AUTH=1) starts it; returns it and its URL."""
    import configparser

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
               "--artifacts-destination", f"{work}/artifacts", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    if auth:  # the shipped basic_auth.ini (its credential cache included), users in a temporary store
        config = configparser.ConfigParser()
        config.read(ROOT / "tools/basic_auth.ini")
        config["mlflow"]["database_uri"] = f"sqlite:///{work}/auth.db"
        with open(f"{work}/auth.ini", "w") as out:
            config.write(out)
        env.update(MLFLOW_AUTH_CONFIG_PATH=f"{work}/auth.ini", MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
                   MLFLOW_FLASK_SERVER_SECRET_KEY="bench-secret")  # fmt: skip
        command += ["--app-name", "basic-auth"]
    server = subprocess.Popen(
        command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(180):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            time.sleep(1)
    return server, f"http://127.0.0.1:{port}"


def main() -> dict:
    import local_postgres

    results = {}
    with tempfile.TemporaryDirectory() as work:
        results["sqlite"] = {
            s: epoch_logging_seconds(f"sqlite:///{work}/mlflow.db", s) for s in EPOCH_SECONDS
        }
        pg_root = Path(tempfile.mkdtemp(prefix="arcadedreamer-pg-"))
        pg_root.chmod(0o755)  # each cluster's folder below it belongs to the `postgres` user
        try:
            for store, auth in (("server", False), ("auth", True)):
                backend = local_postgres.start(pg_root / store, free_port())
                server, url = start_server(work, backend, auth)
                if auth:
                    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
                try:
                    results[store] = {s: epoch_logging_seconds(url, s) for s in EPOCH_SECONDS}
                finally:
                    server.terminate()
                    server.wait(timeout=30)
                    local_postgres.stop(pg_root / store)
        finally:
            shutil.rmtree(pg_root, ignore_errors=True)
    for store, label in (("sqlite", "SQLite"), ("server", "server"), ("auth", "server + basic auth")):
        for stage, seconds in results[store].items():
            share = seconds / EPOCH_SECONDS[stage]
            print(f"{label:>19} {stage:<8} {seconds * 1000:7.1f} ms of MLflow calls an epoch = "
                  f"{share:.3%} of a quickstart epoch ({EPOCH_SECONDS[stage]:.0f} s)", flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
