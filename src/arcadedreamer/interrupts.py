"""Ctrl-C and SIGTERM that always stop a long command.

Why not rely on KeyboardInterrupt alone: it is raised wherever the main thread happens to be,
and a library can swallow it there (SQLAlchemy's connection clean-up catches BaseException, for
one), after which training would carry on. The handler also records the request, and the long
loops call `raise_if_requested()` at every step, so the command stops at the next step anyway.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

_requested = False


def _handle(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Route SIGINT and SIGTERM through the recording handler (main thread only), then put back
    the previous handlers and forget the request, so one command's Ctrl-C never leaks into the next."""
    global _requested
    _requested = False
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
        _requested = False


def requested() -> bool:
    return _requested


def raise_if_requested() -> None:
    """Re-raise a stop request that something swallowed; a no-op otherwise."""
    if _requested:
        raise KeyboardInterrupt
