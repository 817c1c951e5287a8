"""Ctrl-C and SIGTERM that always stop a long command.

Why not rely on KeyboardInterrupt alone: it is raised wherever the main thread happens to be,
and a library can swallow it there (SQLAlchemy's connection clean-up catches BaseException, for
one), after which training would carry on. The handler also records the request, and the long
loops call `raise_if_requested()` at every step, so the command stops at the next step anyway.
Calls into the tracking store run `deferred()`: a KeyboardInterrupt raised inside a database
write can leave its connection mid-transaction, locking the store for the rest of the process
(the run would then never be marked KILLED); there the stop waits for the call to return.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

_requested = False
_deferred = 0  # depth of `deferred()` blocks


def _handle(signum, frame) -> None:
    global _requested
    again = _requested
    _requested = True
    if not _deferred or again:  # a second Ctrl-C stops even inside a deferred call
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


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A stop request that arrives inside the block is raised when the block returns."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    if not _deferred:
        raise_if_requested()


def requested() -> bool:
    return _requested


def raise_if_requested() -> None:
    """Re-raise a stop request that something swallowed; a no-op otherwise."""
    if _requested:
        raise KeyboardInterrupt
