"""
Sending an upload's commands, and what each command's outcome means for the run.

The commands are the resource's (``client.images._add_command`` and ``_delete_command``)
and go out through its batch primitive (``client.images._run``, ``_calls.batch``): up to 50
per ``batch`` request (batch.md allows every method but ``batch``, ``download``,
``upload``), within a byte bound on the request (a ``Packing``, halved by the primitive whenever the
portal answers 413) that the whole upload learns. The primitive resends
a command only when the portal proves it did not run (a load refusal, under the retry
policy); what it reports per command decides here:

- done: counted, with the name the portal stored the file under;
- unknown (its answer was lost), a server error inside the batch, or a delete answered "not
  found": the command may have been applied, so its product is listed again before
  anything is resent (``Outcomes.unsure``), never sent again from here;
- ``Outcome.alone`` (the portal refuses adds inside batch, ERROR_BATCH_METHOD_NOT_ALLOWED,
  or one command too large for a batch request): it did not run and goes in a request of its
  own (``images.add`` / ``images.delete``); after a refusal every add goes alone;
- a load refusal that outlasted its retries: failed, "run again later";
- an auth error, or a refusal of a whole request (``FATAL``): the run stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final, Protocol

import attrs

from ..._calls.batch import Outcome, Packing
from ..._wire.protocol import BATCH_MAX_COMMANDS, Command
from ...exceptions import BitrixError, NotFound, OutcomeUnknown, RateLimited, ServerError
from ..frame import FATAL, run_bounded
from .plan import Op
from .scan import MAX_FILE_BYTES, read_image

if TYPE_CHECKING:
    from ...images import Images

__all__ = ["Outcomes", "Sender"]

# The bytes an add or a delete takes in a request's body besides its file or its ids: the
# key, the method, the fields and the JSON around them.
_COMMAND_BYTES: Final = 128


class Outcomes(Protocol):
    """Where ``Sender`` reports what became of each command."""

    def sending(self, ops: Iterable[Op]) -> None:
        """*ops* are about to go: called before their request is sent (the journal)."""

    def done(self, op: Op, stored: str | None = None) -> None: ...

    def fail(self, op: Op, why: str) -> None: ...

    def unsure(self, ops: Iterable[Op], error: BitrixError | None) -> None: ...

    def warn(self, text: str) -> None: ...


class Sender:
    """Sends commands, packed while the portal takes it; reports each one's outcome."""

    def __init__(
        self,
        images: Images,
        outcomes: Outcomes,
        *,
        pack: bool,
        max_request_bytes: int,
        concurrency: int,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.images = images
        self.outcomes = outcomes
        self.pack = pack
        self.packing = Packing(size=max_request_bytes)  # shared by every batch of the run
        self.concurrency = concurrency
        self.max_file_bytes = max_file_bytes

    async def send(self, ops: list[Op]) -> None:
        """Send *ops*: packed while the portal takes it, then what must go alone."""
        alone: list[Op] = []
        if self.pack:
            await run_bounded(self.batches(ops, alone), self.concurrency)
        else:
            alone = ops
        await run_bounded((self.alone(op) for op in alone), self.concurrency)

    def batches(self, ops: list[Op], alone: list[Op]) -> Iterator[Awaitable[None]]:
        """
        Coroutines sending *ops* in groups of at most 50 and about the byte bound (read
        lazily: a group's files are read only when it is sent).
        """
        group: list[Op] = []
        size = 0
        for op in ops:
            cost = _cost(op)
            bound = self.packing.size
            if group and (
                len(group) == BATCH_MAX_COMMANDS or (bound is not None and size + cost > bound)
            ):
                yield self.batch(group, alone, attrs.evolve(self.packing))
                group, size = [], 0
            group.append(op)
            size += cost
        if group:
            yield self.batch(group, alone, attrs.evolve(self.packing))

    async def batch(self, group: list[Op], alone: list[Op], packing: Packing) -> None:
        """
        *group* through the batch primitive, and what each command's outcome means.

        *packing* is the run's as it was when the group was sized: the group's requests are
        cut by it, and what they teach (a 413, a batch length) goes back to the run's.
        """
        if not self.pack or (len(group) == 1 and group[0].file is not None):
            # The portal refused packing (since the group was made), or one add: a plain
            # call sends its bytes once (no query-string escaping).
            alone += group
            return
        commands: dict[str, Command] = {}
        ops: dict[str, Op] = {}
        for op in group:
            try:
                command = await self.command(op)
            except (OSError, ValueError) as error:
                self.outcomes.fail(op, str(error))
                continue
            key = f"c{len(commands)}"
            commands[key], ops[key] = command, op
        if not commands:
            return
        self.outcomes.sending(ops.values())
        try:
            outcomes = await self.images._run(commands, packing=packing)
        except FATAL:
            raise
        except BitrixError as error:
            # A whole request failed in a way that proves nothing, and may have left other
            # requests' outcomes untold: list before resending.
            self.outcomes.unsure(ops.values(), error)
            return
        finally:
            self.learn(packing)
        fatal: BitrixError | None = None
        for key, outcome in outcomes.items():
            # Every answer is taken (the journal learns each one) before a stop is raised.
            stop = self.answer(ops[key], outcome, alone)
            fatal = fatal or stop
        if fatal is not None:
            raise fatal

    def learn(self, packing: Packing) -> None:
        """Keep the smaller request shape a group's requests were cut to."""
        run = self.packing
        run.commands = min(run.commands, packing.commands)
        if packing.size is not None:
            run.size = packing.size if run.size is None else min(run.size, packing.size)

    async def command(self, op: Op) -> Command:
        """The command of *op*; an add's reads and encodes its file (off the event loop)."""
        if op.file is None:
            assert op.image is not None  # noqa: S101 -- a delete names its image
            return self.images._delete_command(op.product_id, op.image.id)
        file = op.file

        def add() -> Command:  # blocking: reads and encodes the file
            content = read_image(file, self.max_file_bytes)
            return self.images._add_command(file.product_id, file.name, content, file.type)

        return await asyncio.to_thread(add)

    def answer(self, op: Op, outcome: Outcome, alone: list[Op]) -> BitrixError | None:
        """What *outcome* means for *op*; an error that stops the run is returned."""
        error = outcome.error
        if outcome.ok:
            self.outcomes.done(op, _stored_name(outcome.result))
        elif outcome.unknown or error is None:
            self.outcomes.unsure([op], error)
        elif outcome.alone:
            if error.status != 413:
                self.no_packing()
            alone.append(op)
        elif isinstance(error, RateLimited):
            # Refused for load before it ran, again and again: its retries are spent.
            self.outcomes.fail(op, f"{error.description}; run again later")
        elif isinstance(error, FATAL):
            # Refused (auth, load): the command did not run.
            self.outcomes.fail(op, error.description)
            return error
        else:
            self.settle(op, error)
        return None

    async def alone(self, op: Op) -> None:
        """One command in its own request (the portal refused packing, or it is too big)."""
        stored: str | None = None
        try:
            if op.file is not None:
                file = op.file
                content = await asyncio.to_thread(read_image, file, self.max_file_bytes)
                self.outcomes.sending([op])
                added = await self.images.add(
                    file.product_id, content, name=file.name, type=file.type
                )
                stored = added.name
            else:
                assert op.image is not None  # noqa: S101 -- a delete names its image
                await self.images.delete(op.product_id, op.image.id)
        except FATAL as error:
            # Refused (auth, load, a refresh that failed): the request did not run.
            self.outcomes.fail(op, error.description)
            raise
        except BitrixError as error:
            if error.status == 413:
                self.outcomes.fail(op, "larger than the portal accepts in one request")
            else:
                self.settle(op, error)
        except (OSError, ValueError) as error:
            self.outcomes.fail(op, str(error))
        else:
            self.outcomes.done(op, stored)

    def settle(self, op: Op, error: BitrixError) -> None:
        """A command answered with an error: unknown, or failed."""
        if isinstance(error, (OutcomeUnknown, ServerError)) or (
            op.file is None and isinstance(error, NotFound)
        ):
            # May have been applied; for a delete, "not found" may mean it went already
            # (a new detail picture replaced it, say): the product's listing decides.
            self.outcomes.unsure([op], error)
        else:
            self.outcomes.fail(op, error.description)

    def no_packing(self) -> None:
        if self.pack:
            self.outcomes.warn(
                "the portal refuses adds inside batch requests; sending one per request"
            )
        self.pack = False


def _cost(op: Op) -> int:
    """About the bytes *op* takes in a request's body: an add's from its file's size."""
    if op.file is None:
        return _COMMAND_BYTES
    # base64 is 4/3; URL-encoding turns its "+", "/" and "=" into three bytes (about 1 in
    # 32 characters): 1.5 is a safe bound, plus the name (escaped: x3).
    return op.file.size() * 3 // 2 + 3 * len(op.file.name.encode()) + _COMMAND_BYTES


def _stored_name(result: object) -> str | None:
    """The name in an add's answer (``{"productImage": {"name": ...}}``), if it is there."""
    image = result.get("productImage") if isinstance(result, Mapping) else None
    name = image.get("name") if isinstance(image, Mapping) else None
    return name if isinstance(name, str) else None
