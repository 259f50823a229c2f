"""
The portal of one command: where to connect, with which secrets, and the Redis to share
limits through. No secret is ever printed: ``Portal.secrets()`` lists what error lines
must not show.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Final

import attrs
from yarl import URL

from .._coordinator import RedisCoordinator
from .._coordinator import _cli as coordinated
from .._wire.limits import RateLimit
from ..client import DEFAULT_OAUTH_URL, BitrixClient
from ..models import OAuthTokens
from ..sync.terminal import PROG, printable, warn
from . import tokenfile as _tokenfile

__all__ = [
    "OAUTH_ENV",
    "OAUTH_URL_ENV",
    "REDIS_ENV",
    "WEBHOOK_ENV",
    "Portal",
    "PortalOptions",
    "UsageError",
    "coordinator",
    "find_portal",
]

WEBHOOK_ENV: Final = "BITRIX_WEBHOOK_URL"
# The variables of an OAuth application (settings/oauth/index.md), in the order asked for.
OAUTH_ENV: Final = (
    "BITRIX_CLIENT_ENDPOINT",
    "BITRIX_ACCESS_TOKEN",
    "BITRIX_REFRESH_TOKEN",
    "BITRIX_CLIENT_ID",
    "BITRIX_CLIENT_SECRET",
)
OAUTH_URL_ENV: Final = "BITRIX_OAUTH_URL"
REDIS_ENV: Final = "BITRIX_REDIS_URL"


class UsageError(Exception):
    """A command line that cannot run as given (argparse's exit status 2)."""


@attrs.frozen
class PortalOptions:
    """The portal options as given, before and after the subcommand."""

    webhook: str | None = attrs.field(default=None, repr=False)
    token_file: Path | None = None
    allow_insecure: bool = False
    redis: str | None = attrs.field(default=None, repr=False)
    rate: float | None = None
    burst: int | None = None

    def limit(self, concurrency: int = 0) -> RateLimit:
        """The client's rate limit: the options, the defaults, room for *concurrency*."""
        return RateLimit(
            rate=self.rate or 2.0, burst=self.burst or 50, max_in_flight=max(8, concurrency)
        )


@attrs.frozen
class Portal:
    """Where to connect, and the secrets that must never be printed."""

    webhook: str | None = attrs.field(default=None, repr=False)
    oauth: Mapping[str, str] | None = attrs.field(default=None, repr=False)
    token_file: Path | None = None
    allow_insecure: bool = False
    redis: str | None = attrs.field(default=None, repr=False)
    # Where refreshed tokens went instead of the token file (filled in during the run).
    rescued: list[Path] = attrs.field(factory=list, eq=False, repr=False)

    def secrets(self) -> list[str]:
        found: list[str] = []
        if self.redis is not None:
            found += [self.redis, URL(self.redis).password or ""]
        if self.webhook is not None:
            segments = [part for part in self.webhook.split("/") if part]
            # https://<portal>/rest/<user>/<code>/: the code is the secret part.
            found += [self.webhook, *segments[4:]]
        if self.oauth is not None:
            found += [
                self.oauth[name]
                for name in ("BITRIX_ACCESS_TOKEN", "BITRIX_REFRESH_TOKEN", "BITRIX_CLIENT_SECRET")
            ]
        return [secret for secret in found if len(secret) >= 4]

    def client(
        self, rate_limit: RateLimit, coordinator: RedisCoordinator | None = None
    ) -> BitrixClient:
        try:
            return self._client(rate_limit, coordinator)
        except ValueError as error:
            # The library's advice, in the command line's words.
            text = str(error).replace("allow_insecure=True", "--allow-insecure")
            raise ValueError(text) from None

    def _client(self, rate_limit: RateLimit, coordinator: RedisCoordinator | None) -> BitrixClient:
        if self.webhook is not None:
            return BitrixClient.from_webhook(
                self.webhook,
                rate_limit=rate_limit,
                allow_insecure=self.allow_insecure,
                coordinator=coordinator,
            )
        assert self.oauth is not None  # noqa: S101 -- find_portal() sets one of the two
        oauth = self.oauth
        expires = oauth.get("expires_at")
        return BitrixClient.from_oauth(
            oauth["BITRIX_CLIENT_ENDPOINT"],
            access_token=oauth["BITRIX_ACCESS_TOKEN"],
            refresh_token=oauth["BITRIX_REFRESH_TOKEN"],
            client_id=oauth["BITRIX_CLIENT_ID"],
            client_secret=oauth["BITRIX_CLIENT_SECRET"],
            oauth_url=oauth.get(OAUTH_URL_ENV) or DEFAULT_OAUTH_URL,
            expires_at=datetime.fromisoformat(expires) if expires else None,
            on_token_refresh=self._save_tokens,
            rate_limit=rate_limit,
            allow_insecure=self.allow_insecure,
            coordinator=coordinator,
        )

    async def _save_tokens(self, tokens: OAuthTokens) -> None:
        # With --redis the pair lives in Redis; the token file, if any, is only a copy.
        if self.token_file is None and self.redis is None:
            warn(
                "the OAuth tokens were refreshed and the old refresh token no longer works; "
                "pass --token-file FILE to keep the new ones",
                sys.stderr,
            )
            return
        if self.token_file is None:
            return
        written, error = await asyncio.to_thread(_tokenfile.save_tokens, self.token_file, tokens)
        if error is not None:
            self.rescued.append(written)
            # Never dropped: the old refresh token no longer works (settings/oauth/index.md).
            reason = error.strerror or str(error)
            warn(
                f"could not save the refreshed OAuth tokens to {self.token_file} ({reason}); "
                f"they were saved to {written} instead: move that file there, or pass it as "
                "--token-file, before the next run",
                sys.stderr,
            )


def find_portal(options: PortalOptions, env: Mapping[str, str]) -> Portal:
    """The portal from the options and the environment; ``UsageError`` when there is none."""
    redis = options.redis or env.get(REDIS_ENV) or None
    webhook = options.webhook or env.get(WEBHOOK_ENV)
    insecure = options.allow_insecure
    if webhook:
        return Portal(webhook=webhook, allow_insecure=insecure, redis=redis)
    oauth = {name: env[name] for name in (*OAUTH_ENV, OAUTH_URL_ENV) if env.get(name)}
    token_file = options.token_file
    if token_file is not None and token_file.exists():
        oauth.update(_tokenfile.read_tokens(token_file, writer=PROG))
    if not oauth:
        raise UsageError(
            f"no portal: pass --webhook URL, or set {WEBHOOK_ENV}, "
            f"or the OAuth variables {', '.join(OAUTH_ENV)}"
        )
    missing = [name for name in OAUTH_ENV if name not in oauth]
    if missing:
        raise UsageError(f"OAuth needs {', '.join(missing)} as well")
    if token_file is not None:
        # Before any request: a refresh rotates the pair, which must then be saved.
        _tokenfile.check_writable(token_file)
    return Portal(oauth=oauth, token_file=token_file, allow_insecure=insecure, redis=redis)


@contextlib.asynccontextmanager
async def coordinator(url: str | None) -> AsyncIterator[RedisCoordinator | None]:
    """
    A coordinator on the Redis at *url* (closed after), or ``None`` without one.

    A ``--redis`` that cannot be used stops the command before it starts, with status 2,
    as any other unusable option does: running uncoordinated would break what the caller
    asked Redis for (one bucket, one refresh) without anyone noticing.
    """
    if url is None:
        yield None
        return
    try:
        shared = await coordinated.connect(url)
    except coordinated.RedisUnusable as unusable:
        print(f"{PROG}: error: {printable(str(unusable))}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        with coordinated.warnings_to(lambda line: warn(line, sys.stderr)):
            yield shared
    finally:
        await shared.redis.aclose()
