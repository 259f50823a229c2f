"""
SIGINT and SIGTERM for the command line: stop the work, keep what is in flight.

``timeout``, systemd, docker and CI stop a process with SIGTERM, a user with Ctrl-C. Both
cancel the running command the same way, so that ``finally`` blocks run: a mirror cleans
its temporary files and prints its summary, and ``BitrixClient.close()`` waits for an OAuth
refresh in flight and its ``on_token_refresh`` (the OAuth server has already replaced the
refresh token; dropping the answer would lock the application out). A second signal while
that happens is ignored: the clean-up is bounded by the client's timeouts.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

__all__ = ["Interrupted", "run_interruptible"]

T = TypeVar("T")

_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The command was stopped by a signal; ``exit_status`` is the shell's ``128 + signal``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_status = 128 + signum


async def run_interruptible(work: Coroutine[Any, Any, T]) -> T:
    """
    Await *work* as a task that SIGINT or SIGTERM cancel; then raise ``Interrupted``.

    ``Interrupted`` is raised once *work* has unwound, also when it caught the
    cancellation and returned (a job that prints its summary on the way out).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[int] = []

    def stop(signum: int) -> None:
        if not received:
            received.append(signum)
            task.cancel()

    installed = []
    for signum in _SIGNALS:
        try:
            loop.add_signal_handler(signum, stop, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
            # Windows, or a loop outside the main thread: the default handlers stay.
            continue
        installed.append(signum)
    try:
        try:
            result = await task
        except asyncio.CancelledError:
            if received:
                raise Interrupted(received[0]) from None
            raise
        if received:
            raise Interrupted(received[0])
        return result
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
