"""
The checks of ``client.doctor()``, each a function of one ``Visit``, and their order.

Each check asks the portal as little as it can (protocol notes 10.3: ``scope``,
``method.get``, ``server.time``, ``catalog.catalog.list`` change nothing) and keeps what it
learned on the ``Visit`` for the checks after it. A check returns a ``Finding``; one that
raises a ``BitrixError`` failed with the error's text. ``STEPS`` is the order, and says
which earlier checks each one needs: a check whose needs failed is skipped, not run.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Final

import attrs

from .._calls.caller import Caller
from .._wire import clock, protocol
from .._wire.auth import OAuthAuth
from .._wire.commands import (
    ADD,
    DELETE,
    FIELDS,
    GET,
    LIST,
    add_params,
    image_params,
    list_command,
    list_query,
)
from .._wire.protocol import Envelope, TimeInfo
from ..exceptions import (
    AccessDenied,
    AuthError,
    BitrixError,
    NotFound,
    OutcomeUnknown,
    TransportError,
)
from ..models import ImageType
from .report import Status

__all__ = ["STEPS", "Finding", "Step", "Visit", "run_step"]

#: Seconds the ``connect`` check waits for DNS, then for the portal's answer: a dead host
#: is known within these, whatever the client's retry policy.
CONNECT_TIMEOUT: Final = 10.0
#: Seconds a read-only check may take, retries included (the write check is never cut
#: short: an add stopped half-way may leave an image behind).
CHECK_TIMEOUT: Final = 30.0
#: Past this many seconds between the portal's clock and ours, ``clock`` warns.
CLOCK_SKEW: Final = 60.0
#: The products looked at for one with two or more images (``page_mode``).
PAGE_MODE_PRODUCTS: Final = 20
#: The five methods the SDK uses (api-reference/catalog/product-image/).
IMAGE_METHODS: Final = (LIST, GET, ADD, DELETE, FIELDS)
#: A 1x1 transparent PNG, the image the write check adds and deletes.
PIXEL: Final = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="
)
_CATALOG_RIGHTS: Final = 200040300010  # catalog's "no read access", while scope lists catalog


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
    scopes: tuple[str, ...] = ()
    iblock_id: int | None = None
    product_ids: tuple[int, ...] = ()  # products of the catalog (the first page)
    product_id: int | None = None  # the product read
    image_ids: tuple[int, ...] = ()  # its images, as the first page listed them
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


# --- the checks, in order ------------------------------------------------------------------


async def connect(visit: Visit) -> Finding:
    origin = visit.caller.auth.origin
    try:
        reach = await visit.caller.transport.reach(origin, timeout=CONNECT_TIMEOUT)
    except TransportError as error:
        if error.description.startswith("TLS:"):
            hint = "the portal's certificate must be valid for its name and not expired"
        else:
            hint = "check the portal's address and that this machine can reach it"
        return fail(error.description, hint)
    over = "https (TLS)" if reach.tls else "plain http"
    return ok(
        f"{origin.host}:{origin.port} over {over}: {reach.addresses} address(es) in "
        f"{_ms(reach.resolve)}, HTTP {reach.status} in {_ms(reach.answer)}"
    )


async def auth(visit: Visit) -> Finding:
    # One `scope` call (basic: any valid credential may ask) proves the credential and
    # feeds the scope check. An expired OAuth token is refreshed by the caller like any
    # other call's, and the new pair goes to on_token_refresh (or the coordinator).
    stats = visit.caller.stats
    refreshes = stats.refreshes
    envelope = await visit.call("scope", {})
    result = envelope.result
    if not isinstance(result, list):
        return fail(f"scope answered {type(result).__name__}, not a list of scopes")
    visit.scopes = tuple(str(name) for name in result)
    if not isinstance(visit.caller.auth, OAuthAuth):
        return ok("the webhook was accepted")
    if stats.refreshes > refreshes:
        return ok("the OAuth access token had expired; refreshed, and the new pair saved")
    return ok("the OAuth access token was accepted")


async def scope(visit: Visit) -> Finding:
    # api-reference/common/system/scope.md: the scopes of this webhook or application.
    granted = ", ".join(visit.scopes) or "none"
    if "catalog" in visit.scopes:
        return ok(f"catalog granted (scopes: {granted})")
    return fail(
        f"the catalog scope is not granted (scopes: {granted})",
        "edit the webhook (or the application) and add the catalog scope (CRM > Catalog)",
    )


async def methods(visit: Visit) -> Finding:
    # api-reference/common/system/method-get.md: isExisting, isAvailable.
    missing, closed = [], []
    for name in IMAGE_METHODS:
        try:
            envelope = await visit.call("method.get", {"name": name})
        except BitrixError as error:
            if name == IMAGE_METHODS[0] and _code(error) == "ERROR_METHOD_NOT_FOUND":
                return skip("the portal does not know method.get")
            raise
        answer = envelope.result if isinstance(envelope.result, Mapping) else {}
        if not answer.get("isExisting"):
            missing.append(name)
        elif not answer.get("isAvailable"):
            closed.append(name)
    if missing:
        return fail(
            f"the portal does not have {', '.join(missing)}",
            "the catalog module is missing or older than catalog.productImage (2022)",
        )
    if closed:
        return fail(
            f"not available to this credential: {', '.join(closed)}",
            "grant the catalog scope to the webhook or application",
        )
    return ok(f"the {len(IMAGE_METHODS)} catalog.productImage.* methods exist and are available")


async def read(visit: Visit) -> Finding:
    # catalog-catalog-list.md, then catalog-product-list.md with start=-1 (no COUNT(*),
    # huge-data.md), then one catalog-product-image-list.md.
    envelope = await visit.call("catalog.catalog.list", {"start": -1})
    catalogs = _rows(envelope.result, "catalogs")
    # Products before variations: a catalog of offers names its parent in productIblockId.
    ordered = sorted(catalogs, key=lambda c: c.get("productIblockId") is not None)
    if not ordered:
        return warn(
            "the portal has no product catalog (catalog.catalog.list is empty)",
            "create a product catalog in CRM > Catalog first",
        )
    for catalog in ordered[:3]:
        iblock = _int(catalog.get("iblockId"))
        if iblock is None:
            continue
        params = {
            "filter": {"iblockId": iblock},
            "select": ["id", "iblockId"],
            "order": {"id": "asc"},
            "start": -1,
        }
        rows = _rows((await visit.call("catalog.product.list", params)).result, "products")
        ids = tuple(i for i in (_int(row.get("id")) for row in rows) if i is not None)
        if ids:
            visit.iblock_id, visit.product_ids = iblock, ids
            break
    else:
        return warn("no product found in the portal's catalogs: nothing to read")
    product = visit.product_ids[0]
    try:
        images = await visit.call(LIST, {"productId": product, "select": ["id"]})
    except AccessDenied as error:
        if _code(error) != str(_CATALOG_RIGHTS):
            raise
        return fail(
            f"listing the images of product {product} was refused ({_CATALOG_RIGHTS})",
            "the scope lists catalog, but the webhook's user has no right to read the "
            "catalog: grant it in CRM > Catalog > Access permissions",
        )
    visit.product_id = product
    visit.image_ids = tuple(_image_ids(images.result))
    return ok(
        f"product {product} of catalog {visit.iblock_id}: {len(visit.image_ids)} image(s) listed"
    )


async def clock_check(visit: Visit) -> Finding:
    # api-reference/common/system/server-time.md: the portal's date('c').
    before = clock.now()
    envelope = await visit.call("server.time", {})
    after = clock.now()
    try:
        portal = datetime.fromisoformat(str(envelope.result)).timestamp()
    except ValueError:
        return warn(f"server.time answered {str(envelope.result)!r}, not a date")
    # The portal's answer has whole seconds: the skew is known to about one.
    skew = portal - (before + after) / 2
    seconds = round(abs(skew))
    side = "ahead of" if skew > 0 else "behind"
    if abs(skew) <= CLOCK_SKEW:
        return ok(f"the portal's clock is within {max(seconds, 1)} s of this machine's")
    return warn(
        f"the portal's clock is {seconds} s {side} this machine's",
        "signed links and operating_reset_at are read against this machine's clock: "
        "set it right (NTP), or ask the portal's admin to",
    )


async def page_mode(visit: Visit) -> Finding:
    # Protocol notes 1.3: the docs page catalog.productImage.list by 50 with `start`
    # ("offset"); the server code answers every image at once and ignores `start` ("source").
    if visit.product_id is None:
        return skip("no product to list")
    product: int | None = visit.product_id
    first = visit.image_ids
    if len(first) < 2:
        product, first = await _product_with_two(visit)
    if product is None:
        looked = min(len(visit.product_ids), PAGE_MODE_PRODUCTS)
        return skip(f"none of the first {looked} product(s) has two images or more")
    envelope = await visit.call(LIST, {"productId": product, "select": ["id"], "start": 1})
    listed = _image_ids(envelope.result)
    if listed[:1] == first[:1]:
        return ok(
            "source: start does not page catalog.productImage.list (every image in one answer)"
        )
    if listed[:1] == first[1:2]:
        return ok("offset: start pages catalog.productImage.list by 50, as the docs say")
    return warn(
        f"product {product}: start=1 listed neither all its images nor all but the first",
        "the images changed while the check ran, or the portal pages in a way not known yet",
    )


async def operating_counters(visit: Visit) -> Finding:
    # limits.md: while the limiter is on, each answer's time block carries `operating` and
    # `operating_reset_at`; self-hosted portals send both, only the first, or neither.
    time = visit.time
    if time is None:
        return skip("no answer carried a time block")
    if time.operating is not None and time.operating_reset_at is not None:
        return ok("operating and operating_reset_at are reported")
    if time.operating is not None:
        return warn(
            "operating is reported without operating_reset_at",
            "when a method's operating time runs out, the client waits by its own reckoning "
            "of the 10-minute window instead of the portal's",
        )
    return warn(
        "no operating counters in the time block (the limiter is off, or not reported)",
        "the client cannot see a method's operating time; should the portal limit it, "
        "OPERATION_TIME_LIMIT answers are waited out as they come",
    )


async def public_files(visit: Visit) -> Finding:
    # The public file check (detailUrl against downloadUrl) comes with the download's via=.
    return skip("not checked by this version")


async def batch(visit: Visit) -> Finding:
    # batch.md: one harmless read inside a batch.
    result = await visit.caller.batch({"time": ("server.time", {})})
    if "time" in result.errors:
        error = result.errors["time"]
        return fail(f"a batch's command failed: {_describe(error)}")
    if "time" not in result.results:
        return fail("the batch answered without its command's result")
    return ok("a batch of one command was answered")


async def write(visit: Visit) -> Finding:
    # A 1x1 PNG added inside a batch (catalog-product-image-add.md, batch.md) and deleted.
    product = visit.write_check
    assert product is not None  # noqa: S101 -- only run with write_check
    name = f"bitrix-images-doctor-{secrets.token_hex(4)}.png"
    params = add_params(product, name, PIXEL, ImageType.MORE_PHOTO)
    in_batch = True
    try:
        result = await visit.caller.batch({"add": (ADD, protocol.http_build_query(params))})
        if "add" in result.errors:
            raise result.errors["add"]
        added = result.results.get("add")
    except BitrixError as error:
        if _code(error) != "ERROR_BATCH_METHOD_NOT_ALLOWED":
            return _refused_add(error, product, name)
        in_batch = False
        try:
            added = (await visit.caller.call(ADD, params, idempotent=False)).result
        except BitrixError as plain:
            return _refused_add(plain, product, name)
    image = _int(added.get("productImage", {}).get("id")) if isinstance(added, dict) else None
    if image is None:
        return fail(
            f"the add on product {product} answered without an image id",
            f"look for {name} on product {product} and delete it",
        )
    try:
        deleted = await visit.caller.call(DELETE, image_params(product, image), idempotent=False)
    except BitrixError as error:
        return fail(
            f"image {image} was added to product {product}, but its delete failed: "
            f"{_describe(error)}",
            f"delete it by hand: bitrix-images delete {product} {image}",
        )
    if deleted.result is not True:
        return fail(
            f"the delete of image {image} answered {deleted.result!r}, not true",
            f"check product {product} and delete image {image} if it is still there",
        )
    if in_batch:
        return ok(f"product {product}: a 1x1 image added inside a batch, then deleted")
    return warn(
        f"product {product}: writes work, but not inside a batch (ERROR_BATCH_METHOD_NOT_ALLOWED)",
        "upload then sends one add per request; --one-per-request spares the refused batches",
    )


#: The checks in order; another is inserted by name where it belongs.
STEPS: Final[tuple[Step, ...]] = (
    Step("connect", (), connect),
    Step("auth", ("connect",), auth),
    Step("scope", ("auth",), scope),
    Step("methods", ("auth",), methods),
    Step("read", ("scope",), read),
    Step("clock", ("auth",), clock_check),
    Step("page_mode", ("read",), page_mode),
    Step("operating_counters", ("auth",), operating_counters),
    Step("public_files", ("auth",), public_files),
    Step("batch", ("auth",), batch),
    Step("write", ("scope",), write, timeout=None),
)


# --- helpers -------------------------------------------------------------------------------


async def _product_with_two(visit: Visit) -> tuple[int | None, tuple[int, ...]]:
    """A product with two or more images among the first few, and its images' ids."""
    others = [p for p in visit.product_ids[:PAGE_MODE_PRODUCTS] if p != visit.product_id]
    if not others:
        return None, ()
    common = list_query(["id"])
    commands = {str(p): list_command(p, common, 0) for p in others}
    result = await visit.caller.batch(commands)
    for product in others:
        ids = _image_ids(result.results.get(str(product)))
        if len(ids) >= 2:
            return product, ids
    return None, ()


def _refused_add(error: BitrixError, product: int, name: str) -> Finding:
    if isinstance(error, OutcomeUnknown):
        return fail(
            f"the answer to the add on product {product} was lost: {_describe(error)}",
            f"look for {name} on product {product} and delete it",
        )
    if isinstance(error, (AccessDenied, AuthError)):
        return fail(
            f"no write access to product {product}: {_describe(error)}",
            "the webhook's user needs the right to edit the catalog's products",
        )
    if isinstance(error, NotFound):
        return fail(f"product {product} was not found: {_describe(error)}")
    return fail(f"the add on product {product} failed: {_describe(error)}")


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
