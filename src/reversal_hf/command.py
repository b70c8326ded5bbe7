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


class CommandFailed(Exception):
    """A refusal or a failed step: its `error:` line (none when the step said why) and its exit status."""

    def __init__(self, message: str = "", exit_status: int = 1) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def print_error(message: str) -> None:  # also one per failed item of a command that goes on (`openai sweep`)
    print(f"error: {message}", file=sys.stderr)


def run_command(
    action: Callable[[], T],
    errors: tuple[type[Exception], ...],
    done: Callable[[T], str] | None = "wrote {}".format,
    describe: Callable[[Exception], str] = str,
) -> int:
    """Run `action`; print `done(result)` (unless `done` is None) and return 0, or print `error: <describe(error)>` to
    stderr and return 1 (a `CommandFailed`: its message, if any, and its exit status)."""
    try:
        result = action()
    except CommandFailed as failure:
        if str(failure):
            print_error(str(failure))
        return failure.exit_status
    except errors as err:
        print_error(describe(err))
        return 1
    if done is not None:
        print(done(result))
    return 0
