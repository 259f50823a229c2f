"""
Sending an upload's commands, and what each command's answer means: the network side.

Adds go up to 50 per ``batch`` request (batch.md allows every method but ``batch``,
``download``, ``upload``), capped by the encoded size of the request. A batch of adds is
not idempotent: when its answer is lost (``OutcomeUnknown``) or a command fails in a way
that may have been applied, the command is reported unsure (its product is listed again
before anything is resent), never sent again from here. A command the portal refused
before running it (limits.md) is sent again under the retry policy. A portal that refuses
the packing (``ERROR_BATCH_METHOD_NOT_ALLOWED``, HTTP 413 for the body) gets smaller
batches, down to one add per request; neither refusal applied anything.

This is the one module of the jobs that uses the client's private call machinery
(``_Wire``); ``Sender`` is its whole surface.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final, Protocol

from ..._calls.retry import Attempts, RetryPolicy, Verdict
from ..._wire import protocol as _protocol
from ..._wire.protocol import BatchResult, Retry
from ...exceptions import BitrixError, NotFound, OutcomeUnknown, ServerError
from ...images import is_image
from ..frame import FATAL, run_bounded
from .plan import Op
from .scan import ImageFile

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = ["Outcomes", "Sender"]

# The JSON around one command in the body: "key":"...", plus the envelope's own bytes.
_COMMAND_OVERHEAD: Final = 8
_BODY_OVERHEAD: Final = 64


class _Wire(Protocol):
    """The client internals this module uses: one batch request, the retry driver, the clock."""

    retry: RetryPolicy

    def attempts(self, *, idempotent: bool) -> Attempts: ...

    def judge(self, attempts: Attempts, error: BitrixError, methods: Iterable[str]) -> Verdict: ...

    async def batch(
        self, commands: Mapping[str, _protocol.Command], *, halt: bool = False
    ) -> BatchResult: ...

    async def wait(self, seconds: float) -> None: ...


def _wire(client: BitrixClient) -> _Wire:
    """The one seam between the upload and the client's private transport."""
    # batch() is internal (the client's Caller); this is the only line that names it.
    return client._caller


class Outcomes(Protocol):
    """Where ``Sender`` reports what became of each command."""

    def done(self, op: Op, stored: str | None = None) -> None: ...

    def fail(self, op: Op, why: str) -> None: ...

    def unsure(self, ops: Iterable[Op], error: BitrixError | None) -> None: ...

    def warn(self, text: str) -> None: ...


class Sender:
    """Sends commands, packed while the portal takes it; reports each one's outcome."""

    def __init__(
        self,
        client: BitrixClient,
        outcomes: Outcomes,
        *,
        pack: bool,
        max_request_bytes: int,
        concurrency: int,
    ) -> None:
        self.images = client.images
        self.wire = _wire(client)
        self.outcomes = outcomes
        self.pack = pack
        self.limit = max_request_bytes
        self.concurrency = concurrency
        self.again: list[Op] = []  # refused for load before processing: resend after a wait
        self.pause = 0.0  # the wait before resending them
        self.tries: dict[Op, Attempts] = {}  # each refused command's own retry driver
        self.reshaped: list[Op] = []  # refused for their packing: resend smaller, at once

    @property
    def retry(self) -> RetryPolicy:
        return self.wire.retry

    async def wait(self, seconds: float) -> None:
        """Sleep on the client's clock (instant under a test policy)."""
        await self.wire.wait(seconds)

    async def send(self, method: str, ops: list[Op]) -> None:
        """Send *ops*, packed while the portal takes it; resend what it refused unprocessed."""
        while ops:
            self.again, self.reshaped, self.pause = [], [], 0.0
            if self.pack:
                await run_bounded(self.batches(method, ops), self.concurrency)
            else:
                await run_bounded((self.alone(op) for op in ops), self.concurrency)
            # Refused packings end: each one makes batches smaller, down to a single add,
            # which is sent alone (a 413 then fails that file). Load refusals end with
            # their commands' retry drivers.
            ops = self.reshaped + self.again
            if self.again:
                await self.wire.wait(self.pause)

    def batches(self, method: str, ops: list[Op]) -> Iterator[Awaitable[None]]:
        """Coroutines sending *ops* in batches of at most 50 commands and the size limit."""
        chunk: list[tuple[Op, str]] = []
        size = _BODY_OVERHEAD
        for op in ops:
            query = _delete_query(op) if op.file is None else None
            cost = len(method) + 1 + _COMMAND_OVERHEAD + (len(query) if query else _encoded(op))
            if chunk and (len(chunk) == _protocol.BATCH_MAX_COMMANDS or size + cost > self.limit):
                yield self.batch(method, chunk)
                chunk, size = [], _BODY_OVERHEAD
            chunk.append((op, query or ""))
            size += cost
        if chunk:
            yield self.batch(method, chunk)

    async def batch(self, method: str, chunk: list[tuple[Op, str]]) -> None:
        """One ``batch`` request of *chunk*, and what each command's answer means."""
        if len(chunk) == 1 and chunk[0][0].file is not None:
            # One add: a plain call sends its bytes once (no query-string escaping).
            await self.alone(chunk[0][0])
            return
        commands: dict[str, _protocol.Command] = {}
        for index, (op, known) in enumerate(chunk):
            query = known
            if op.file is not None:
                try:
                    query = await asyncio.to_thread(_add_query, op.file)
                except (OSError, ValueError) as error:
                    self.outcomes.fail(op, str(error))
                    continue
            commands[f"c{index}"] = (method, query)
        ops = {f"c{index}": op for index, (op, _) in enumerate(chunk)}
        if not commands:
            return
        size = _BODY_OVERHEAD + sum(
            len(key) + len(method) + 1 + len(query) + _COMMAND_OVERHEAD
            for key, (method, query) in commands.items()
            if isinstance(query, str)
        )
        try:
            result = await self.wire.batch(commands)
        except FATAL:
            raise
        except BitrixError as error:
            if error.status == 413:
                # The body was too big for the portal (or a proxy before it): nothing was
                # applied. Smaller batches from now on, down to one add per request.
                self.limit = min(self.limit, max(size // 2, 1))
                self.reshaped += [ops[key] for key in commands]
                return
            if _refuses_packing(error):
                self.no_packing()
                self.reshaped += [ops[key] for key in commands]
                return
            # The batch may have been applied in part or whole: list before resending.
            self.outcomes.unsure([ops[key] for key in commands], error)
            return
        for key in commands:
            self.answer(ops[key], result, key)

    def answer(self, op: Op, result: BatchResult, key: str) -> None:
        error = result.errors.get(key)
        if error is None:
            if key in result.results:
                self.outcomes.done(op, _stored_name(result.results[key]))
            else:
                # Neither a result nor an error: a halted or cut answer (batch.md).
                self.outcomes.unsure([op], None)
            return
        if _refuses_packing(error):
            self.no_packing()
            self.reshaped.append(op)
        elif _protocol.retry_kind(error) in (Retry.BACKOFF, Retry.WAIT_RESET):
            # limits.md: refused before it ran; safe to send again, under the same rules
            # (attempts, backoff, the operating window's reset) as any call.
            attempts = self.tries.setdefault(op, self.wire.attempts(idempotent=False))
            attempts.begin()
            verdict = self.wire.judge(attempts, error, (op.method,))
            if verdict.delay is None:
                self.outcomes.fail(op, f"{verdict.error.description}; run again later")
            else:
                self.again.append(op)
                self.pause = max(self.pause, verdict.delay)
        elif isinstance(error, FATAL):
            raise error
        else:
            self.settle(op, error)

    async def alone(self, op: Op) -> None:
        """One command in its own request (the portal refused packing, or it is too big)."""
        stored: str | None = None
        try:
            if op.file is not None:
                file = op.file
                added = await self.images.add(
                    file.product_id, file.path, name=file.name, type=file.type
                )
                stored = added.name
            else:
                assert op.image is not None  # noqa: S101 -- a delete names its image
                await self.images.delete(op.product_id, op.image.id)
        except FATAL:
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


def _add_query(file: ImageFile) -> str:
    """An add command's query string (blocking: reads and encodes the file)."""
    content = file.path.read_bytes()
    if not is_image(content):
        raise ValueError(f"{file.shown} is no longer an image")
    # catalog-product-image-add.md: fileContent is [name, base64] with no data: prefix.
    return _protocol.http_build_query(
        {
            "fields": {"productId": file.product_id, "type": file.type.value},
            "fileContent": [file.name, base64.b64encode(content).decode("ascii")],
        }
    )


def _delete_query(op: Op) -> str:
    assert op.image is not None  # noqa: S101 -- a delete names its image
    return f"productId={op.product_id}&id={op.image.id}"


def _encoded(op: Op) -> int:
    """An add command's size in the body, from the file's size (base64, then escaping)."""
    assert op.file is not None  # noqa: S101 -- an add has its file
    try:
        size = op.file.path.stat().st_size
    except OSError:
        size = 0
    # base64 is 4/3; quote_plus turns its "+", "/" and "=" into three bytes (about 1 in
    # 32 characters): 1.5 is a safe bound, plus the fields and the name (escaped: x3).
    return size * 3 // 2 + 3 * len(op.file.name.encode()) + 96


def _stored_name(result: object) -> str | None:
    """The name in an add's answer (``{"productImage": {"name": ...}}``), if it is there."""
    image = result.get("productImage") if isinstance(result, Mapping) else None
    name = image.get("name") if isinstance(image, Mapping) else None
    return name if isinstance(name, str) else None


def _refuses_packing(error: BitrixError) -> bool:
    """batch.md: ERROR_BATCH_METHOD_NOT_ALLOWED, a method the portal runs only alone."""
    code = error.code
    return code is not None and _protocol.normalize_code(code) == "ERROR_BATCH_METHOD_NOT_ALLOWED"
