"""
``run_batch``: commands in, one outcome per command out, each command with its own retries.

The resources build the commands (``images.Images._list_command`` and its siblings); this
sends them in ``batch`` requests (batch.md) until every command has an outcome, under the
same retry rules as a single call (``retry.Attempts``, one driver per command):

- A read is resent on any retryable error (a load refusal, OPERATION_TIME_LIMIT, a
  transient failure, an answer that left the command out).
- A write is resent only on an error proving it did not run: QUERY_LIMIT_EXCEEDED (and
  OVERLOAD_LIMIT), OPERATION_TIME_LIMIT (limits.md: refused before processing), or
  ERROR_BATCH_LENGTH_EXCEEDED (past the portal's batch length: then the requests are made
  smaller). Any command refused so goes again, within its retry driver's attempts.
- A write whose answer was lost (the request timed out or broke after it was sent, the
  portal failed with a 5xx, the answer was unreadable, or it left the command out) gets the
  outcome "unknown": it may have run. Never replayed here; the caller settles it by listing.

How commands are cut into requests is a ``Packing``, learnt from the portal and kept by a
caller that shares it between runs: at most 50 commands (fewer after
ERROR_BATCH_LENGTH_EXCEEDED) and, when it has one, a byte bound on the commands of one
request, halved whenever the portal answers HTTP 413 (the body too large for it, or for a
proxy before it: nothing ran). Halving is no retry: it counts no attempt. A command that
cannot go in a batch request gets an outcome that says so (``Outcome.alone``), for the
caller to send it in a request of its own: refused inside batch
(ERROR_BATCH_METHOD_NOT_ALLOWED, batch.md, for the command or the whole request), or too
large (413) even alone in one. Neither ran.

Any other failure of a whole request (a refusal after its retries, an auth error, an
unreadable answer to reads) is raised: it would repeat for every command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import attrs

from .._wire import clock, protocol
from .._wire.protocol import Command
from ..exceptions import (
    BitrixError,
    InvalidRequest,
    MalformedResponse,
    NotSent,
    OutcomeUnknown,
    ServerError,
    TransportError,
)
from .caller import Caller
from .retry import Attempts

__all__ = ["Outcome", "Packing", "Proceed", "run_batch"]

# A whole batch request that fails so may have been processed, in part or whole.
_MAY_HAVE_RUN: Final = (TransportError, ServerError, MalformedResponse)

# The bytes around one command in a request's body ("key":"...",) and around them all.
_COMMAND_OVERHEAD: Final = 8
_BODY_OVERHEAD: Final = 64

#: Given a command's key, its result and the portal's ``next`` for it, say what follows:
#: ``None`` (the command is done), the command that continues it (its next page, sent under
#: the same key and retry driver), or a ``BitrixError`` that fails it.
Proceed = Callable[[str, Any, "int | None"], "Command | BitrixError | None"]


@attrs.frozen
class Outcome:
    """
    What became of one command.

    Attributes:
        result: the command's result (for a paged read, its last page's) when it succeeded.
        error: why it failed for good, after its own retries; with *unknown*, why its answer
            was lost.
        unknown: a write whose answer was lost: it may or may not have run.
        sends: how many requests carried the command: more than one when it was resent
            (or continued to its next page); a command that referred to an earlier one's
            result (``$result[...]``) lost that reference when it was resent alone.
    """

    result: Any = None
    error: BitrixError | None = None
    unknown: bool = False
    sends: int = 1

    @property
    def ok(self) -> bool:
        """The command succeeded."""
        return self.error is None and not self.unknown

    @property
    def alone(self) -> bool:
        """
        The command did not run because it cannot go in a batch request: the portal
        refuses its method there (ERROR_BATCH_METHOD_NOT_ALLOWED) or it is too large
        (HTTP 413) even alone in one. The caller may send it in a request of its own.
        """
        return self.error is not None and (_refuses_packing(self.error) or _too_large(self.error))


@attrs.define
class Packing:
    """
    How commands are cut into ``batch`` requests; learnt from the portal's answers, and
    kept across the ``run_batch`` calls that share it.

    Attributes:
        commands: the most commands in one request (batch.md: 50; fewer once the portal
            answered ERROR_BATCH_LENGTH_EXCEEDED).
        size: the most bytes of commands in one request's body, ``None`` for no bound;
            halved after an HTTP 413. A command larger than it goes in a request alone.
    """

    commands: int = protocol.BATCH_MAX_COMMANDS
    size: int | None = None


async def run_batch(
    caller: Caller,
    commands: Mapping[str, Command],
    *,
    packing: Packing | None = None,
    proceed: Proceed | None = None,
) -> dict[str, Outcome]:
    """
    Send *commands* (``{key: (method, params or query string)}``) in ``batch`` requests of
    at most 50 until each one has an ``Outcome``; return them by key.

    Args:
        caller: the client's caller (pacing, retries of whole requests, refresh).
        commands: the commands; a method that only reads (``protocol.is_idempotent``) is
            a read, any other a write.
        packing: how commands are cut into requests, updated as the portal answers (a
            fresh ``Packing()`` if ``None``: 50 commands, no byte bound).
        proceed: called with each answered command (see ``Proceed``), for paged reads.

    Commands refused for load wait the longest backoff any of them was given, then go
    again together with the continuations of the others. A request too large (413) is cut
    smaller and its commands go again; one the portal refuses to run inside batch gives its
    commands that error (``Outcome.alone``). Raises what else fails a whole request that
    holds only reads, or a request holding writes whose failure proves it did not run; a
    ``proceed`` that raises fails the whole run.
    """
    return await _Run(caller, commands, packing or Packing(), proceed).run()


class _Run:
    """One ``run_batch``: the commands still pending, and the outcomes so far."""

    def __init__(
        self,
        caller: Caller,
        commands: Mapping[str, Command],
        packing: Packing,
        proceed: Proceed | None,
    ) -> None:
        self.loop = caller.loop
        self.caller = caller
        self.proceed = proceed
        self.pending = dict(commands)
        # A command's retry driver, made at its first failure: most commands never fail.
        self.drivers: dict[str, Attempts] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.sends = dict.fromkeys(commands, 0)
        self.packing = packing
        self.again: dict[str, Command] = {}
        self.delay = 0.0

    async def run(self) -> dict[str, Outcome]:
        while self.pending:
            self.again, self.delay = {}, 0.0
            for chunk in _chunks(self.pending, self.packing):
                await self._request(chunk)
            self.pending = self.again
            if self.pending and self.delay > 0:
                with self.caller.stats.holding():
                    await clock.current().sleep(self.delay)
        sends = self.sends
        return {
            # Most commands went once, the default: an outcome is copied only when not.
            key: outcome if sends[key] == 1 else attrs.evolve(outcome, sends=sends[key])
            for key, outcome in self.outcomes.items()
        }

    async def _request(self, chunk: dict[str, Command]) -> None:
        """One ``batch`` request of *chunk*, and what each command's answer means."""
        for key in chunk:
            self.sends[key] += 1
        try:
            result = await self.caller.batch(chunk)
        except BitrixError as error:
            if _too_large(error) and len(chunk) > 1:
                # Nothing ran: smaller requests from now on, and these commands go again.
                size = _BODY_OVERHEAD + sum(_cost(key, command) for key, command in chunk.items())
                bound = self.packing.size
                self.packing.size = max(1, min(size if bound is None else bound, size // 2))
                self.again.update(chunk)
                return
            if _too_large(error) or _refuses_packing(error):
                for key in chunk:
                    self.outcomes[key] = Outcome(error=error)  # did not run: Outcome.alone
                return
            writes = [not protocol.is_idempotent(method) for method, _ in chunk.values()]
            if not _may_have_run(error) or not any(writes):
                raise
            for key, unknown in zip(chunk, writes, strict=True):
                self.outcomes[key] = Outcome(error=error, unknown=unknown)
            return
        refused = sum(1 for error in result.errors.values() if _too_long(error))
        if refused:
            # CORE rest_provider.php: the commands past the portal's batch length were not
            # run. Smaller requests from now on, and those commands go again.
            self.packing.commands = max(1, min(self.packing.commands, len(chunk) - refused))
        for key, command in chunk.items():
            failure = result.errors.get(key)
            if failure is None and key not in result.results:
                # Neither a result nor an error: a halted or cut answer (batch.md). A read
                # is resent like any lost answer; a write may have run.
                failure = _lost(command[0])
                if isinstance(failure, OutcomeUnknown):
                    self.outcomes[key] = Outcome(error=failure, unknown=True)
                    continue
            if failure is not None:
                self._failed(key, command, failure)
                continue
            answer = result.results[key]
            following = (
                None if self.proceed is None else self.proceed(key, answer, result.nexts.get(key))
            )
            if isinstance(following, BitrixError):
                self.outcomes[key] = Outcome(error=following)
            elif following is not None:
                self.again[key] = following
            else:
                self.outcomes[key] = Outcome(result=answer)

    def _failed(self, key: str, command: Command, failure: BitrixError) -> None:
        """Resend a failed command if its retry driver allows, else give its outcome."""
        attempts = self.drivers.get(key)
        if attempts is None:
            idempotent = protocol.is_idempotent(command[0])
            attempts = self.drivers[key] = self.loop.attempts(idempotent=idempotent)
        attempts.begin()
        if _refuses_packing(failure):
            # batch.md: the portal runs this method only alone; it did not run here.
            failure.attempts = attempts.attempt
            self.outcomes[key] = Outcome(error=failure)
            return
        if _too_long(failure):
            # Not run (see _request): safe to send again, reads and writes alike.
            failure.attempts = attempts.attempt
            if attempts.attempt < attempts.policy.max_attempts:
                self.again[key] = command
            else:
                self.outcomes[key] = Outcome(error=failure)
            return
        # The same rules, attempts and wait budget as a whole call (README, "The portal's
        # limits"): a write is resent only after a refusal that proves it did not run.
        verdict = self.loop.judge(attempts, failure, (command[0],))
        if verdict.delay is None:
            self.outcomes[key] = Outcome(error=verdict.error)
        else:
            self.again[key] = command
            self.delay = max(self.delay, verdict.delay)


def _lost(method: str) -> TransportError:
    text = "the batch answer has no result and no error for this command"
    if protocol.is_idempotent(method):
        return TransportError(text, method=method)
    return OutcomeUnknown(text, method=method)


def _chunks(commands: Mapping[str, Command], packing: Packing) -> Iterator[dict[str, Command]]:
    """*commands* cut into requests of at most ``packing.commands``, within ``packing.size``."""
    chunk: dict[str, Command] = {}
    size = _BODY_OVERHEAD
    for key, command in commands.items():
        cost = 0 if packing.size is None else _cost(key, command)
        if chunk and (
            len(chunk) >= packing.commands
            or (packing.size is not None and size + cost > packing.size)
        ):
            yield chunk
            chunk, size = {}, _BODY_OVERHEAD
        chunk[key] = command
        size += cost
    if chunk:
        yield chunk


def _cost(key: str, command: Command) -> int:
    """The bytes *command* takes in a request's body (its query string is URL-encoded)."""
    return len(key) + len(protocol.encode_command(*command)) + _COMMAND_OVERHEAD


def _too_large(error: BitrixError) -> bool:
    """HTTP 413: the body was too large for the portal (or a proxy before it); not run."""
    return error.status == 413


def _refuses_packing(error: BitrixError) -> bool:
    """batch.md: ERROR_BATCH_METHOD_NOT_ALLOWED, a method the portal runs only alone."""
    code = None if error.code is None else protocol.normalize_code(error.code)
    return code == "ERROR_BATCH_METHOD_NOT_ALLOWED"


def _too_long(error: BitrixError) -> bool:
    code = None if error.code is None else protocol.normalize_code(error.code)
    return isinstance(error, InvalidRequest) and code == "ERROR_BATCH_LENGTH_EXCEEDED"


def _may_have_run(error: BitrixError) -> bool:
    return isinstance(error, _MAY_HAVE_RUN) and not isinstance(error, NotSent)
