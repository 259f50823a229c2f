"""HTTP plumbing of the portal's routes: answers, request parameters, faults on the wire.

An :class:`Answer` is what a route decided (status, body, headers); :func:`send` turns it
into an ``aiohttp`` response, and :func:`finish` applies an injected fault on the way out.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

import attrs
from aiohttp import web

from ._errors import INTERNAL_SERVER_ERROR
from ._faults import Fault
from ._phpquery import insert_pair, parse_str

__all__ = [
    "Answer",
    "abort",
    "early",
    "finish",
    "html_answer",
    "json_answer",
    "read_params",
    "send",
    "send_cut",
    "serve_app",
]

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
_REASONS = {403: "Forbidden", 404: "Not Found", 413: "Request Entity Too Large"}
_REASONS |= {500: "Internal Server Error", 502: "Bad Gateway"}
_REASONS |= {503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


@attrs.frozen
class Answer:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = attrs.field(factory=dict)


def json_answer(status: int, body: object) -> Answer:
    # json_encode: compact, non-ASCII escaped as \uXXXX (PHP's default).
    encoded = json.dumps(body, separators=(",", ":")).encode()
    return Answer(status, encoded, "application/json; charset=utf-8", _REST_HEADERS)


def html_answer(status: int) -> Answer:
    """nginx's own error page for *status* (what the web server answers before PHP runs)."""
    reason = _REASONS.get(status, "Error")
    page = _NGINX_PAGE.format(status=status, reason=reason).encode()
    return Answer(status, page, "text/html; charset=utf-8", {"Server": "nginx"})


def send(answer: Answer, by_status: Counter[int]) -> web.Response:
    by_status[answer.status] += 1
    headers = dict(answer.headers)
    headers["Content-Type"] = answer.content_type
    return web.Response(status=answer.status, body=answer.body, headers=headers)


def abort(request: web.Request) -> web.Response:
    """Close the connection; aiohttp then drops the (unsent) returned response."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=204)


async def send_cut(request: web.Request, answer: Answer) -> web.StreamResponse:
    """All headers and the full Content-Length, half of the body, then close."""
    response = web.StreamResponse(status=answer.status, headers=answer.headers)
    response.content_type = answer.content_type.split(";")[0]
    response.content_length = len(answer.body)
    await response.prepare(request)
    await response.write(answer.body[: len(answer.body) // 2])
    abort(request)
    return response


async def read_params(request: web.Request) -> dict[str, object]:
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


async def finish(
    request: web.Request, answer: Answer, fault: Fault | None, by_status: Counter[int]
) -> web.StreamResponse:
    """Send *answer*, spoiled by a fault that strikes after processing."""
    if fault is None or fault.kind == "delay":
        return send(answer, by_status)
    if fault.kind == "drop":
        return abort(request)
    if fault.kind == "truncated":
        half = answer.body[: len(answer.body) // 2]
        return send(Answer(200, half, answer.content_type, answer.headers), by_status)
    by_status[answer.status] += 1
    return await send_cut(request, answer)


def early(request: web.Request, fault: Fault, by_status: Counter[int]) -> web.StreamResponse:
    """Answer a fault that strikes before processing."""
    if fault.kind == "reset":
        return abort(request)
    if fault.kind == "html":
        return send(html_answer(fault.status or 502), by_status)
    body = fault.body or INTERNAL_SERVER_ERROR
    return send(json_answer(fault.status or 500, body), by_status)


async def serve_app(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve *handler* for every path on *host*:*port* (0: a free port); the runner and the
    bound port."""
    app = web.Application(client_max_size=512 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, int(sock.getsockname()[1])
