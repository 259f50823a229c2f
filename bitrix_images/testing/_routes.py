"""The portal's routes, by path (the web server's view, before PHP):

* ``/rest/...``: REST, see :mod:`._rest`;
* ``/oauth/token/``: the OAuth server's refresh endpoint, see :mod:`._oauth`;
* ``/upload/...``: static files, see :mod:`._files` (also the only route of the storage
  origin when ``files_origin`` is set);
* anything else: nginx's 404 page.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ._files import FileRoutes
from ._http import html_answer, send
from ._oauth import TokenEndpoint
from ._rest import RestRoutes
from ._state import Auth, PortalState

__all__ = ["Routes"]


class Routes:
    """Every route of one portal."""

    def __init__(
        self, state: PortalState, *, sign: Callable[[int, Auth], str], issue: Callable[[], None]
    ) -> None:
        self._state = state
        self.files = FileRoutes(state, sign)
        self.rest = RestRoutes(state, self.files)
        self.token = TokenEndpoint(state, issue)

    async def portal(self, request: web.Request) -> web.StreamResponse:
        """A request to the portal's own origin."""
        path = request.path
        if path.startswith("/upload/"):
            # A hit on the web server's files: counted apart from REST requests.
            return await self.files.serve(request, storage=False)
        counters = self._state.counters
        counters.requests += 1
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        try:
            if path.startswith("/rest/"):
                return await self.rest.handle(request, path[len("/rest/") :])
            if path.rstrip("/") == "/oauth/token":
                return await self.token.handle(request)
            return send(html_answer(404), counters.by_status)
        finally:
            counters.in_flight -= 1

    async def storage(self, request: web.Request) -> web.StreamResponse:
        """A request to the files origin (``files_origin``)."""
        if request.path.startswith("/upload/"):
            return await self.files.serve(request, storage=True)
        self._state.counters.files += 1
        return send(html_answer(404), self._state.counters.files_by_status)
