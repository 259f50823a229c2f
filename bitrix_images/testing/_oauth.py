"""The OAuth server's token endpoint, ``/oauth/token/`` (DOCS settings/oauth/auto-renewal.md,
settings/oauth/error-codes.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from aiohttp import web

from ._faults import EARLY_FAULTS
from ._http import Answer, early, finish, json_answer, read_params
from ._state import PortalState
from ._tokens import TOKEN_LIFETIME

__all__ = ["TokenEndpoint"]


def _oauth_error(status: int, error: str, description: str) -> Answer:
    return json_answer(status, {"error": error, "error_description": description})


class TokenEndpoint:
    """The refresh grant: a new pair for the current refresh token and the app's secret."""

    def __init__(self, state: PortalState, issue: Callable[[], None]) -> None:
        self._state = state
        self._issue = issue  # issues a new pair (passed in so a test can watch them)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        counters = self._state.counters
        counters.by_method["oauth.token"] += 1
        params = await read_params(request)
        fault = self._state.faults.take("oauth.token", rest=False)
        if fault is not None and fault.kind in EARLY_FAULTS:
            return early(request, fault, counters.by_status)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.delay)
        return await finish(request, self.refresh(params), fault, counters.by_status)

    def refresh(self, params: Mapping[str, object]) -> Answer:
        state = self._state
        identity, tokens = state.identity, state.tokens
        if params.get("grant_type") != "refresh_token":
            return _oauth_error(400, "invalid_request", "Invalid grant_type")
        if params.get("client_id") != identity.client_id or params.get("client_secret") != (
            identity.client_secret
        ):
            return _oauth_error(401, "invalid_client", "Invalid client")
        other = tokens.user_of_refresh(params.get("refresh_token"))
        if other is not None and not tokens.reject_refresh:
            access, refresh = tokens.issue_for(other)
            user_id: int = other
        elif tokens.reject_refresh or params.get("refresh_token") != tokens.refresh_token:
            return _oauth_error(400, "invalid_grant", "Invalid refresh token")
        else:
            self._issue()
            access, refresh, user_id = tokens.access_token, tokens.refresh_token, identity.user_id
        state.counters.refreshes += 1
        endpoint = str(state.client_endpoint())
        return json_answer(
            200,
            {
                "access_token": access,
                "expires": int(tokens.expires_at(access)),
                "expires_in": TOKEN_LIFETIME,
                "scope": ",".join(state.options.scopes),
                "domain": f"{state.origin.host}:{state.origin.port}",
                "server_endpoint": endpoint,
                "status": "L",
                "client_endpoint": endpoint,
                "member_id": identity.member_id,
                "user_id": user_id,
                "refresh_token": refresh,
            },
        )
