"""How every command's `main` ends: a one-line `error: ...` on stderr and exit status 1, or exit status 0 after one
line saying what was written (unless the command reports its own progress).

A base module (it imports nothing of ours), so that the data builders, training, evaluation and reports all end the
same way without depending on each other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_command(
    action: Callable[[], T],
    errors: tuple[type[Exception], ...],
    done: Callable[[T], str] | None = "wrote {}".format,
    describe: Callable[[Exception], str] = str,
) -> int:
    """Run `action`; print `done(result)` (unless `done` is None) and return 0, or print `error: <describe(error)>` to
    stderr and return 1."""
    try:
        result = action()
    except errors as err:
        print(f"error: {describe(err)}", file=sys.stderr)
        return 1
    if done is not None:
        print(done(result))
    return 0
