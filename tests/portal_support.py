"""Helpers shared by the embedded-portal tests (real loopback HTTP, no mocks)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import yarl

__all__ = ["FakeClock", "call", "get", "post_form"]


class FakeClock:
    """A settable clock for the portal's limits and token expiry."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _decode(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    text = await response.text()
    return response.status, json.loads(text)


async def call(
    session: aiohttp.ClientSession, url: yarl.URL | str, payload: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    """POST ``payload`` as JSON; return (status, decoded body)."""
    async with session.post(url, json=payload if payload is not None else {}, **kwargs) as r:
        return await _decode(r)


async def post_form(
    session: aiohttp.ClientSession, url: yarl.URL | str, body: str, **kwargs: Any
) -> tuple[int, Any]:
    """POST a raw ``application/x-www-form-urlencoded`` body."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with session.post(url, data=body.encode(), headers=headers, **kwargs) as r:
        return await _decode(r)


async def get(
    session: aiohttp.ClientSession, url: yarl.URL | str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as r:
        return await _decode(r)
