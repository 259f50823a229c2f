"""Shared fixtures: an embedded portal on loopback, clients with tiny retry delays, and a
log watch that fails any test whose SDK log records show a secret."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from support import FAST_RETRY, UNLIMITED, secrets_of

import bitrix_images as bx
from bitrix_images.testing import FakePortal


class SecretWatch(logging.Handler):
    """Collects every record the SDK logs, formatted as a user would see it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.secrets: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("bitrix_images.testing"):
            return  # the embedded portal's own logs are the server's, not the SDK's
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)

    def leaks(self) -> list[str]:
        return [line for line in self.lines if any(s in line for s in self.secrets if s)]


@pytest.fixture(autouse=True)
def secret_watch() -> Iterator[SecretWatch]:
    """Log the SDK at DEBUG during every test and fail the test if a secret shows up."""
    watch = SecretWatch()
    logger = logging.getLogger("bitrix_images")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(old_level)
    leaks = watch.leaks()
    assert not leaks, f"secrets in log records: {leaks[:3]}"


@pytest.fixture(name="portal")
async def _portal(secret_watch: SecretWatch) -> AsyncIterator[FakePortal]:
    async with FakePortal(products=20, images_per_product=3, rate=None) as portal:
        secret_watch.secrets |= secrets_of(portal)
        yield portal


@pytest.fixture(name="client")
async def _client(portal: FakePortal) -> AsyncIterator[bx.BitrixClient]:
    async with bx.BitrixClient.from_webhook(
        portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
    ) as client:
        yield client
