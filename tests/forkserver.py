"""A fork server for the tests' `arcadedreamer` commands: the imports paid once, not per command.

Why: the suite starts about 180 `arcadedreamer` processes (its own and those `dvc repro` starts),
and a stage spends 5–11 s of CPU importing torch, torch._dynamo and MLflow before its first second
of work; on two cores that was a third of `make test`. The server imports those third-party
libraries once (never `arcadedreamer` itself, whose modules read the environment when imported)
and then forks one child per command. The child takes the caller's standard streams, working
folder, environment, process group and arguments and runs the real entry point,
`arcadedreamer.cli:run`, as the console script does: same code, same exit code, same output.

- `serve SOCKET`: the server (one per pytest worker, started by tests/conftest.py).
- `client ARGS...`: what `tests/bin/arcadedreamer` runs (standard library only, so it starts in
  milliseconds). It forwards SIGINT/SIGTERM/SIGHUP to the command; if the client itself is killed,
  its command is killed with it. Without a server (ARCADEDREAMER_FORKSERVER unset, or the server
  gone) it becomes the real console entry point in a fresh interpreter.

Tests that signal a command or look at its children start the real entry point directly
(`start_cli`, `CLI`): the pid they hold must be the command's own.
`ARCADEDREAMER_TEST_FORKSERVER=0 make test` runs every command in a fresh interpreter.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import sys
import time

SOCKET_ENV = "ARCADEDREAMER_FORKSERVER"
PYTHON_ENV = "ARCADEDREAMER_TEST_PYTHON"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# what the stages import that costs seconds (MLflow's SQLite store: a second a command to open
# one); none reads anything from the environment that a test varies
PRELOAD = (
    "numpy", "torch", "torch._dynamo", "torch.optim", "torch.nn.functional", "mlflow", "mlflow.pytorch",
    "mlflow.pyfunc", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store", "mlflow.store.db.utils", "sqlalchemy", "alembic.command",
    "alembic.config", "alembic.runtime.migration", "gymnasium", "ale_py", "PIL.Image", "imageio", "numba", "cv2",
    "typer", "pydantic", "yaml", "matplotlib", "matplotlib.pyplot",
)  # fmt: skip


# ---------------------------------------------------------------- server
def serve(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)  # clients queue here while the imports run
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the handlers reap themselves
    while True:
        conn, _ = listener.accept()
        try:
            fds, request = _receive(conn)
        except (OSError, ValueError):
            conn.close()
            continue
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _handle(conn, fds, request)  # never returns
        conn.close()
        for fd in fds:
            os.close(fd)


def _receive(conn: socket.socket) -> tuple[list[int], dict]:
    fds = array.array("i")
    header, ancillary, _, _ = conn.recvmsg(4, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if len(header) != 4 or len(fds) != 3:
        raise ValueError("a request is 4 length bytes and 3 file descriptors")
    (size,) = struct.unpack("!I", header)
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            raise ValueError("the client went away")
        payload += chunk
    return list(fds), json.loads(payload)


def _handle(conn: socket.socket, fds: list[int], request: dict) -> None:
    """Fork the command, tell the client its pid, and report how it ended."""
    try:
        pid = os.fork()
        if pid == 0:
            conn.close()
            _run_command(fds, request)  # never returns
        for fd in fds:
            os.close(fd)
        conn.sendall(f"pid {pid}\n".encode())
        import select

        pidfd = os.pidfd_open(pid)
        while True:
            ready, _, _ = select.select([conn, pidfd], [], [])
            if pidfd in ready:
                break
            if not conn.recv(64):  # the client was killed: its command goes with it
                os.kill(pid, signal.SIGKILL)
                break
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            conn.sendall(f"signal {os.WTERMSIG(status)}\n".encode())
        else:
            conn.sendall(f"exit {os.WEXITSTATUS(status)}\n".encode())
    except OSError:
        pass
    finally:
        os._exit(0)


def _run_command(fds: list[int], request: dict) -> None:
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        try:
            os.setpgid(0, request["pgid"])  # a signal to the caller's process group reaches it
        except OSError:
            pass
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [request["argv0"], *request["args"]]
        sys.path[0] = os.path.dirname(request["argv0"])  # as for the console script
        code = _run_entry_point()
    finally:
        os._exit(code)


def _run_entry_point() -> int:
    """`arcadedreamer.cli:run` and the interpreter's own exit: threads joined, exit handlers run."""
    import atexit
    import threading
    import traceback

    try:
        from arcadedreamer.cli import run

        run()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:  # what the interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    threading._shutdown()
    atexit._run_exitfuncs()  # the CLI's last handler ends the process with its own code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


# ---------------------------------------------------------------- client
def client(args: list[str]) -> None:
    path = os.environ.get(SOCKET_ENV)
    conn = _connect(path) if path else None
    if conn is None:
        _exec_real(args)
    payload = json.dumps(
        {"args": args, "argv0": _argv0(), "cwd": os.getcwd(), "env": dict(os.environ), "pgid": os.getpgrp()}
    ).encode()
    conn.sendmsg(
        [struct.pack("!I", len(payload))],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))],
    )
    conn.sendall(payload)
    replies = conn.makefile("r")
    started = replies.readline().split()
    if not started:
        sys.exit("error: the test fork server closed the connection (see its log)")
    command = int(started[1])
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, lambda number, frame: os.kill(command, number))
    ended = replies.readline().split()  # a forwarded signal does not interrupt the wait (PEP 475)
    if not ended:
        sys.exit("error: the test fork server died under its command")
    kind, value = ended
    if kind == "signal":  # end as the command ended, so a caller sees the same -N
        signal.signal(int(value), signal.SIG_DFL)
        os.kill(os.getpid(), int(value))
    sys.exit(int(value))


def _connect(path: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + 5
    while True:
        try:
            conn.connect(path)
            return conn
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:  # no server: a fresh interpreter does the same work
                conn.close()
                return None
            time.sleep(0.05)


def _argv0() -> str:
    return os.path.join(os.path.dirname(os.environ[PYTHON_ENV]), "arcadedreamer")


def _exec_real(args: list[str]) -> None:
    python = os.environ[PYTHON_ENV]
    os.execv(python, [python, "-m", "arcadedreamer", *args])


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        client(sys.argv[2:])
