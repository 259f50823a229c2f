"""An embedded fake Bitrix24 portal for tests, demos and benchmarks (like moto for AWS).

``FakePortal`` is an ``aiohttp.web`` server on 127.0.0.1 that speaks the Bitrix24 REST wire
protocol for ``catalog.productImage.*``, ``catalog.product.list``, ``catalog.catalog.list``,
``batch`` (with ``$result`` references) and the checks ``scope``, ``method.get``,
``server.time`` and ``app.info``: webhook and OAuth auth (with token refresh), JSON /
PHP-bracket form / query-string bodies, integer business error codes, PHP ``json_encode``
quirks in batch answers, the request-rate leaky bucket, the per-method operating-time limit,
signed ``downloadUrl`` links, public ``detailUrl`` files, and fault injection. It depends
on nothing else in ``bitrix_images``: it behaves like the server, not like our client
expects. The one piece of the SDK here is ``instant_retries()``, the
switch that makes every client's waits instant in your own tests (like stamina's
``set_testing()``); ``demo_portal()`` is the catalog of ``bitrix_images mirror --demo``.

    async with FakePortal(products=10, images_per_product=3) as portal:
        url = portal.webhook_url          # http://127.0.0.1:PORT/rest/1/<code>/
        portal.inject("error", status=503, body=QUERY_LIMIT_EXCEEDED)
        ...
        assert portal.counters.by_status[503] == 1

Run one from the shell with ``python -m bitrix_images.testing --port 0``.
"""

from .._wire.clock import InstantRetries, instant_retries
from ._catalog import Catalog, StoredImage
from ._catalogs import PortalCatalog
from ._demo import DEMO_BURST, DEMO_RATE, demo_portal
from ._errors import (
    EXPIRED_TOKEN,
    INTERNAL_SERVER_ERROR,
    INVALID_CREDENTIALS,
    INVALID_TOKEN,
    METHOD_NOT_FOUND,
    NO_AUTH_FOUND,
    OPERATION_TIME_LIMIT,
    OVERLOAD_LIMIT,
    QUERY_LIMIT_EXCEEDED,
)
from ._faults import FILE_FAULT_KINDS, FileFault, FileFaultKind
from ._portal import FAULT_KINDS, Counters, FakePortal, Fault, FaultKind, ReceivedCall

__all__ = [
    "DEMO_BURST",
    "DEMO_RATE",
    "EXPIRED_TOKEN",
    "FAULT_KINDS",
    "FILE_FAULT_KINDS",
    "INTERNAL_SERVER_ERROR",
    "INVALID_CREDENTIALS",
    "INVALID_TOKEN",
    "METHOD_NOT_FOUND",
    "NO_AUTH_FOUND",
    "OPERATION_TIME_LIMIT",
    "OVERLOAD_LIMIT",
    "QUERY_LIMIT_EXCEEDED",
    "Catalog",
    "Counters",
    "FakePortal",
    "Fault",
    "FaultKind",
    "FileFault",
    "FileFaultKind",
    "InstantRetries",
    "PortalCatalog",
    "ReceivedCall",
    "StoredImage",
    "demo_portal",
    "instant_retries",
]
