"""REST dispatch: ``/rest/{user}/{code}/{method}`` (webhook) and ``/rest/{method}`` (OAuth).

Request path, in the server's order (CORE ``modules/rest/classes/general/rest.php``):
route -> parse params -> injected fault -> leaky bucket -> auth -> scope -> operating-time
limit -> method -> envelope. ``method`` may be ``batch`` or ``download`` (the signed
``downloadUrl``).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Mapping
from datetime import datetime

from aiohttp import web

from ._batch import Batch
from ._catalog import PORTAL_TZ
from ._counters import ReceivedCall
from ._errors import (
    INVALID_CREDENTIALS,
    METHOD_NOT_FOUND,
    NO_AUTH_FOUND,
    OPERATION_TIME_LIMIT,
    QUERY_LIMIT_EXCEEDED,
    RestError,
)
from ._faults import EARLY_FAULTS
from ._files import FileRoutes
from ._http import Answer, early, finish, html_answer, json_answer, read_params, send
from ._methods import MethodContext, MethodResult
from ._state import Auth, PortalState
from ._system import ALL_METHODS, method_scope

__all__ = ["RestRoutes", "method_name"]

_SCOPE_TEXT = "The request requires higher privileges than provided by the {} token"


def method_name(raw: str) -> str:
    # CRestServer lower-cases the method; ".json" is the default format suffix.
    name = raw.strip().strip("/").lower()
    return name.removesuffix(".json")


def _iso(stamp: float) -> str:
    # date('c') in the portal's zone: second precision with the offset.
    return datetime.fromtimestamp(stamp, PORTAL_TZ).replace(microsecond=0).isoformat()


def _envelope(result: MethodResult, block: dict[str, object]) -> dict[str, object]:
    # CRestServer::processResponse lifts next/total out of the result.
    body: dict[str, object] = {"result": result.result}
    if result.next is not None:
        body["next"] = result.next
    if result.total is not None:
        body["total"] = result.total
    body["time"] = block
    return body


class RestRoutes:
    """Every REST method of one portal, ``batch`` and ``download`` included."""

    def __init__(self, state: PortalState, files: FileRoutes) -> None:
        self._state = state
        self._files = files
        self._batch = Batch(state, method_name)

    async def handle(self, request: web.Request, tail: str) -> web.StreamResponse:
        state, counters = self._state, self._state.counters
        parts = tail.split("/")
        while parts and parts[-1] == "":
            parts.pop()
        webhook = (parts[0], parts[1]) if len(parts) >= 2 else None
        method = method_name("/".join(parts[2:]) if webhook else (parts[0] if parts else ""))
        started = state.clock()
        counters.by_method[method] += 1
        limit = state.options.max_request_body
        if limit is not None and (request.content_length or 0) > limit:
            # nginx's client_max_body_size: refused before PHP sees it, with its own page.
            return send(html_answer(413), counters.by_status)
        params = await read_params(request)
        if state.options.record_calls:
            counters.calls.append(ReceivedCall(request.method, method, params))
        fault = state.faults.take(method)
        if fault is not None and fault.kind in EARLY_FAULTS:
            return early(request, fault, counters.by_status)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.delay)
        # DOCS limits.md: the bucket is checked on arrival; a batch is one request.
        if state.bucket is not None and not state.bucket.try_acquire():
            counters.rate_limited += 1
            answer = json_answer(503, QUERY_LIMIT_EXCEEDED)
            return await finish(request, answer, fault, counters.by_status)
        try:
            answer = self._answer(request, webhook, method, params, started)
        except RestError as error:
            answer = json_answer(error.status, error.body())
        return await finish(request, answer, fault, counters.by_status)

    def _answer(
        self,
        request: web.Request,
        webhook: tuple[str, str] | None,
        method: str,
        params: Mapping[str, object],
        started: float,
    ) -> Answer:
        auth = self._authenticate(request, webhook, params)
        if method == "download":
            self._check_operating(method)
            answer = self._files.download(auth, params)
            if self._state.operating is not None:
                self._state.operating.book(method, self._state.cost(method))
            return answer
        if method == "batch":
            return json_answer(200, self._run_batch(auth, params, started))
        result, block = self._execute(auth, method, params, started)
        return json_answer(200, _envelope(result, block))

    def _authenticate(
        self, request: web.Request, webhook: tuple[str, str] | None, params: Mapping[str, object]
    ) -> Auth:
        identity, tokens = self._state.identity, self._state.tokens
        if webhook is not None:
            # CORE apauth/auth.php: the user id and code from the path must match a webhook.
            user, code = webhook
            if user != str(identity.user_id) or not hmac.compare_digest(
                code, identity.webhook_code
            ):
                raise RestError.from_body(401, INVALID_CREDENTIALS)
            return Auth("webhook", f"webhook:{user}:{code}")
        # CORE oauth/auth.php getAuthKey: Bearer header first, then `auth`, then
        # `access_token`.
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
            tokens.check(token)
            tokens.ran(token, identity.user_id)
            return Auth("bearer", f"bearer:{token}")
        for key in ("auth", "access_token"):
            value = params.get(key)
            if isinstance(value, str) and value:
                tokens.check(value)
                tokens.ran(value, identity.user_id)
                return Auth("oauth", f"oauth:{value}", ((key, value),))
        raise RestError.from_body(401, NO_AUTH_FOUND)

    def _context(self, auth: Auth) -> MethodContext:
        state = self._state
        return MethodContext(
            catalog=state.catalog,
            catalogs=state.catalogs,
            page_mode=state.options.page_mode,
            download_url=self._files.download_url(auth),
            detail_url=self._files.detail_url,
            scopes=state.options.scopes,
            server_now=state.server_now,
            caller="webhook" if auth.kind == "webhook" else "oauth",
            client_id=state.identity.client_id,
        )

    def _check_operating(self, method: str) -> None:
        # DOCS limits.md: a method over its limit answers 429 OPERATION_TIME_LIMIT.
        operating = self._state.operating
        spent = self._state.spend_next.pop(method, None)
        if operating is not None and spent is not None:
            operating.book(method, spent)
        if operating is not None and operating.blocked(method):
            self._state.counters.operating_refused += 1
            raise RestError.from_body(429, OPERATION_TIME_LIMIT)

    def _check_scope(self, auth: Auth, method: str) -> None:
        # CRestServer: a method of a scope the credential lacks answers insufficient_scope;
        # 401 as OAuthException sends it (the docs' table says 403) [UNCONFIRMED live].
        if method_scope(method) not in (*self._state.options.scopes, "basic"):
            kind = "webhook" if auth.kind == "webhook" else "access"
            raise RestError(401, "insufficient_scope", _SCOPE_TEXT.format(kind))

    def _execute(
        self,
        auth: Auth,
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
        state = self._state
        handler = ALL_METHODS.get(method)
        if handler is None:
            raise RestError.from_body(404, METHOD_NOT_FOUND)
        self._check_scope(auth, method)
        operating = state.operating if billed is None else None
        if operating is not None:
            self._check_operating(method)
        tick = time.perf_counter()
        try:
            result = handler(self._context(auth), params)
        finally:
            if tally is not None:
                tally.append(state.cost(method))
            if operating is not None:
                # The time is booked whether the call succeeded or not; it is simulated
                # (operating_cost), never slept.
                operating.book(method, state.cost(method))
        state.counters.rows_read += result.rows_read
        processing = time.perf_counter() - tick
        return result, self._time_block(started, processing, billed or method)

    def _run_batch(
        self, auth: Auth, params: Mapping[str, object], started: float
    ) -> dict[str, object]:
        # b24jssdk PR #539: a portal may bill the batch as a whole, under the method `batch`;
        # then it is refused whole, and its commands are not billed one by one.
        if self._state.options.operating_billing != "inner":
            self._check_operating("batch")

        def execute(
            method: str, arguments: Mapping[str, object], billed: str | None, spent: list[float]
        ) -> tuple[MethodResult, dict[str, object]]:
            now = self._state.clock()
            return self._execute(auth, method, arguments, now, billed=billed, tally=spent)

        result = self._batch.run(params, execute)
        # DOCS limits.md: the outer batch books no operating time but reports the block.
        outer = self._time_block(started, self._state.clock() - started, "batch")
        return {"result": result, "time": outer}

    def _time_block(self, started: float, processing: float, method: str) -> dict[str, object]:
        """The ``time`` block (DOCS api-reference/data-types.md §time, CRestServer), in the
        portal's own clock (``clock_skew``)."""
        state = self._state
        skew = state.options.clock_skew
        finish_at = max(state.clock(), started)
        block: dict[str, object] = {
            "start": started + skew,
            "finish": finish_at + skew,
            "duration": finish_at - started,
            "processing": processing,
            "date_start": _iso(started + skew),
            "date_finish": _iso(finish_at + skew),
        }
        if state.operating is not None and state.options.operating_report != "none":
            used, reset_at = state.operating.report(method)
            if state.options.operating_report == "full":
                block["operating_reset_at"] = reset_at + round(skew)
            block["operating"] = used
        return block
