"""Named pause points between two statements of the write path, for tests that force an
interleaving: a test installs a handler that blocks, kills the process or changes the bucket
when a chosen point is reached. Without a handler a pause point costs one attribute read.

A forked child inherits the handler installed before the fork, so a test can kill a process
that runs only the core exactly between two statements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Handler = Callable[[str, dict[str, Any]], None]

# Where the write path pauses, in the order a run meets them.
POINTS: dict[str, str] = {
    "object_listed": "a tick listed an object; its footer is not read yet",
    "day_ready": "a day's rows are read and sorted; its transaction has not begun",
    "day_locked": "a day's transaction holds its locks; nothing of the day is written yet",
    "day_written": "a day's rows and its file records are written, before its commit",
    "day_committed": "a day committed; the files it indexed are not yet marked indexed",
    "run_days_done": "every day of a run committed; what it applied is not yet recorded",
}

_handler: Handler | None = None


def pause(name: str, **context: Any) -> None:
    """Hand control to the installed handler, if any, at the point `name`."""
    if name not in POINTS:
        raise KeyError(f"unknown pause point {name!r}")
    handler = _handler
    if handler is not None:
        handler(name, context)


@contextmanager
def installed(handler: Handler) -> Iterator[None]:
    """`handler(name, context)` runs at every pause point while the block runs."""
    global _handler
    previous, _handler = _handler, handler
    try:
        yield
    finally:
        _handler = previous
