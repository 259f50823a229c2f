"""A hostile portal for tests: the embedded portal behind a loopback proxy that lies.

``HostileProxy`` forwards every request to a ``FakePortal`` and hands the answers back with
the portal's origin replaced by its own, so that the client sees one portal. For chosen
image ids it then rewrites the ``downloadUrl``: to another origin (which the client must
refuse to send the signed link to), or to a path the proxy answers with a redirect whose
``Location`` is malformed. Everything else passes through untouched.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import aiohttp
import yarl
from aiohttp import web

from bitrix_images.testing import FakePortal

__all__ = ["FOREIGN_ORIGIN", "MALFORMED_LOCATION", "HostileProxy", "hostile_server"]

FOREIGN_ORIGIN = "https://cdn.other.example"
MALFORMED_LOCATION = "http://[::1"
_HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def hostile_server(handler: Handler) -> AsyncIterator[str]:
    """A loopback server answering every request with *handler*; yields a webhook URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/rest/1/h0stilecode/"
    finally:
        await runner.cleanup()


class HostileProxy:
    """The portal as a hostile one would serve it (start it on the portal's loop)."""

    def __init__(
        self,
        portal: FakePortal,
        *,
        foreign: Collection[int] = (),
        bad_redirect: Collection[int] = (),
    ) -> None:
        self.portal = portal
        self.foreign = set(foreign)
        self.bad_redirect = set(bad_redirect)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return str(self.portal.webhook_url).replace(str(self.portal.origin), self.origin)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/hostile/redirect":
            return web.Response(status=302, headers={"Location": MALFORMED_LOCATION})
        assert self._session is not None
        upstream = yarl.URL(str(self.portal.origin)).join(request.rel_url)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            upstream,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        if answer.content_type == "application/json":
            body = self._rewrite(body)
        return web.Response(status=answer.status, body=body, headers=kept)

    def _rewrite(self, body: bytes) -> bytes:
        try:
            data = json.loads(body)
        except ValueError:
            return body
        data = self._walk(data)
        text = json.dumps(data).replace(str(self.portal.origin), self.origin)
        return text.encode()

    def _walk(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._walk(item) for item in value]
        if not isinstance(value, dict):
            return value
        walked = {key: self._walk(item) for key, item in value.items()}
        url = walked.get("downloadUrl")
        image_id = _int(walked.get("id"))
        if isinstance(url, str) and image_id is not None:
            if image_id in self.foreign:
                walked["downloadUrl"] = url.replace(str(self.portal.origin), FOREIGN_ORIGIN)
            elif image_id in self.bad_redirect:
                walked["downloadUrl"] = f"{self.portal.origin}/hostile/redirect?id={image_id}"
        return walked


def _int(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
