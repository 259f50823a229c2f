"""
``PublicLinks``: how a client fetches an image's file, ``via`` its public link or REST.

``via="rest"`` GETs the signed ``downloadUrl``: a REST request, paced by the bucket
(``Caller.download``). ``via="public"`` GETs ``detailUrl`` on a session of its own with no
credentials (``_net.public``): a hit on a web server, outside REST, so it books no bucket
slot and no operating time; transient failures (5xx, resets, timeouts) are retried with
the client's backoff, 429 and 503 after the ``Retry-After`` the file host gives. An answer
that is not the complete image is that image's failure.

``via="auto"`` (the default) tries the public link and falls back to REST for an image whose
public answer does not count, and keeps the state of the client: its first image is fetched
both ways and the bytes compared (the downloads wait for that comparison); when they differ,
or the first 3 public fetches in a row are refused (401, 403, an HTML page), the rest goes
through REST, logged once and kept in ``stats.given_up``. ``stats`` counts the files by
route and the fallbacks by reason, for a job's summary.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import attrs
from yarl import URL

from .._net import files as _files
from .._net.files import Spool
from .._net.public import Failed, PublicFetcher
from .._wire import clock
from .._wire.commands import same_origin
from .._wire.public import CLOSED, VIAS, LinkPolicy, LinkRefused
from ..exceptions import AccessDenied, BitrixError, MalformedResponse, NotFound, TransportError
from ..models import ProductImage
from .caller import Caller
from .retry import backoff_delay

__all__ = ["LinkStats", "PublicLinks", "check_via"]

log = logging.getLogger("bitrix_images")

# Public fetches in a row refused as closed (401, 403, HTML) before auto stops trying them.
_CLOSED_IN_A_ROW = 3
_METHOD = "public file"


def check_via(via: object) -> str:
    """``via`` checked: one of ``"auto"``, ``"public"``, ``"rest"``."""
    if not isinstance(via, str) or via not in VIAS:
        raise ValueError(f"via must be one of {', '.join(map(repr, VIAS))}, got {via!r}")
    return via


@attrs.define
class LinkStats:
    """
    The files a client fetched, by route: ``public`` links and ``rest`` downloads;
    ``fallbacks`` counts the images ``auto`` sent to REST, by reason (``"403"``, ``"html"``,
    ``"cut short"``...); ``given_up`` says why ``auto`` stopped trying public links, if it did.
    """

    public: int = 0
    rest: int = 0
    fallbacks: dict[str, int] = attrs.Factory(dict)
    given_up: str | None = None


class PublicLinks:
    """
    The file fetching of one client (see the module's docstring); public links are fetched
    at most *per_host* at once per host, whatever the number of downloads in flight.
    """

    def __init__(self, caller: Caller, policy: LinkPolicy, *, timeout: float, per_host: int = 8):
        self.caller = caller
        self.policy = policy
        self.stats = LinkStats()
        self.fetcher = PublicFetcher(caller.auth.origin, policy, per_host=per_host, timeout=timeout)
        self._checked = False  # the first image's bytes matched both ways
        self._closed_streak = 0
        self._first = asyncio.Lock()

    async def close(self) -> None:
        await self.fetcher.close()

    async def fetch(
        self, image: ProductImage, part: str, target: str, *, via: str, durable: bool
    ) -> str:
        """Fetch *image* to *target* through *part*; return the route it came by."""
        if via == "rest" or (via == "auto" and self.stats.given_up is not None):
            return await self._rest(image, part, target, durable)
        url = image.detail_url
        if via == "public":
            if url is None:
                raise ValueError("the image has no detail_url (was it left out of select?)")
            try:
                spool = await self._public(url, part)
            except Failed as failure:
                raise _error(failure) from None
            return await self._commit(spool, target, durable)
        if url is None:
            return await self._fall_back("no link", image, part, target, durable)
        if not self._checked:
            async with self._first:
                if not self._checked and self.stats.given_up is None:
                    return await self._cross_check(image, part, target, durable)
            if self.stats.given_up is not None:
                return await self._rest(image, part, target, durable)
        try:
            spool = await self._public(url, part)
        except (Failed, LinkRefused) as failure:
            return await self._fall_back(_reason(failure), image, part, target, durable)
        return await self._commit(spool, target, durable)

    async def _cross_check(self, image: ProductImage, part: str, target: str, durable: bool) -> str:
        """The first image under auto: public and REST, bytes compared; the REST copy kept."""
        try:
            public = await self.public_bytes(image, part)
        except (Failed, LinkRefused) as failure:
            reason = _reason(failure)
            self._closed_streak = self._closed_streak + 1 if reason in CLOSED else 0
            if self._closed_streak >= _CLOSED_IN_A_ROW:
                self._give_up(f"the first {_CLOSED_IN_A_ROW} public links were refused ({reason})")
            return await self._fall_back(reason, image, part, target, durable)
        # The REST copy goes through a second temporary file; *part* is the caller's to remove.
        _, other = _files.reserve(target, image)
        try:
            await self._rest(image, other, target, durable)
        finally:
            _files.discard(other)
        _files.discard(part)
        if await asyncio.to_thread(Path(target).read_bytes) == public:
            self._checked = True
        else:
            self._give_up("a public link's bytes differ from the REST download")
        return "rest"

    async def public_bytes(self, image: ProductImage, part: str) -> bytes:
        """
        The bytes of *image*'s public link (it has one), read into memory; retried as a
        download's.

        Raises ``Failed`` or ``LinkRefused`` when the answer does not count; *part* holds
        a spilled answer only while it is read. Not counted in ``stats``.
        """
        url = image.detail_url
        assert url is not None  # noqa: S101 -- the callers check it
        spool = await self._public(url, part)
        try:
            return await asyncio.to_thread(_content, spool)
        finally:
            spool.discard()

    async def rest_bytes(self, image: ProductImage, folder: str) -> bytes:
        """The bytes of *image*'s ``download_url``, fetched into *folder*; not in ``stats``."""
        target, part = _files.reserve(folder, image)
        try:
            await self._download(image, part, target, durable=False)
            return await asyncio.to_thread(Path(target).read_bytes)
        finally:
            _files.discard(part)

    async def _public(self, url: URL, part: str) -> Spool:
        """GET the public link *url* into a spool, retrying what a web server may answer later."""
        policy = self.caller.retry
        attempt = 0
        while True:
            attempt += 1
            spool = Spool(part)
            try:
                await self.fetcher.fetch(url, spool)
            except Failed as failure:
                if not failure.retryable or attempt >= policy.max_attempts:
                    failure.attempts = attempt
                    raise
                wait = failure.wait if failure.wait is not None else backoff_delay(policy, attempt)
                self.caller.stats.retries += 1
                self.caller.stats.retry_wait += wait
                with self.caller.stats.holding():
                    await clock.current().sleep(wait)
                continue
            return spool

    async def _commit(self, spool: Spool, target: str, durable: bool) -> str:
        await self.caller.committer.commit(spool, target, durable=durable)
        self.stats.public += 1
        return "public"

    async def _fall_back(
        self, reason: str, image: ProductImage, part: str, target: str, durable: bool
    ) -> str:
        fallbacks = self.stats.fallbacks
        fallbacks[reason] = fallbacks.get(reason, 0) + 1
        return await self._rest(image, part, target, durable)

    async def _rest(self, image: ProductImage, part: str, target: str, durable: bool) -> str:
        await self._download(image, part, target, durable)
        self.stats.rest += 1
        return "rest"

    async def _download(self, image: ProductImage, part: str, target: str, durable: bool) -> None:
        url = image.download_url
        if url is None:
            raise ValueError("the image has no download_url (was it left out of select?)")
        origin = self.caller.auth.origin
        if not same_origin(url, origin):
            # The signed URL carries the portal's credentials: it goes to the portal only.
            raise ValueError(
                f"refusing to fetch a download_url outside the portal's origin "
                f"({url.scheme}://{url.host}:{url.port} is not {origin})"
            )
        await self.caller.download(url, part, target, durable=durable)

    def _give_up(self, why: str) -> None:
        """Auto stops trying public links for this client, and says so once."""
        self.stats.given_up = why
        # INFO: a job (mirror) warns once on its own terminal; the logger keeps the record.
        log.info("public file links: %s; the rest is fetched through REST", why)


def _reason(failure: Failed | LinkRefused) -> str:
    return failure.reason if isinstance(failure, Failed) else "refused address"


def _content(spool: Spool) -> bytes:
    """All the bytes of a spool: what it spilled to its file, then what it holds."""
    if spool.spilled is None:
        return b"".join(spool.chunks)
    with open(spool.part, "rb") as spilled:
        return spilled.read() + b"".join(spool.chunks)


def _error(failure: Failed) -> BitrixError:
    """The error of an image whose public link did not give it (``via="public"``)."""
    text = f"the public link did not give the image ({failure.reason})"
    kind: type[BitrixError]
    if failure.status in (401, 403):
        kind = AccessDenied
    elif failure.status == 404:
        kind = NotFound
    elif failure.retryable:
        kind = TransportError
    else:
        kind = MalformedResponse
    return kind(text, status=failure.status, method=_METHOD, attempts=failure.attempts)
