"""A throwaway PostgreSQL server for trying team mode on one machine, and for the tests.

    python tools/local_postgres.py start DIR [--port 5432]   # prints the MLflow backend URI
    python tools/local_postgres.py stop DIR

Uses the PostgreSQL binaries Debian installs (`apt-get install postgresql`); listens on
127.0.0.1 only. PostgreSQL refuses to run as root, so as root the cluster runs as the
`postgres` system user. A team's real server is whatever PostgreSQL they already run: only
the URI matters to ArcadeDreamer (README: Team mode).
"""

from __future__ import annotations

import argparse
import glob
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

USER, DATABASE = "arcadedreamer", "mlflow"


def binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise SystemExit(f"error: {name} not found; install PostgreSQL (apt-get install postgresql)")
    return found


def as_owner(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a PostgreSQL command as the cluster's owner (the `postgres` user when we are root)."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)


def start(root: Path, port: int) -> str:
    """Create (first time) and start a cluster under `root`; returns the backend URI."""
    root = root.resolve()
    data = root / "data"
    password_file = root / "password"
    if not data.exists():
        root.mkdir(parents=True, exist_ok=True)
        password_file.write_text(secrets.token_urlsafe(16))
        password_file.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            shutil.chown(password_file, "postgres", "postgres")
        as_owner([binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    socket_dir = root / "socket"
    socket_dir.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(socket_dir, "postgres", "postgres")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={socket_dir}"
    as_owner(
        [binary("pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start"]
    )
    password = password_file.read_text().strip()
    psql = [binary("psql"), "-h", str(socket_dir), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
    exists = as_owner([*psql, "-tAc", f"SELECT 1 FROM pg_roles WHERE rolname='{USER}'"]).stdout.strip()
    if not exists:
        as_owner([*psql, "-c", f"CREATE ROLE {USER} LOGIN PASSWORD '{password}'"])
        as_owner([*psql, "-c", f"CREATE DATABASE {DATABASE} OWNER {USER}"])
    return f"postgresql://{USER}:{password}@127.0.0.1:{port}/{DATABASE}"


def stop(root: Path) -> None:
    data = root.resolve() / "data"
    if data.exists():
        as_owner([binary("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--port", type=int, default=5432)
    args = parser.parse_args()
    try:
        if args.action == "start":
            print(start(args.dir, args.port))
        else:
            stop(args.dir)
    except subprocess.CalledProcessError as exc:
        print(
            f"error: {' '.join(exc.cmd[-3:])} failed: {(exc.stderr or '').strip().splitlines()[-1:]}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
