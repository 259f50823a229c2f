"""FakePortal: an aiohttp.web server speaking the Bitrix24 REST wire protocol.

Request path, in the server's order (CORE ``modules/rest/classes/general/rest.php``):
route -> parse params -> injected fault -> leaky bucket -> auth -> operating-time limit ->
method -> envelope. The routes:

* ``/rest/{user}/{code}/{method}[.json][/]`` (webhook) and ``/rest/{method}[.json]`` (OAuth);
  ``method`` may be ``batch`` or ``download`` (the signed ``downloadUrl``);
* ``/oauth/token/`` (the OAuth server's refresh endpoint, DOCS settings/oauth/auto-renewal.md);
* ``/upload/iblock/...`` (the relative ``detailUrl``, served without auth).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Literal
from urllib.parse import quote

import attrs
import yarl
from aiohttp import web

from ._catalog import PORTAL_TZ, Catalog, ImageRecord, image_mime
from ._errors import (
    BATCH_LENGTH_EXCEEDED,
    BATCH_METHOD_NOT_ALLOWED,
    EXPIRED_TOKEN,
    INTERNAL_SERVER_ERROR,
    INVALID_CREDENTIALS,
    INVALID_TOKEN,
    METHOD_NOT_FOUND,
    NO_AUTH_FOUND,
    OPERATION_TIME_LIMIT,
    QUERY_LIMIT_EXCEEDED,
    RestError,
)
from ._limits import LeakyBucket, OperatingLimiter
from ._methods import METHODS, MethodContext, MethodResult
from ._phpquery import insert_pair, parse_str, php_array, php_intval

__all__ = ["FAULT_KINDS", "Counters", "FakePortal", "Fault", "FaultKind", "ReceivedCall"]

FaultKind = Literal[
    "error", "html", "reset", "drop", "delay", "truncated", "cut_body", "command_error"
]
FAULT_KINDS: frozenset[str] = frozenset(
    ("error", "html", "reset", "drop", "delay", "truncated", "cut_body", "command_error")
)
_EARLY_FAULTS = frozenset(("error", "html", "reset"))

# CRestUtil::BATCH_MAX_LENGTH (CORE rest_util.php).
BATCH_MAX_LENGTH = 50
# DOCS settings/oauth/index.md: an access token lives one hour.
TOKEN_LIFETIME = 3600
# Headers of every REST answer (CORE CRestServer::sendHeaders / CRestUtil::sendHeaders).
_REST_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "origin, content-type, accept",
    "X-Content-Type-Options": "nosniff",
}
_NGINX_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_REASONS = {404: "Not Found", 413: "Request Entity Too Large", 500: "Internal Server Error"}
_REASONS |= {502: "Bad Gateway"}
_REASONS |= {503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


@attrs.frozen
class ReceivedCall:
    """One outer REST request as the portal parsed it."""

    http_method: str
    method: str
    params: dict[str, object]


@attrs.define
class Counters:
    """What the portal saw since start (or the last :meth:`reset`)."""

    requests: int = 0
    by_method: Counter[str] = attrs.Factory(Counter)
    commands: Counter[str] = attrs.Factory(Counter)
    by_status: Counter[int] = attrs.Factory(Counter)
    rate_limited: int = 0
    operating_refused: int = 0  # requests and batch commands refused OPERATION_TIME_LIMIT
    in_flight: int = 0
    max_in_flight: int = 0
    refreshes: int = 0
    calls: list[ReceivedCall] = attrs.Factory(list)

    def reset(self) -> None:
        """Zero every counter (``in_flight`` keeps the requests still running)."""
        self.requests = 0
        self.by_method.clear()
        self.commands.clear()
        self.by_status.clear()
        self.rate_limited = 0
        self.operating_refused = 0
        self.max_in_flight = self.in_flight
        self.refreshes = 0
        self.calls.clear()


@attrs.define
class Fault:
    """An injected fault, see :meth:`FakePortal.inject`."""

    kind: FaultKind
    times: int = 1
    method: str | None = None
    status: int | None = None
    body: dict[str, object] | None = None
    delay: float = 0.0

    def matches(self, method: str) -> bool:
        return self.method is None or self.method.lower() == method


@attrs.define
class _Token:
    expires_at: float
    remaining: int | None = None
    expired: bool = False


@attrs.frozen
class _Auth:
    """Who is calling, and what the download signature covers (CRestUtil::getDownloadUrl)."""

    kind: Literal["webhook", "oauth", "bearer"]
    signed: str
    query: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class _Answer:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = attrs.field(factory=dict)


def _json_bytes(body: object) -> bytes:
    # json_encode: compact, non-ASCII escaped as \uXXXX (PHP's default).
    return json.dumps(body, separators=(",", ":")).encode()


def _php_bool(value: object) -> bool:
    """PHP truthiness of a request value ("0" and "" are false, "false" is true)."""
    if isinstance(value, str):
        return value not in ("", "0")
    return bool(value)


def _quote_token(token: str) -> str:
    # Percent-encodes the only reserved characters a download token holds (base64 and "|");
    # much faster than urllib.parse.quote on the hot path of a million links.
    return token.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D").replace("|", "%7C")


def content_disposition(name: str) -> str:
    """
    ``attachment`` with *name*, safe in a header whatever the name holds (RFC 6266).

    The quoted ``filename`` is an ASCII fallback: controls, quotes, backslashes and
    non-ASCII characters become ``_`` (RFC 6266 section 4.3 and RFC 9110's quoted-string);
    ``filename*`` (RFC 8187) carries the real name, percent-encoded, when the two differ. A
    name with a newline or NUL would otherwise break the header, and aiohttp refuses it.
    """
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)
    disposition = f'attachment; filename="{fallback}"'
    if fallback != name:
        disposition += f"; filename*=UTF-8''{quote(name, safe='')}"
    return disposition


def _iso(stamp: float) -> str:
    # date('c') in the portal's zone: second precision with the offset.
    return datetime.fromtimestamp(stamp, PORTAL_TZ).replace(microsecond=0).isoformat()


def _method_name(raw: str) -> str:
    # CRestServer lower-cases the method; ".json" is the default format suffix.
    name = raw.strip().strip("/").lower()
    return name.removesuffix(".json")


class FakePortal:
    """An embedded Bitrix24 portal for tests, demos and benchmarks (like moto for AWS).

    Use ``async with FakePortal(...) as portal`` or ``await portal.start()`` /
    ``await portal.close()``.

    Options: ``products`` x ``images_per_product`` seeded images (virtual, deterministic for
    a ``seed``; ids 1..N, the first of each product a DETAIL_PICTURE); ``page_mode``
    "source" (every image in one answer, as the server code does) or "offset" (50 per page
    with ``next``, as the docs describe); ``rate``/``burst`` the leaky bucket (None: off);
    ``operating_limit``/``operating_window`` the per-method time limit (None: off) and
    ``operating_cost`` the seconds booked per call (a float or ``{method: float}``, never
    slept; ``download`` is billed only when the mapping names it); ``operating_billing`` who
    pays for a batch: "inner" (each command under its method, the outer ``batch`` nothing:
    DOCS limits.md), "batch" (the method ``batch`` the sum, every ``result_time`` carrying
    its figure: b24jssdk PR #539) or "both"; ``operating_report`` what the ``time`` blocks
    say: "full", "operating" (no ``operating_reset_at``) or "none" (b24jssdk issue #459: a
    self-hosted portal's three states; the limit still applies); ``max_request_body``
    refuses a REST request whose body is longer with nginx's 413 page
    (``client_max_body_size``; None: no limit); ``image_size`` pads PNGs to about that many
    bytes; ``record_calls`` keeps ``counters.calls``; ``clock`` drives the limits and token
    expiry in tests.
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
        max_request_body: int | None = None,
        image_size: int | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        user_id: int = 1,
        webhook_code: str | None = None,
        iblock_id: int = 14,
        record_calls: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if page_mode not in ("source", "offset"):
            raise ValueError(f"page_mode must be 'source' or 'offset', not {page_mode!r}")
        if operating_billing not in ("inner", "batch", "both"):
            raise ValueError(
                f"operating_billing must be inner, batch or both: {operating_billing!r}"
            )
        if operating_report not in ("full", "operating", "none"):
            raise ValueError(
                f"operating_report must be full, operating or none: {operating_report!r}"
            )
        self.operating_billing = operating_billing
        self.operating_report = operating_report
        self.catalog = Catalog(
            products=products,
            images_per_product=images_per_product,
            seed=seed,
            image_size=image_size,
            iblock_id=iblock_id,
        )
        self.counters = Counters()
        self.page_mode: Literal["source", "offset"] = page_mode
        self.record_calls = record_calls
        self.max_request_body = max_request_body
        self.host = host
        self.user_id = user_id
        self.webhook_code = webhook_code if webhook_code is not None else secrets.token_hex(8)
        self.client_id = f"local.{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}"
        self.client_secret = secrets.token_hex(25)
        self.member_id = secrets.token_hex(16)
        self.reject_refresh = False
        self._clock = clock
        self._port = port
        self._bucket = LeakyBucket(rate, burst, clock) if rate is not None else None
        self._operating = (
            OperatingLimiter(operating_limit, operating_window, clock)
            if operating_limit is not None
            else None
        )
        self._cost: Callable[[str], float]
        if isinstance(operating_cost, Mapping):
            costs = {k.lower(): float(v) for k, v in operating_cost.items()}
            self._cost = lambda method: costs.get(method, 0.0)
        else:
            flat = float(operating_cost)
            self._cost = lambda method: 0.0 if method == "download" else flat
        self._secret = secrets.token_bytes(32)
        self._tokens: dict[str, _Token] = {}
        self._users = _Users()
        self.access_token = ""
        self.refresh_token = ""
        self._issue_tokens()
        self._faults: list[Fault] = []
        self._runner: web.AppRunner | None = None

    # -- lifetime -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket and start serving (a second call does nothing)."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._port = sock.getsockname()[1]
        self._runner = runner

    async def close(self) -> None:
        """Stop serving and close every connection (harmless when already closed)."""
        runner, self._runner = self._runner, None
        if runner is not None:
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

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def origin(self) -> yarl.URL:
        """``http://127.0.0.1:PORT``"""
        return yarl.URL.build(scheme="http", host=self.host, port=self._port)

    @property
    def webhook_url(self) -> yarl.URL:
        """``http://127.0.0.1:PORT/rest/{user_id}/{code}/``"""
        return self.origin.with_path(f"/rest/{self.user_id}/{self.webhook_code}/")

    @property
    def client_endpoint(self) -> yarl.URL:
        """The OAuth REST base, ``http://127.0.0.1:PORT/rest/``."""
        return self.origin.with_path("/rest/")

    @property
    def oauth_url(self) -> yarl.URL:
        """The token endpoint, ``http://127.0.0.1:PORT/oauth/token/``."""
        return self.origin.with_path("/oauth/token/")

    def reset_limits(self) -> None:
        """Empty the leaky bucket and forget all operating time, as on a fresh portal."""
        if self._bucket is not None:
            self._bucket.empty()
        if self._operating is not None:
            self._operating.clear()

    def spend(self, method: str, seconds: float) -> None:
        """Book *seconds* of *method*'s operating time, as another application using the
        same budget would (the client cannot see it until the portal reports it)."""
        if self._operating is not None:
            self._operating.book(method.lower(), seconds)

    # -- OAuth tokens -----------------------------------------------------------------------

    def _issue_tokens(self) -> None:
        self.access_token = secrets.token_hex(32)
        self.refresh_token = secrets.token_hex(32)
        self._tokens[self.access_token] = _Token(expires_at=self._clock() + TOKEN_LIFETIME)

    def expire_access_token(self) -> None:
        """From now on the current access token answers 401 ``expired_token``."""
        self._tokens[self.access_token].expired = True

    def expire_token_after(self, requests: int | None = None, seconds: float | None = None) -> None:
        """Expire the current access token after ``requests`` more REST requests that use
        it, or ``seconds`` from now (whichever comes first)."""
        token = self._tokens[self.access_token]
        if requests is not None:
            token.remaining = requests
        if seconds is not None:
            token.expires_at = self._clock() + seconds

    def _check_token(self, value: str) -> None:
        token = self._tokens.get(value)
        if token is None:
            raise RestError.from_body(401, INVALID_TOKEN)
        if token.remaining is not None:
            if token.remaining <= 0:
                token.expired = True
            token.remaining -= 1
        if token.expired or self._clock() >= token.expires_at:
            raise RestError.from_body(401, EXPIRED_TOKEN)

    # -- faults ---------------------------------------------------------------------------

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
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        if kind == "error" and (status is None or body is None):
            raise ValueError("an 'error' fault needs status and body")
        fault = Fault(
            kind=kind,
            times=times,
            method=method.lower() if method is not None else None,
            status=status,
            body=dict(body) if body is not None else None,
            delay=delay,
        )
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Forget every queued fault."""
        self._faults.clear()

    def _take_fault(
        self, method: str, *, commands: bool = False, rest: bool = True
    ) -> Fault | None:
        for fault in self._faults:
            if (fault.kind == "command_error") != commands:
                continue
            if fault.method is None and not rest:
                continue
            if fault.matches(method):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # -- HTTP plumbing ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        counters = self.counters
        counters.requests += 1
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        try:
            path = request.path
            if path.startswith("/rest/"):
                return await self._rest(request, path[len("/rest/") :])
            if path.rstrip("/") == "/oauth/token":
                return await self._token_endpoint(request)
            if path.startswith("/upload/iblock/"):
                return self._send(self._detail(path))
            return self._send(self._html(404))
        finally:
            counters.in_flight -= 1

    def _send(self, answer: _Answer) -> web.Response:
        self.counters.by_status[answer.status] += 1
        headers = dict(answer.headers)
        headers["Content-Type"] = answer.content_type
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    @staticmethod
    def _json(status: int, body: object) -> _Answer:
        return _Answer(status, _json_bytes(body), "application/json; charset=utf-8", _REST_HEADERS)

    @staticmethod
    def _html(status: int) -> _Answer:
        reason = _REASONS.get(status, "Error")
        page = _NGINX_PAGE.format(status=status, reason=reason).encode()
        return _Answer(status, page, "text/html; charset=utf-8", {"Server": "nginx"})

    @staticmethod
    def _abort(request: web.Request) -> web.Response:
        """Close the connection; aiohttp then drops the (unsent) returned response."""
        transport = request.transport
        if transport is not None:
            transport.close()
        return web.Response(status=204)

    async def _params(self, request: web.Request) -> dict[str, object]:
        """CRestUtil::getRequestData: query merged with the body, body keys winning."""
        params: dict[str, object] = parse_str(request.query_string)
        if not request.body_exists:
            return params
        body: dict[str, object] = {}
        if request.content_type == "multipart/form-data":
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, str):
                    insert_pair(body, key, value)
        else:
            raw = await request.read()
            if request.content_type == "application/json":
                try:
                    decoded = json.loads(raw)
                except ValueError:
                    decoded = {}  # Json::decode errors silently give no params
                if isinstance(decoded, dict):
                    body = decoded
                elif isinstance(decoded, list):
                    body = {str(i): v for i, v in enumerate(decoded)}
            else:
                body = parse_str(raw.decode("utf-8", "replace"))
        params.update(body)  # array_replace($query, $postData)
        return params

    async def _finish(
        self, request: web.Request, answer: _Answer, fault: Fault | None
    ) -> web.StreamResponse:
        if fault is None or fault.kind == "delay":
            return self._send(answer)
        if fault.kind == "drop":
            return self._abort(request)
        if fault.kind == "truncated":
            half = answer.body[: len(answer.body) // 2]
            return self._send(_Answer(200, half, answer.content_type, answer.headers))
        # cut_body: full headers and Content-Length, half of the body, then close.
        self.counters.by_status[answer.status] += 1
        response = web.StreamResponse(status=answer.status, headers=answer.headers)
        response.content_type = answer.content_type.split(";")[0]
        response.content_length = len(answer.body)
        await response.prepare(request)
        await response.write(answer.body[: len(answer.body) // 2])
        self._abort(request)
        return response

    def _early(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "reset":
            return self._abort(request)
        if fault.kind == "html":
            return self._send(self._html(fault.status or 502))
        return self._send(self._json(fault.status or 500, fault.body or INTERNAL_SERVER_ERROR))

    # -- REST -----------------------------------------------------------------------------

    async def _rest(self, request: web.Request, tail: str) -> web.StreamResponse:
        parts = tail.split("/")
        while parts and parts[-1] == "":
            parts.pop()
        webhook: tuple[str, str] | None = None
        if len(parts) >= 2:
            webhook = (parts[0], parts[1])
            method = _method_name("/".join(parts[2:]))
        else:
            method = _method_name(parts[0] if parts else "")
        started = self._clock()
        counters = self.counters
        counters.by_method[method] += 1
        limit = self.max_request_body
        if limit is not None and (request.content_length or 0) > limit:
            # nginx's client_max_body_size: refused before PHP sees it, with its own page.
            return self._send(self._html(413))
        params = await self._params(request)
        if self.record_calls:
            counters.calls.append(ReceivedCall(request.method, method, params))
        fault = self._take_fault(method)
        if fault is not None and fault.kind in _EARLY_FAULTS:
            return self._early(request, fault)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.delay)
        # DOCS limits.md: the bucket is checked on arrival; a batch is one request.
        if self._bucket is not None and not self._bucket.try_acquire():
            counters.rate_limited += 1
            return await self._finish(request, self._json(503, QUERY_LIMIT_EXCEEDED), fault)
        try:
            auth = self._authenticate(request, webhook, params)
            if method == "download":
                self._check_operating(method)
                answer = self._download(auth, params)
                if self._operating is not None:
                    self._operating.book(method, self._cost(method))
            elif method == "batch":
                answer = self._json(200, self._batch(auth, params, started))
            else:
                result, block = self._execute(auth, method, params, started)
                answer = self._json(200, self._envelope(result, block))
        except RestError as error:
            answer = self._json(error.status, error.body())
        return await self._finish(request, answer, fault)

    def _authenticate(
        self, request: web.Request, webhook: tuple[str, str] | None, params: Mapping[str, object]
    ) -> _Auth:
        if webhook is not None:
            # CORE apauth/auth.php: the user id and code from the path must match a webhook.
            user, code = webhook
            if user != str(self.user_id) or not hmac.compare_digest(code, self.webhook_code):
                raise RestError.from_body(401, INVALID_CREDENTIALS)
            return _Auth("webhook", f"webhook:{user}:{code}")
        # CORE oauth/auth.php getAuthKey: Bearer header first, then `auth`, then
        # `access_token`.
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
            self._check_token(token)
            self._users.ran_as(self, token)
            return _Auth("bearer", f"bearer:{token}")
        for key in ("auth", "access_token"):
            value = params.get(key)
            if isinstance(value, str) and value:
                self._check_token(value)
                self._users.ran_as(self, value)
                return _Auth("oauth", f"oauth:{value}", ((key, value),))
        raise RestError.from_body(401, NO_AUTH_FOUND)

    def _context(self, auth: _Auth) -> MethodContext:
        if auth.kind == "webhook":
            prefix = f"{self.webhook_url}download/?"
        else:
            query = "".join(f"{k}={quote(v, safe='')}&" for k, v in auth.query)
            prefix = f"{self.client_endpoint}download.json?{query}"

        def download_url(record: ImageRecord) -> str:
            return prefix + "token=" + _quote_token(self._download_token(record.id, auth))

        return MethodContext(
            catalog=self.catalog,
            page_mode=self.page_mode,
            download_url=download_url,
            detail_url=self._detail_url,
        )

    def _check_operating(self, method: str) -> None:
        # DOCS limits.md: a method over its limit answers 429 OPERATION_TIME_LIMIT.
        if self._operating is not None and self._operating.blocked(method):
            self.counters.operating_refused += 1
            raise RestError.from_body(429, OPERATION_TIME_LIMIT)

    def _execute(
        self,
        auth: _Auth,
        method: str,
        params: Mapping[str, object],
        started: float,
        *,
        billed: str | None = None,
        tally: list[float] | None = None,
    ) -> tuple[MethodResult, dict[str, object]]:
        """Run *method*; its time is checked and booked under it unless *billed* names
        another method (a batch billed as a whole), whose figure the block then reports.
        The time of a command that ran is added to *tally* (the batch's own bill)."""
        handler = METHODS.get(method)
        if handler is None:
            raise RestError.from_body(404, METHOD_NOT_FOUND)
        operating = self._operating if billed is None else None
        if operating is not None:
            self._check_operating(method)
        tick = time.perf_counter()
        try:
            result = handler(self._context(auth), params)
        finally:
            if tally is not None:
                tally.append(self._cost(method))
            if operating is not None:
                # The time is booked whether the call succeeded or not; it is simulated
                # (operating_cost), never slept.
                operating.book(method, self._cost(method))
        processing = time.perf_counter() - tick
        return result, self._time_block(started, processing, billed or method)

    def _time_block(self, started: float, processing: float, method: str) -> dict[str, object]:
        """The ``time`` block (DOCS api-reference/data-types.md §time, CRestServer)."""
        finish = max(self._clock(), started)
        block: dict[str, object] = {
            "start": started,
            "finish": finish,
            "duration": finish - started,
            "processing": processing,
            "date_start": _iso(started),
            "date_finish": _iso(finish),
        }
        if self._operating is not None and self.operating_report != "none":
            used, reset_at = self._operating.report(method)
            if self.operating_report == "full":
                block["operating_reset_at"] = reset_at
            block["operating"] = used
        return block

    @staticmethod
    def _envelope(result: MethodResult, block: dict[str, object]) -> dict[str, object]:
        # CRestServer::processResponse lifts next/total out of the result.
        body: dict[str, object] = {"result": result.result}
        if result.next is not None:
            body["next"] = result.next
        if result.total is not None:
            body["total"] = result.total
        body["time"] = block
        return body

    def _batch(self, auth: _Auth, params: Mapping[str, object], started: float) -> object:
        """CRestProvider::methodsBatch (CORE-NEW rest_provider.php), DOCS batch.md."""
        raw = params.get("cmd")
        commands: list[tuple[str, object]] = []
        if isinstance(raw, dict):
            commands = [(str(k), v) for k, v in raw.items()]
        elif isinstance(raw, list):
            commands = [(str(i), v) for i, v in enumerate(raw)]
        halt = _php_bool(params.get("halt", False))
        # b24jssdk PR #539: a portal may bill the batch as a whole, under the method `batch`;
        # then it is refused whole, and its commands are not billed one by one.
        whole = self.operating_billing != "inner"
        if whole:
            self._check_operating("batch")
        billed = "batch" if self.operating_billing == "batch" else None
        spent: list[float] = []
        results: dict[str, object] = {}
        errors: dict[str, object] = {}
        totals: dict[str, object] = {}
        nexts: dict[str, object] = {}
        times: dict[str, object] = {}
        for count, (key, call) in enumerate(commands, start=1):
            # The counter grows before the string check: skipped entries count too.
            if count > BATCH_MAX_LENGTH:
                errors[key] = dict(BATCH_LENGTH_EXCEEDED)
                if halt:
                    break
                continue
            if not isinstance(call, str):
                continue
            path, _, query = call.partition("?")
            method = _method_name(path)
            self.counters.commands[method] += 1
            try:
                if method in ("batch", "download"):
                    raise RestError.from_body(405, BATCH_METHOD_NOT_ALLOWED)
                fault = self._take_fault(method, commands=True)
                if fault is not None:
                    raise RestError.from_body(500, fault.body or INTERNAL_SERVER_ERROR)
                result, block = self._execute(
                    auth, method, parse_str(query), self._clock(), billed=billed, tally=spent
                )
            except RestError as error:
                errors[key] = error.body()
                if halt:
                    break
                continue
            results[key] = result.result
            if result.total is not None:
                totals[key] = result.total
            if result.next is not None:
                nexts[key] = result.next
            times[key] = block
        # DOCS limits.md: the outer batch books no operating time but reports the block;
        # b24jssdk PR #539: it books the whole request's time.
        if whole and self._operating is not None:
            self._operating.book("batch", sum(spent))
        outer = self._time_block(started, self._clock() - started, "batch")
        return {
            "result": {
                "result": php_array(results),
                "result_error": php_array(errors),
                "result_total": php_array(totals),
                "result_next": php_array(nexts),
                "result_time": php_array(times),
            },
            "time": outer,
        }

    # -- files ----------------------------------------------------------------------------

    def _mac(self, message: str, size: int = 32) -> str:
        return hashlib.blake2b(message.encode(), key=self._secret, digest_size=size).hexdigest()

    def _download_token(self, image_id: int, auth: _Auth) -> str:
        # CRestUtil::getDownloadUrl: scope|base64(query&_=rand)|signature, the signature
        # covering the method, the scope, the query and the caller's auth.
        query = f"id={image_id}&_={self._mac(f'nonce:{image_id}', 16)}"
        encoded = base64.b64encode(query.encode()).decode()
        return f"catalog|{encoded}|{self._mac(f'download|catalog|{encoded}|{auth.signed}')}"

    def _download(self, auth: _Auth, params: Mapping[str, object]) -> _Answer:
        token = params.get("token")
        parts = token.split("|") if isinstance(token, str) else []
        if len(parts) != 3 or not hmac.compare_digest(
            parts[2], self._mac(f"download|{parts[0]}|{parts[1]}|{auth.signed}")
        ):
            # CRestServer::processTokenCheckCall -> AccessException (403).
            raise RestError(403, "ACCESS_DENIED", "Link check failed")
        query = parse_str(base64.b64decode(parts[1]).decode())
        record = self.catalog.find(php_intval(query.get("id")))
        if record is None:
            raise RestError(404, "ERROR_NOT_FOUND", "File not found")  # [UNCONFIRMED] text
        return self._file(record)

    def _file(self, record: ImageRecord) -> _Answer:
        content = self.catalog.content(record)
        return _Answer(
            200,
            content,
            image_mime(content) or "application/octet-stream",
            {"Content-Disposition": content_disposition(record.name)},
        )

    def _detail_dirs(self, image_id: int) -> tuple[str, str]:
        mac = self._mac(f"detail:{image_id}", 10)
        return mac[:3], f"{mac[3:19]}{image_id:016x}"

    def _detail_url(self, record: ImageRecord) -> str:
        # CFile::GetFileSRC: a portal-relative /upload/iblock/<3>/<32>/<name> path.
        outer, inner = self._detail_dirs(record.id)
        return f"/upload/iblock/{outer}/{inner}/{quote(record.name)}"

    def _detail(self, path: str) -> _Answer:
        parts = path.split("/")  # "", "upload", "iblock", dir, key, name
        if len(parts) == 6 and len(parts[4]) == 32:
            try:
                image_id = int(parts[4][16:], 16)
            except ValueError:
                image_id = 0
            record = self.catalog.find(image_id)
            if (
                record is not None
                and self._detail_dirs(image_id) == (parts[3], parts[4])
                and record.name == parts[5]
            ):
                return self._file(record)
        return self._html(404)

    # -- OAuth server -----------------------------------------------------------------------

    async def _token_endpoint(self, request: web.Request) -> web.StreamResponse:
        self.counters.by_method["oauth.token"] += 1
        params = await self._params(request)
        fault = self._take_fault("oauth.token", rest=False)
        if fault is not None and fault.kind in _EARLY_FAULTS:
            return self._early(request, fault)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.delay)
        return await self._finish(request, self._refresh(params), fault)

    def _refresh(self, params: Mapping[str, object]) -> _Answer:
        """DOCS settings/oauth/auto-renewal.md and settings/oauth/error-codes.md."""
        if params.get("grant_type") != "refresh_token":
            return self._json(
                400, {"error": "invalid_request", "error_description": "Invalid grant_type"}
            )
        if params.get("client_id") != self.client_id or params.get("client_secret") != (
            self.client_secret
        ):
            return self._json(
                401, {"error": "invalid_client", "error_description": "Invalid client"}
            )
        other = self._users.refresh(self, params)
        if other is not None:
            return other
        if self.reject_refresh or params.get("refresh_token") != self.refresh_token:
            return self._json(
                400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}
            )
        self._issue_tokens()
        self.counters.refreshes += 1
        expires = int(self._tokens[self.access_token].expires_at)
        return self._json(
            200,
            {
                "access_token": self.access_token,
                "expires": expires,
                "expires_in": TOKEN_LIFETIME,
                "scope": "catalog",
                "domain": f"{self.host}:{self._port}",
                "server_endpoint": str(self.client_endpoint),
                "status": "L",
                "client_endpoint": str(self.client_endpoint),
                "member_id": self.member_id,
                "user_id": self.user_id,
                "refresh_token": self.refresh_token,
            },
        )

    # -- several users of the OAuth application (the pair above is user_id's) ---------------

    def authorize(self, user_id: int | None = None) -> tuple[str, str]:
        """
        Authorise the application for *user_id* (the portal's own user by default) anew and
        return the new ``(access_token, refresh_token)``; that user's previous refresh token
        stops working, as when the application is installed or opened again.
        """
        if user_id is None or user_id == self.user_id:
            self._issue_tokens()
            return self.access_token, self.refresh_token
        return self._users.issue(self, user_id)

    @property
    def requests_by_user(self) -> Counter[int]:
        """The OAuth REST requests that ran, by the user whose access token they carried."""
        return self._users.requests

    def expire(self, access_token: str) -> None:
        """From now on *access_token* (any user's) answers 401 ``expired_token``."""
        self._tokens[access_token].expired = True


class _Users:
    """The pairs of users other than the portal's own, and whose each request ran as."""

    def __init__(self) -> None:
        self.requests: Counter[int] = Counter()
        self._owners: dict[str, int] = {}  # access token -> user id
        self._refresh: dict[int, str] = {}  # user id -> that user's current refresh token

    def issue(self, portal: FakePortal, user_id: int) -> tuple[str, str]:
        access, refresh = secrets.token_hex(32), secrets.token_hex(32)
        portal._tokens[access] = _Token(expires_at=portal._clock() + TOKEN_LIFETIME)
        self._owners[access] = user_id
        self._refresh[user_id] = refresh
        return access, refresh

    def ran_as(self, portal: FakePortal, access_token: str) -> None:
        self.requests[self._owners.get(access_token, portal.user_id)] += 1

    def refresh(self, portal: FakePortal, params: Mapping[str, object]) -> _Answer | None:
        """Another user's refresh (client already checked), or ``None`` for the portal's."""
        token = params.get("refresh_token")
        user = next((u for u, r in self._refresh.items() if r == token), None)
        if user is None or portal.reject_refresh:
            return None
        access, refresh = self.issue(portal, user)
        portal.counters.refreshes += 1
        return portal._json(
            200,
            {
                "access_token": access,
                "expires": int(portal._tokens[access].expires_at),
                "expires_in": TOKEN_LIFETIME,
                "client_endpoint": str(portal.client_endpoint),
                "member_id": portal.member_id,
                "user_id": user,
                "refresh_token": refresh,
            },
        )
