"""Atomic file writes: a file appears under its final name complete, or not at all."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from arcadedreamer.errors import UserError


def describe_os_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"{path}: no space left on device; free some space and run again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: not writable ({exc.strerror}); choose a writable location"
    if exc.errno == errno.ENOENT:
        return f"{path}: directory {path.parent} does not exist; create it or choose another path"
    if exc.errno == errno.EISDIR:
        return f"{path}: is a directory; give a file path"
    return f"{path}: cannot write ({exc.strerror or exc})"


def describe_write_failure(path: Path, exc: BaseException) -> str:
    """One line for any failed write: an OSError by its errno; anything else (torch.save and
    image writers raise their own types) by the free space left, the usual cause."""
    if isinstance(exc, OSError):
        return describe_os_error(path, exc)
    try:
        free = shutil.disk_usage(path.parent if path.parent.exists() else ".").free
    except OSError:
        free = None
    if free is not None and free < LOW_SPACE:
        return f"{path}: no space left on device ({free // 1024} KiB free); free some space and run again"
    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return f"{path}: cannot write ({first})"


LOW_SPACE = 16 << 20  # bytes: under this free, a failed write is put down to a full disk

SYSTEM_TREES = ("/proc", "/sys", "/dev")


def check_output_path(path: str | Path, what: str, is_dir: bool = False, suffix: str | None = None) -> Path:
    """Refuse, before any work, an output path that cannot end as a written file or folder."""
    text = os.fspath(path)
    if "\x00" in text:
        raise UserError(f"{what}: {text!r} contains a NUL byte; give a normal path")
    path = Path(text)
    absolute = Path(os.path.abspath(path))
    if any(absolute == Path(t) or Path(t) in absolute.parents for t in SYSTEM_TREES):
        raise UserError(f"{what}: {path} is inside /{absolute.parts[1]}; choose a folder of your own")
    if suffix and path.suffix.lower() != suffix:
        raise UserError(f"{what}: {path} must end in {suffix} (the file written is {suffix[1:].upper()})")
    ancestor = absolute  # the nearest part of the path that exists
    while True:
        try:
            os.stat(ancestor)
            break
        except FileNotFoundError:
            ancestor = ancestor.parent
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UserError(f"{what}: {path} goes through a symlink loop; give a real path") from None
            if exc.errno == errno.ENOTDIR:
                raise UserError(
                    f"{what}: {path}: part of it is a file, not a folder; choose another path"
                ) from None
            raise UserError(f"{what}: {path}: {exc.strerror or exc}") from None
    if ancestor == absolute:
        if absolute.is_dir() != is_dir:
            kind = "a directory" if absolute.is_dir() else "a file"
            raise UserError(f"{what}: {path} is {kind}; give {'a folder' if is_dir else 'a file'} path")
        ancestor = absolute if is_dir else absolute.parent
    if not ancestor.is_dir():
        raise UserError(f"{what}: {ancestor} is a file, so {path} cannot be created; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{what}: {ancestor} is not writable; choose a writable location")
    return path


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[io.IOBase]:
    """Write to a temporary file beside `path`, fsync, then rename it over `path`."""
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserError(describe_os_error(path, exc)) from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a normal file is what users expect
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(describe_os_error(path, exc)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replaced_together(*targets: str | Path) -> Iterator[list[Path]]:
    """A scratch path beside each target (a file or a folder) to write into; when the block
    ends without error each is renamed onto its target, one after the other at the end, so a
    stage that fails leaves its earlier outputs as they were, never half of its new ones."""
    finals = [Path(t) for t in targets]
    scratch = []
    try:
        for final in finals:
            final.parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
            scratch.append(folder)
    except OSError as exc:
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)
        raise UserError(describe_os_error(finals[len(scratch)], exc)) from None
    staged = [folder / final.name for folder, final in zip(scratch, finals)]
    try:
        yield staged
        for final, new in zip(finals, staged):
            if new.is_dir():
                os.chmod(new, 0o777 & ~_umask())
                old = final.with_name(f".{final.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                if final.exists():
                    os.replace(final, old)
                os.replace(new, final)
                shutil.rmtree(old, ignore_errors=True)
            elif new.exists():
                os.replace(new, final)
    except OSError as exc:
        raise UserError(describe_os_error(finals[0], exc)) from None
    finally:
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: object) -> None:
    """Strict JSON: a score with nothing to score (NaN, ±inf) is written as null, which every
    reader (DVC, jq, browsers) parses; Python's default `NaN` is not JSON."""
    atomic_write_text(
        path, json.dumps(_finite_or_null(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    )


def _finite_or_null(obj):
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def sha256_file(path: str | Path, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def lock_path_for(kind: str, target: str | Path) -> Path:
    """Where the lock of writing `target` lives: one file per kind and absolute target, in the
    system's temporary folder — never inside an output folder, where DVC would hash it."""
    digest = hashlib.sha256(os.path.abspath(target).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "arcadedreamer-locks" / f"{kind}-{digest}.lock"


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path, what: str) -> Iterator[None]:
    """Refuse (rather than wait) when another process is already writing the same thing."""
    lock_path = Path(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(describe_os_error(lock_path, exc)) from None
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{what} is already being written by another process (lock {lock_path}); "
                "wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
