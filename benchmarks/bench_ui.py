"""Memory of the MLflow UI as `make ui` starts it, against MLflow's default server.

    python benchmarks/bench_ui.py [--params params.yaml]

Starts each on a free port of 127.0.0.1 against the project's store, waits until it answers,
lets it settle, and sums the resident memory (RSS) of its whole process tree.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def measure(command: list[str], port: int, env: dict, settle: float) -> float:
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit(f"{command[:4]} did not answer within 180 s")
        time.sleep(settle)  # workers and queue consumers start after the first answer
        return rss_mib(tree(proc.pid))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds to wait after the first answer")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from arcadedreamer import tracking
    from arcadedreamer.config import load_params

    uri = tracking.setup(load_params(args.params))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    port = free_port()
    ours = measure([sys.executable, "-m", "arcadedreamer", "ui", "--port", str(port), "--params", args.params],
                   port, env, args.settle)  # fmt: skip
    port = free_port()
    default = measure([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                       "--port", str(port)], port, env, args.settle)  # fmt: skip
    print("| MLflow UI | memory (RSS of its processes) |\n|---|---|")
    print(f"| `make ui` (one worker, no job runner) | {ours:.0f} MiB |")
    print(f"| `mlflow ui` with MLflow's defaults | {default:.0f} MiB |")
    print(
        f"ratio: {ours / default:.2f}x (target: make ui under 1 GiB: {'met' if ours < 1024 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
