"""
What the checks of ``client.doctor()`` share: the ``Visit`` they ask through, the ``Finding``
each returns, the ``Step`` that names it in ``checks.STEPS``, and ``run_step``.

A check keeps what it learned on the ``Visit`` for the checks after it; one that raises a
``BitrixError`` failed with the error's text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs

from .._calls.caller import Caller
from .._calls.links import PublicLinks
from .._wire import protocol
from .._wire.protocol import Envelope, TimeInfo
from ..exceptions import AccessDenied, AuthError, BitrixError
from .report import Status

__all__ = [
    "CHECK_TIMEOUT",
    "Finding",
    "Run",
    "Step",
    "Visit",
    "fail",
    "hint_for",
    "ok",
    "run_step",
    "skip",
    "warn",
]

#: Seconds a read-only check may take, retries included (the write check is never cut
#: short: an add stopped half-way may leave an image behind).
CHECK_TIMEOUT: Final = 30.0


@attrs.frozen
class Finding:
    """What one check found; ``Step`` gives it its name."""

    status: Status
    detail: str
    hint: str | None = None


def ok(detail: str) -> Finding:
    return Finding("ok", detail)


def warn(detail: str, hint: str | None = None) -> Finding:
    return Finding("warn", detail, hint)


def fail(detail: str, hint: str | None = None) -> Finding:
    return Finding("fail", detail, hint)


def skip(detail: str) -> Finding:
    return Finding("skip", detail)


@attrs.define
class Visit:
    """One doctor's run: the caller it asks through and what the checks learned so far."""

    caller: Caller
    write_check: int | None = None
    links: PublicLinks | None = None  # the client's file fetching (public links, REST)
    scopes: tuple[str, ...] = ()
    iblock_id: int | None = None
    product_ids: tuple[int, ...] = ()  # products of the catalog (the first page)
    product_id: int | None = None  # the product read
    image_ids: tuple[int, ...] = ()  # its images, as the first page listed them
    image_rows: tuple[Mapping[str, Any], ...] = ()  # the same images, as the portal sent them
    time: TimeInfo | None = None  # the last time block the portal sent

    async def call(self, method: str, params: Mapping[str, object]) -> Envelope:
        """One read (every check's call but the write's): resent if its answer is lost."""
        envelope = await self.caller.call(method, params, idempotent=True)
        self.time = envelope.time or self.time
        return envelope


Run = Callable[[Visit], Awaitable[Finding]]


@attrs.frozen
class Step:
    """A check in ``STEPS``: its name, the checks it needs, how it runs."""

    name: str
    needs: tuple[str, ...]
    run: Run
    timeout: float | None = CHECK_TIMEOUT


def _rows(result: object, key: str) -> list[Mapping[str, Any]]:
    """The dict rows under *key* of a list method's result (none when absent)."""
    rows = result.get(key) if isinstance(result, Mapping) else None
    return [row for row in rows if isinstance(row, Mapping)] if isinstance(rows, list) else []


def _image_ids(result: object) -> tuple[int, ...]:
    rows = _rows(result, "productImages")
    return tuple(i for i in (_int(row.get("id")) for row in rows) if i is not None)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _code(error: BitrixError) -> str:
    return protocol.normalize_code(error.code) if error.code is not None else ""


def _describe(error: BitrixError) -> str:
    """An error as one line: the method, the portal's text, its code."""
    code = f" ({error.code})" if error.code not in (None, "") else ""
    method = f"{error.method}: " if error.method else ""
    return f"{method}{error.description}{code}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def hint_for(error: BitrixError) -> str | None:
    """What to do about an error no check handled itself."""
    if isinstance(error, AuthError):
        return (
            "check the webhook URL (or the OAuth tokens): a deleted or regenerated webhook, "
            "or a revoked application, is refused this way"
        )
    if isinstance(error, AccessDenied):
        return "the webhook's user lacks the rights this needs"
    return None


async def run_step(step: Step, visit: Visit) -> Finding:
    """Run one check; a portal's error or a timeout is the check's failure."""
    try:
        if step.timeout is None:
            return await step.run(visit)
        return await asyncio.wait_for(step.run(visit), step.timeout)
    except asyncio.TimeoutError:
        return fail(f"no answer within {step.timeout:g} s", "the portal is slow or unreachable")
    except BitrixError as error:
        return fail(_describe(error), hint_for(error))
