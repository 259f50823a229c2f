"""The fault matrix: every public operation against every fault the portal can inject.

``EXPECTED`` writes down, for each (fault, operation) cell, what the client must do: retry to
success, or raise a named exception, and, for a write, whether the portal applied it. Each
cell runs against a fresh embedded portal over loopback, then checks the portal's state:
nothing created twice, nothing deleted by mistake, what the client lists equals the
catalog, no request left in flight, no connection held, no partial file. ``render_matrix()``
prints the table for the README; ``test_the_readme_section_is_in_sync`` keeps
the README's Reliability section equal to it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from support import (
    FAST_RETRY,
    PNG,
    UNLIMITED,
    idle,
    oauth_client,
    partial_files,
    settle,
    snapshot,
    webhook_client,
)

import bitrix_images as bx
from bitrix_images import mirror
from bitrix_images.testing import (
    INTERNAL_SERVER_ERROR,
    OPERATION_TIME_LIMIT,
    OVERLOAD_LIMIT,
    QUERY_LIMIT_EXCEEDED,
    FakePortal,
    FaultKind,
    instant_retries,
)
from bitrix_images.testing import Fault as InjectedFault

SECTION = Path(__file__).parent.parent / "README.md"

PRODUCTS = 4
PER_PRODUCT = 3
TARGET = 2  # the product the single-product operations work on
# The portal's operating window: operating_reset_at is 2-3 s ahead, so a known reset means
# a wait of 3-4 s (RESET_GRAIN included); the recording clock does not spend it.
WINDOW = 3.0
TIMEOUT = 0.3  # the client's timeout in the timeout column
LATE = 0.7  # how late the portal answers in that column
TIGHT_WAIT = 1.5  # max_wait in the "reset past max_wait" column


# --- the table ------------------------------------------------------------------------------


@attrs.frozen
class Outcome:
    """What a cell must end in: success (``error is None``) or ``error``; for a write,
    whether the portal applied it (``applied``)."""

    error: type[BaseException] | None = None
    applied: bool | None = None

    def render(self) -> str:
        if self.error is None:
            return "✓ once" if self.applied else "✓"
        name = f"`{self.error.__name__}`"
        if self.applied is None:
            return name
        return f"{name}, {'applied once' if self.applied else 'not applied'}"


OK = Outcome()
DONE = Outcome(applied=True)  # a write retried to success: applied exactly once


def fails(error: type[BaseException], applied: bool | None = None) -> Outcome:
    return Outcome(error, applied)


@attrs.frozen
class Fault:
    key: str
    title: str
    oauth: bool = False
    prime: bool = False  # call the operation once first, so the client knows the reset time
    max_wait: float | None = None
    timeout: float | None = None


FAULTS = (
    Fault("qle", "503 `QUERY_LIMIT_EXCEEDED` x3"),
    Fault("qle_spent", "503 `QUERY_LIMIT_EXCEEDED` past the retry budget"),
    Fault("overload", "503 `OVERLOAD_LIMIT` x3"),
    Fault("otl", "429 `OPERATION_TIME_LIMIT`, reset time known", prime=True),
    Fault(
        "otl_far",
        f"429 `OPERATION_TIME_LIMIT`, reset past `max_wait` ({TIGHT_WAIT} s)",
        prime=True,
        max_wait=TIGHT_WAIT,
    ),
    Fault("e500", "500 `INTERNAL_SERVER_ERROR` (JSON) x2"),
    Fault("html502", "502 HTML page from a proxy x2"),
    Fault(
        "timeout", f"timeout (answer {LATE} s late, client timeout {TIMEOUT} s)", timeout=TIMEOUT
    ),
    Fault("reset", "connection reset before processing x2"),
    Fault("drop", "connection closed after processing, no answer"),
    Fault("truncated", "truncated JSON after processing (download: body cut short)"),
    Fault("command", "batch: commands fail inside a 200 answer (503, 500) x3"),
    Fault("expired", "OAuth access token expired", oauth=True),
    Fault("refresh_rejected", "expired token, refresh rejected", oauth=True),
)
FAULT_BY_KEY = {fault.key: fault for fault in FAULTS}

OPERATIONS = ("list", "list_many", "get", "add", "delete", "fields", "download", "mirror")
READS = ("list", "list_many", "get", "fields", "download", "mirror")
NA = None  # the fault cannot happen to this operation


def _row(
    reads: Outcome | dict[str, Outcome | None], add: Outcome | None, delete: Outcome | None
) -> dict[str, Outcome | None]:
    row: dict[str, Outcome | None] = (
        dict.fromkeys(READS, reads) if isinstance(reads, Outcome) else dict(reads)
    )
    row["add"] = add
    row["delete"] = delete
    return {op: row[op] for op in OPERATIONS}


_LOST_UNAPPLIED = fails(bx.OutcomeUnknown, applied=False)
_LOST_APPLIED = fails(bx.OutcomeUnknown, applied=True)
_RATE_LIMITED = fails(bx.RateLimited)

EXPECTED: dict[str, dict[str, Outcome | None]] = {
    "qle": _row(OK, DONE, DONE),
    "qle_spent": _row(_RATE_LIMITED, fails(bx.RateLimited, False), fails(bx.RateLimited, False)),
    "overload": _row(OK, DONE, DONE),
    "otl": _row(OK, DONE, DONE),
    # A download never learns a reset time (its answer is a file): it waits max_delay.
    "otl_far": _row(
        {**dict.fromkeys(READS, _RATE_LIMITED), "download": OK},
        fails(bx.RateLimited, False),
        fails(bx.RateLimited, False),
    ),
    "e500": _row(OK, fails(bx.ServerError, False), fails(bx.ServerError, False)),
    "html502": _row(OK, _LOST_UNAPPLIED, _LOST_UNAPPLIED),
    "timeout": _row(OK, _LOST_APPLIED, _LOST_APPLIED),
    "reset": _row(OK, _LOST_UNAPPLIED, _LOST_UNAPPLIED),
    "drop": _row(OK, _LOST_APPLIED, _LOST_APPLIED),
    "truncated": _row(OK, _LOST_APPLIED, _LOST_APPLIED),
    "command": _row({**dict.fromkeys(READS, NA), "list_many": OK, "mirror": OK}, NA, NA),
    # A signed download link carries the token it was made with: a refresh cannot cure it
    # (bitrix24-protocol.md section 6), so download raises and the caller re-lists.
    "expired": _row({**dict.fromkeys(READS, OK), "download": fails(bx.AuthError)}, DONE, DONE),
    "refresh_rejected": _row(
        fails(bx.AuthError), fails(bx.AuthError, False), fails(bx.AuthError, False)
    ),
}

CELLS = [
    pytest.param(fault, op, id=f"{fault}-{op}")
    for fault in EXPECTED
    for op, outcome in EXPECTED[fault].items()
    if outcome is not None
]


def render_matrix() -> str:
    """The matrix as a markdown table: one row per fault, one column per operation."""
    names = {op: f"`{op}`" for op in OPERATIONS}
    names["mirror"] = "`mirror` job"
    lines = [
        "| fault | " + " | ".join(names[op] for op in OPERATIONS) + " |",
        "| --- |" + " --- |" * len(OPERATIONS),
    ]
    for fault in FAULTS:
        cells = [
            "n/a" if (o := EXPECTED[fault.key][op]) is None else o.render() for op in OPERATIONS
        ]
        lines.append(f"| {fault.title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cell_count() -> int:
    return len(CELLS)


# --- the operations -------------------------------------------------------------------------


@attrs.define
class Cell:
    """One run: the portal, the client, and what the operation needs."""

    portal: FakePortal
    client: bx.BitrixClient
    tmp: Path
    image: bx.ProductImage | None = None  # the download's image, fetched before the fault
    doomed: int = 0  # the image the delete removes


def _ids(images: list[bx.ProductImage]) -> list[int]:
    return [image.id for image in images]


def _catalog_ids(portal: FakePortal, pid: int) -> list[int]:
    return [image.id for image in portal.catalog.images(pid)]


async def _run_list(cell: Cell) -> object:
    images = [image async for image in cell.client.images.list(TARGET)]
    assert _ids(images) == _catalog_ids(cell.portal, TARGET)
    return images


async def _run_list_many(cell: Cell) -> object:
    images = [image async for image in cell.client.images.list_many(range(1, PRODUCTS + 1))]
    assert _ids(images) == [
        i for pid in range(1, PRODUCTS + 1) for i in _catalog_ids(cell.portal, pid)
    ]
    return images


async def _run_get(cell: Cell) -> object:
    wanted = cell.portal.catalog.images(TARGET)[1]
    image = await cell.client.images.get(TARGET, wanted.id)
    assert (image.id, image.product_id, image.name) == (wanted.id, TARGET, wanted.name)
    return image


async def _run_add(cell: Cell) -> object:
    image = await cell.client.images.add(TARGET, PNG, name="new.png")
    (stored,) = [i for i in cell.portal.catalog.images(TARGET) if i.id == image.id]
    assert (stored.name, stored.content) == ("new.png", PNG)
    return image


async def _run_delete(cell: Cell) -> object:
    await cell.client.images.delete(TARGET, cell.doomed)
    return None


async def _run_fields(cell: Cell) -> object:
    fields = await cell.client.images.fields()
    assert fields["productId"].is_required
    return fields


async def _run_download(cell: Cell) -> object:
    assert cell.image is not None
    path = await cell.client.images.download(cell.image, cell.tmp)
    (stored,) = [i for i in cell.portal.catalog.images(TARGET) if i.id == cell.image.id]
    assert path.read_bytes() == stored.content
    return path


async def _run_mirror(cell: Cell) -> object:
    dest = cell.tmp / "mirror"
    stats = await mirror(cell.client, range(1, PRODUCTS + 1), dest, warnings=io.StringIO())
    assert (stats.images, stats.downloaded, stats.failed) == (PRODUCTS * PER_PRODUCT,) * 2 + (0,)
    for pid in range(1, PRODUCTS + 1):
        for stored in cell.portal.catalog.images(pid):
            assert (dest / str(pid) / stored.name).read_bytes() == stored.content
    return stats


RUN: dict[str, Callable[[Cell], Awaitable[object]]] = {
    "list": _run_list,
    "list_many": _run_list_many,
    "get": _run_get,
    "add": _run_add,
    "delete": _run_delete,
    "fields": _run_fields,
    "download": _run_download,
    "mirror": _run_mirror,
}

# The outer requests each operation makes, where a whole-request fault is aimed.
TARGETS: dict[str, tuple[str, ...]] = {
    "list": ("catalog.productImage.list",),
    "list_many": ("batch",),
    "get": ("catalog.productImage.get",),
    "add": ("catalog.productImage.add",),
    "delete": ("catalog.productImage.delete",),
    "fields": ("catalog.productImage.getFields",),
    "download": ("download",),
    "mirror": ("batch", "download"),
}


async def _prime(cell: Cell, op: str) -> None:
    """One fault-free call of the operation's REST method: its answer's ``time`` block tells
    the client when the method's operating window moves on (``operating_reset_at``)."""
    client = cell.client
    if op in ("list", "list_many", "mirror"):
        _ = [image async for image in client.images.list(1)]
    elif op == "get":
        await client.images.get(1, 1)
    elif op == "fields":
        await client.images.fields()
    elif op == "add":
        await client.images.add(1, PNG, name="primer.png")
    elif op == "delete":
        await client.images.delete(1, cell.portal.catalog.images(1)[-1].id)
    # download: a file answer has no time block; nothing to learn.


# The whole-request faults: kind, times, status, body (the delay is LATE for "delay").
INJECTIONS: dict[str, tuple[FaultKind, int, int | None, dict[str, object] | None]] = {
    "qle": ("error", 3, 503, QUERY_LIMIT_EXCEEDED),
    "qle_spent": ("error", 100, 503, QUERY_LIMIT_EXCEEDED),
    "overload": ("error", 3, 503, OVERLOAD_LIMIT),
    "otl": ("error", 1, 429, OPERATION_TIME_LIMIT),
    "otl_far": ("error", 1, 429, OPERATION_TIME_LIMIT),
    "e500": ("error", 2, 500, INTERNAL_SERVER_ERROR),
    "html502": ("html", 2, 502, None),
    "timeout": ("delay", 1, None, None),
    "reset": ("reset", 2, None, None),
    "drop": ("drop", 1, None, None),
    "truncated": ("truncated", 1, None, None),
}


def _arm(portal: FakePortal, fault: Fault, op: str) -> list[InjectedFault]:
    """Inject *fault* into the requests of *op*; return the faults queued."""
    if fault.key == "expired":
        portal.expire_access_token()
        return []
    if fault.key == "refresh_rejected":
        portal.reject_refresh = True
        portal.expire_access_token()
        return []
    if fault.key == "command":
        list_method = "catalog.productImage.list"
        return [
            portal.inject("command_error", times=2, method=list_method, body=QUERY_LIMIT_EXCEEDED),
            portal.inject("command_error", times=1, method=list_method, body=INTERNAL_SERVER_ERROR),
        ]
    kind, times, status, body = INJECTIONS[fault.key]
    armed = []
    for method in TARGETS[op]:
        # A file has no JSON to cut: its body stops short of its Content-Length instead.
        how: FaultKind = "cut_body" if kind == "truncated" and method == "download" else kind
        armed.append(
            portal.inject(how, times=times, method=method, status=status, body=body, delay=LATE)
        )
    return armed


def _expected_state(
    before: dict[int, list[Any]],
    after: dict[int, list[Any]],
    op: str,
    outcome: Outcome,
    doomed: int,
) -> dict[int, list[Any]]:
    """The catalog *before* with the operation's effect applied when the outcome says so."""
    expected = {pid: list(images) for pid, images in before.items()}
    applied = outcome.applied if outcome.error is not None else op in ("add", "delete")
    if op == "add" and applied:
        # The one new image: appended to the product's MORE_PHOTO list, named as sent.
        new = after[TARGET][len(before[TARGET]) :]
        assert len(new) == 1, f"add created {len(new)} images"
        assert new[0][1:3] == ("new.png", "MORE_PHOTO")
        expected[TARGET].append(new[0])
    if op == "delete" and applied:
        expected[TARGET] = [image for image in expected[TARGET] if image[0] != doomed]
    return expected


@pytest.mark.parametrize(("fault_key", "op"), CELLS)
async def test_cell(fault_key: str, op: str, tmp_path: Path, secret_watch: Any) -> None:
    fault = FAULT_BY_KEY[fault_key]
    outcome = EXPECTED[fault_key][op]
    assert outcome is not None
    retry = FAST_RETRY if fault.max_wait is None else attrs.evolve(FAST_RETRY, max_wait=TIGHT_WAIT)
    options: dict[str, object] = {"retry": retry, "rate_limit": UNLIMITED}
    if fault.timeout is not None:
        options["timeout"] = fault.timeout
    async with FakePortal(
        products=PRODUCTS, images_per_product=PER_PRODUCT, rate=None, operating_window=WINDOW
    ) as portal:
        client = (
            oauth_client(portal, **options) if fault.oauth else webhook_client(portal, **options)
        )
        async with client, instant_retries() as clock:
            cell = Cell(portal, client, tmp_path, doomed=portal.catalog.images(TARGET)[0].id)
            if op == "download":
                cell.image = await client.images.get(TARGET, portal.catalog.images(TARGET)[2].id)
            if fault.prime:
                await _prime(cell, op)
            before = snapshot(portal)
            portal.counters.reset()
            armed = _arm(portal, fault, op)
            initial = [f.times for f in armed]

            error: BaseException | None = None
            result: object = None
            try:
                result = await RUN[op](cell)
            except Exception as exc:  # checked against the table just below
                error = exc

            await settle(portal)  # a late answer (the timeout column) lands before the checks
            # The faults did happen: all of them on the way to a success, at least one
            # before an error.
            if outcome.error is None:
                assert [f.times for f in armed if f.times > 0] == []
            elif armed:
                assert any(f.times < f0 for f, f0 in zip(armed, initial, strict=True))
            portal.clear_faults()
            portal.reject_refresh = False
            if outcome.error is None:
                assert error is None, f"expected success, got {error!r}"
            else:
                assert type(error) is outcome.error, f"expected {outcome.error.__name__}: {error!r}"
                assert isinstance(error, bx.BitrixError)
            secret_watch.check(error, result, client)
            assert idle(client)

            # Writes are never replayed once they may have reached the portal.
            if op in ("add", "delete") and outcome.error in (bx.OutcomeUnknown, bx.ServerError):
                assert portal.counters.by_method[f"catalog.productimage.{op}"] == 1
            if fault_key == "otl":
                # The retry honoured the portal's operating_reset_at (+1 s), or max_delay when
                # the method never reported one (a download). Beside it, other requests of a
                # refused method that reported no reset are held until the retry has probed
                # (at most RESET_GRAIN, counted from the refusal: a little less by then).
                waits = [w for w in clock.waits if w > FAST_RETRY.max_delay]
                if op == "download":
                    assert waits == []
                else:
                    assert any(1.0 <= w <= WINDOW + 1.5 for w in waits), clock.waits
                    assert all(w <= WINDOW + 1.5 for w in waits), waits
            if fault_key == "otl_far" and outcome.error is bx.RateLimited:
                assert clock.total <= TIGHT_WAIT
                assert error is not None
                assert error.attempts == 1
            if fault_key == "expired" and outcome.error is None:
                assert portal.counters.refreshes == 1
            if fault_key == "refresh_rejected":
                assert portal.counters.refreshes == 0

            # The portal's state: nothing created twice, nothing deleted by mistake.
            after = snapshot(portal)
            assert after == _expected_state(before, after, op, outcome, cell.doomed)
            assert partial_files(tmp_path) == []

        # What a fresh client lists equals the catalog.
        async with webhook_client(portal) as fresh:
            listed = [i.id async for i in fresh.images.list_many(portal.catalog.product_ids())]
        assert listed == [
            i for pid in portal.catalog.product_ids() for i in _catalog_ids(portal, pid)
        ]
        assert portal.counters.in_flight == 0


# --- the table itself -------------------------------------------------------------------------


def test_the_table_covers_every_operation_and_fault() -> None:
    assert set(EXPECTED) == {fault.key for fault in FAULTS}
    for row in EXPECTED.values():
        assert tuple(row) == OPERATIONS
    # Every fault applies to list_many and mirror; only the batch column skips the others.
    skipped = [(f, op) for f, row in EXPECTED.items() for op, o in row.items() if o is None]
    assert {f for f, _ in skipped} == {"command"}
    assert cell_count() == len(FAULTS) * len(OPERATIONS) - len(skipped)


def test_the_readme_section_is_in_sync() -> None:
    text = SECTION.read_text(encoding="utf-8")
    assert render_matrix() in text, "regenerate the table: python tests/test_fault_matrix.py"
    match = re.search(r"(\d+) cells", text)
    assert match is not None
    assert int(match.group(1)) == cell_count()


if __name__ == "__main__":  # pragma: no cover -- prints the table for the README
    print(render_matrix())
    print(f"{cell_count()} cells")


# --- beyond the table: a batch command's wait budget ------------------------------------------


async def test_a_batch_command_does_not_wait_past_max_wait() -> None:
    async with FakePortal(products=3, images_per_product=1, rate=None) as portal:
        async with webhook_client(portal) as client, instant_retries() as clock:
            _ = [image async for image in client.images.list(1)]  # learns the reset: ~600 s
            portal.inject(
                "command_error", method="catalog.productImage.list", body=OPERATION_TIME_LIMIT
            )
            with pytest.raises((bx.BatchError, bx.RateLimited)):
                _ = [image async for image in client.images.list_many([1, 2, 3])]
            assert clock.total <= FAST_RETRY.max_wait, clock.waits
