"""
The checks of ``client.doctor()``, each a function of one ``Visit``, and their order.

Each check asks the portal as little as it can (protocol notes 10.3: ``scope``,
``method.get``, ``server.time``, ``catalog.catalog.list`` change nothing) and keeps what it
learned on the ``Visit`` for the checks after it. The reads are here; the checks that fetch
files, send a ``batch`` or write are in ``probes``. ``STEPS`` is the order, and says which
earlier checks each one needs: a check whose needs failed is skipped, not run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

from .._wire import clock
from .._wire.auth import OAuthAuth
from .._wire.commands import ADD, DELETE, FIELDS, GET, LIST, list_command, list_query
from ..exceptions import AccessDenied, BitrixError, TransportError
from .probes import batch, public_files, write
from .visit import (
    Finding,
    Step,
    Visit,
    _code,
    _image_ids,
    _int,
    _ms,
    _rows,
    fail,
    ok,
    run_step,
    skip,
    warn,
)

__all__ = ["STEPS", "Finding", "Step", "Visit", "run_step"]

#: Seconds the ``connect`` check waits for DNS, then for the portal's answer: a dead host
#: is known within these, whatever the client's retry policy.
CONNECT_TIMEOUT: Final = 10.0
#: Past this many seconds between the portal's clock and ours, ``clock`` warns.
CLOCK_SKEW: Final = 60.0
#: The products looked at for one with two or more images (``page_mode``).
PAGE_MODE_PRODUCTS: Final = 20
#: The five methods the SDK uses (api-reference/catalog/product-image/).
IMAGE_METHODS: Final = (LIST, GET, ADD, DELETE, FIELDS)
_CATALOG_RIGHTS: Final = 200040300010  # catalog's "no read access", while scope lists catalog


# --- the reads, in order ------------------------------------------------------------------


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
        images = await visit.call(LIST, {"productId": product})
    except AccessDenied as error:
        if _code(error) != str(_CATALOG_RIGHTS):
            raise
        return fail(
            f"listing the images of product {product} was refused ({_CATALOG_RIGHTS})",
            "the scope lists catalog, but the webhook's user has no right to read the "
            "catalog: grant it in CRM > Catalog > Access permissions",
        )
    visit.product_id = product
    visit.image_rows = tuple(_rows(images.result, "productImages"))
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
    Step("public_files", ("read",), public_files),
    Step("batch", ("auth",), batch),
    Step("write", ("scope",), write, timeout=None),
)


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
