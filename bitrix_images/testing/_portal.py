"""FakePortal: an aiohttp.web server speaking the Bitrix24 REST wire protocol.

This module holds the portal itself: its options, lifetime (one site, two with
``files_origin``), addresses, limits, counters, tokens and faults. What it answers, path by
path, is in the routes (:mod:`._routes`: REST dispatch and ``batch``, OAuth, files).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Literal

import yarl
from aiohttp import web

from ._catalog import Catalog
from ._catalogs import CatalogIndex, PortalCatalog
from ._counters import Counters, ReceivedCall
from ._faults import FAULT_KINDS, Fault, FaultKind, FileFault, FileFaultKind
from ._files import content_disposition, download_token
from ._http import serve_app
from ._limits import BasketModel, OperatingLimiter, PortalBucket, ResetRounding
from ._options import RouteOptions
from ._routes import Routes
from ._state import Auth, Identity, PortalState
from ._tokens import TokenStore
from ._view import PortalView

__all__ = [
    "FAULT_KINDS",
    "Counters",
    "FakePortal",
    "Fault",
    "FaultKind",
    "ReceivedCall",
    "content_disposition",
]


def _cost(operating_cost: float | Mapping[str, float]) -> Callable[[str], float]:
    if isinstance(operating_cost, Mapping):
        costs = {k.lower(): float(v) for k, v in operating_cost.items()}
        return lambda method: costs.get(method, 0.0)
    flat = float(operating_cost)
    return lambda method: 0.0 if method == "download" else flat


class FakePortal(PortalView):
    """An embedded Bitrix24 portal for tests, demos and benchmarks (like moto for AWS).

    Use ``async with FakePortal(...) as portal`` or ``await portal.start()`` /
    ``await portal.close()``. Every option is a keyword; the README's "embedded portal"
    section describes each. In short: the catalog (``products`` x ``images_per_product``
    seeded images, ``seed``, ``image_size``, ``iblock_id``, ``catalogs``), ``page_mode``,
    the leaky bucket (``rate``, ``burst``), operating time (``operating_limit``,
    ``operating_window``, ``operating_cost``, ``operating_billing``, ``operating_report``,
    ``operating_baskets``, ``operating_reset_rounding``), what the portal allows
    (``scopes``, ``batch_writes``, ``max_request_body``), its files (``public_files``,
    ``files_origin``), its clock (``clock``, the seam for tests; ``clock_skew``) and
    addresses (``host``, ``port``, ``user_id``, ``webhook_code``).
    """

    def __init__(
        self,
        *,
        products: int = 10,
        images_per_product: int = 3,
        page_mode: Literal["source", "offset"] = "source",
        rate: float | None = 2.0,
        burst: int = 50,
        operating_limit: float | None = 480.0,
        operating_window: float = 600.0,
        operating_cost: float | Mapping[str, float] = 0.0,
        operating_billing: Literal["inner", "batch", "both"] = "inner",
        operating_report: Literal["full", "operating", "none"] = "full",
        operating_baskets: BasketModel = "first-call",
        operating_reset_rounding: ResetRounding = "floor",
        max_request_body: int | None = None,
        image_size: int | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        user_id: int = 1,
        webhook_code: str | None = None,
        iblock_id: int = 14,
        catalogs: Sequence[PortalCatalog] | None = None,
        scopes: Sequence[str] = ("catalog",),
        batch_writes: bool = True,
        public_files: bool = True,
        files_origin: str | None = None,
        clock_skew: float = 0.0,
        record_calls: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = RouteOptions(
            page_mode=page_mode,
            operating_billing=operating_billing,
            operating_report=operating_report,
            operating_baskets=operating_baskets,
            operating_reset_rounding=operating_reset_rounding,
            max_request_body=max_request_body,
            record_calls=record_calls,
            public_files=public_files,
            scopes=scopes,
            clock_skew=clock_skew,
            batch_writes=batch_writes,
        )
        catalog = Catalog(
            products=products,
            images_per_product=images_per_product,
            seed=seed,
            image_size=image_size,
            iblock_id=iblock_id,
        )
        code = webhook_code if webhook_code is not None else secrets.token_hex(8)
        self._state = PortalState(
            options=self.options,
            identity=Identity(
                user_id=user_id,
                webhook_code=code,
                client_id=f"local.{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}",
                client_secret=secrets.token_hex(25),
                member_id=secrets.token_hex(16),
            ),
            catalog=catalog,
            catalogs=CatalogIndex(
                catalog, (PortalCatalog(iblock_id),) if catalogs is None else catalogs
            ),
            clock=clock,
            cost=_cost(operating_cost),
            secret=secrets.token_bytes(32),
            tokens=TokenStore(clock),
            bucket=PortalBucket(rate, burst, clock) if rate is not None else None,
            operating=None
            if operating_limit is None
            else OperatingLimiter(
                operating_limit,
                operating_window,
                clock,
                model=operating_baskets,
                rounding=operating_reset_rounding,
            ),
        )
        self.host = host
        self._port = port
        self._files_host = files_origin
        self._state.origin = yarl.URL.build(scheme="http", host=host, port=port)
        self._routes = Routes(self._state, sign=self._download_token, issue=self._issue_tokens)
        self._runners: list[web.AppRunner] = []

    def _issue_tokens(self) -> None:
        self._state.tokens.issue()

    def _download_token(self, image_id: int, auth: Auth) -> str:
        return download_token(self._state, image_id, auth)

    # -- lifetime -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket(s) and start serving (a second call does nothing)."""
        if self._runners:
            return
        runner, self._port = await serve_app(self._routes.portal, self.host, self._port)
        self._runners.append(runner)
        self._state.origin = yarl.URL.build(scheme="http", host=self.host, port=self._port)
        if self._files_host is not None:
            try:
                runner, port = await serve_app(self._routes.storage, self._files_host, 0)
            except BaseException:
                await self.close()
                raise
            self._runners.append(runner)
            self._state.files_origin = yarl.URL.build(
                scheme="http", host=self._files_host, port=port
            )

    async def close(self) -> None:
        """Stop serving and close every connection (harmless when already closed)."""
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    async def __aenter__(self) -> FakePortal:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- limits and faults -----------------------------------------------------------------

    def reset_limits(self) -> None:
        """Empty the leaky bucket and forget all operating time, as on a fresh portal."""
        if self._state.bucket is not None:
            self._state.bucket.empty()
        if self._state.operating is not None:
            self._state.operating.clear()

    def spend(self, method: str, seconds: float, *, at_next_request: bool = False) -> None:
        """Book *seconds* of *method*'s operating time, as another application using the
        same budget would (the client cannot see it until the portal reports it): now, or
        *at_next_request* of the method, just before it is checked (so that a test does
        not depend on reaching the portal inside the window)."""
        if self._state.operating is None:
            return
        if at_next_request:
            self._state.spend_next[method.lower()] = seconds
        else:
            self._state.operating.book(method.lower(), seconds)

    def inject(
        self,
        kind: FaultKind,
        *,
        times: int = 1,
        method: str | None = None,
        status: int | None = None,
        body: Mapping[str, object] | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Queue a fault for the next ``times`` requests whose outer method matches.

        ``method`` is compared case-insensitively with the outer request's method
        ("batch", "catalog.productimage.add", "download", "oauth.token"); None matches any
        REST request (not the token endpoint). For "command_error" it matches batch
        sub-commands instead. Kinds: "error" (answer ``status``/``body`` unprocessed),
        "html" (an nginx page, default 502), "reset" (close before processing), "drop"
        (process, then close without answering), "delay" (sleep ``delay`` s first),
        "truncated" (process, answer half the JSON), "cut_body" (send all headers and half
        the body, then close), "command_error" (batch sub-commands fail with ``body``).
        """
        inject = self._state.faults.inject
        return inject(kind, times=times, method=method, status=status, body=body, delay=delay)

    def inject_file(
        self, kind: FileFaultKind, *, image_id: int | None = None, times: int | None = None
    ) -> FileFault:
        """Make the public file of *image_id* (None: every file) misbehave ``times`` times
        (None: until :meth:`clear_faults`). Kinds: "forbidden" (nginx's 403 page),
        "not_found" (404), "login_page" (200 with an HTML login form), "cut_short" (the full
        Content-Length, half the bytes, then close), "other_bytes" (200 with another valid
        image), "busy" (503 with ``Retry-After: 1``)."""
        return self._state.faults.inject_file(kind, image_id=image_id, times=times)

    def clear_faults(self) -> None:
        """Forget every queued fault (REST and files)."""
        self._state.faults.clear()
