"""
``Caller``: the requests of one client, from auth to answer.

A call goes ``call`` -> the attempt loop (``attempts.AttemptLoop``: pace, send, retry or
refresh) -> ``_exchange`` (sign, post, decode). ``batch`` and ``download`` take the same
loop with another ``send``. What is decided is decided by pure code: ``_wire.protocol``
decodes and classifies, ``retry`` judges failures, ``_wire.limits`` says how long to wait;
the waiting itself is the ``Pacer``'s, on the clock in force (``_wire.clock``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

import aiohttp
from yarl import URL

from .._coordinator import RedisCoordinator, SharedTokens, oauth_credential, webhook_credential
from .._net.committer import Committer
from .._net.files import Spool
from .._net.transport import Transport
from .._wire import protocol
from .._wire.auth import OAuthAuth, WebhookAuth
from .._wire.limits import RateLimit
from .._wire.protocol import BatchResult, Envelope
from .._wire.stats import ClientStats
from .attempts import AttemptLoop
from .pacer import Pacer
from .refresh import TokenRefresher
from .retry import RetryPolicy

__all__ = ["Caller"]

log = logging.getLogger("bitrix_images")

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class Caller:
    """
    Calls of one client: pace, send, decode, then retry, refresh or return.

    Args:
        auth: where calls go and what they carry.
        rate_limit: the client-side limits.
        retry: how refused or failed calls are retried.
        session: an ``aiohttp.ClientSession`` to borrow (never closed here), or ``None``.
        timeout: seconds one request may take (limits.md: the portal stops at 60).
        max_answer_bytes: the largest answer read into memory (``Transport``).
        coordinator: shares the limits (and OAuth tokens) with other processes, or ``None``.

    Every request, a batch's and a download's included, is paced by ``pacer`` (the leaky
    bucket and the operating-time budget) and retried by ``loop``.
    """

    def __init__(
        self,
        auth: WebhookAuth | OAuthAuth,
        *,
        rate_limit: RateLimit,
        retry: RetryPolicy,
        session: aiohttp.ClientSession | None,
        timeout: float,
        max_answer_bytes: int = protocol.MAX_ANSWER_BYTES,
        coordinator: RedisCoordinator | None = None,
    ) -> None:
        self.auth = auth
        self.rate_limit = rate_limit
        self.retry = retry
        self.stats = ClientStats()
        self.transport = Transport(
            session=session,
            max_in_flight=rate_limit.max_in_flight,
            timeout=timeout,
            stats=self.stats,
            max_answer_bytes=max_answer_bytes,
        )
        self.coordinator = coordinator  # the jobs' cross-host locks use it too
        link = shared_tokens = None
        if coordinator is not None:
            if isinstance(auth, OAuthAuth):
                link = coordinator.link(auth.origin, oauth_credential(auth.client_id))
                shared_tokens = SharedTokens(link, auth.origin, lambda: auth.grantee)
            else:
                link = coordinator.link(auth.origin, webhook_credential(auth.secrets[0]))
        self.pacer = Pacer(rate_limit, self.stats, link=link, hold=timeout)
        self.refresher = (
            TokenRefresher(auth, self.transport, self.stats, shared_tokens)
            if isinstance(auth, OAuthAuth)
            else None
        )
        self.loop = AttemptLoop(self.pacer, retry, self.refresher)
        self.committer = Committer()

    async def close(self) -> None:
        """Close the transport's session if it is ours, and stop the committing thread.

        A token refresh in flight ends first.
        """
        if self.refresher is not None:
            await self.refresher.close()
        try:
            await self.transport.close()
        finally:
            await self.committer.close()

    async def call(
        self, method: str, params: Mapping[str, object], *, idempotent: bool | None = None
    ) -> Envelope:
        """Call *method* with throttling, retries and token refresh; return its envelope."""
        if idempotent is None:
            idempotent = protocol.is_idempotent(method)

        async def send() -> Envelope:
            return await self._exchange(method, params, idempotent=idempotent)

        envelope, reservation = await self.loop.run(
            send, {method: 1}, idempotent=idempotent, label=method
        )
        await self.pacer.finish(reservation, {method: envelope.time}, spent=True)
        return envelope

    async def batch(
        self, commands: Mapping[str, protocol.Command], *, halt: bool = False
    ) -> BatchResult:
        """
        Send one ``batch`` request; return its per-command parts.

        The request is idempotent when every command is, so a lost answer is resent.
        Operating time is booked where the portal reports it, since portals disagree on who
        pays (limits.md: each command, under its method; b24jssdk PR #539: the ``batch``
        method, for the whole request): the envelope's ``time`` under ``batch``, each
        method's last ``result_time`` under that method. The work is reserved under both.
        Failed commands come back in ``errors``; resending them is the caller's, through
        ``loop.attempts`` and ``loop.judge`` like any call (``batch.run_batch`` does it per
        command).
        """
        methods = {key: method for key, (method, _) in commands.items()}
        spends: dict[str, float] = {"batch": len(commands), **Counter(methods.values())}
        idempotent = all(map(protocol.is_idempotent, set(methods.values())))
        params = protocol.encode_batch(commands, halt=halt)

        async def send() -> Envelope:
            return await self._exchange("batch", params, idempotent=idempotent)

        envelope, reservation = await self.loop.run(
            send, spends, idempotent=idempotent, label="batch"
        )
        try:
            result = protocol.decode_batch(envelope.result, methods=methods)
        except BaseException:
            await self.pacer.finish(reservation, {"batch": envelope.time}, spent=True)
            raise
        await self.pacer.finish(reservation, {**result.times, "batch": envelope.time}, spent=True)
        return result

    async def download(self, url: URL, part: str, target: str, *, durable: bool) -> int:
        """
        GET a signed download URL; the bytes end up at *target*, through *part*.

        A download is a REST call (``download``, rest_util.php) so it is paced by the same
        bucket, and it is a read, so lost answers are retried. The file appears at *target*
        only when complete (and, if *durable*, synced to disk). Returns the bytes written.
        """
        headers = {"Accept": "*/*", "Referer": str(self.auth.origin) + "/"}

        async def send() -> Spool:
            spool = Spool(part)
            await self.transport.fetch(url, spool, headers=headers)
            return spool

        spool, reservation = await self.loop.run(
            send, {"download": 1}, idempotent=True, label="download", authorized=False
        )
        # A file carries no time block: the request is booked at what it reserved.
        await self.pacer.finish(reservation, {}, spent=True)
        return await self.committer.commit(spool, target, durable=durable)

    async def _exchange(
        self, method: str, params: Mapping[str, object], *, idempotent: bool
    ) -> Envelope:
        body = protocol.dumps(self.auth.sign(params))
        status, data = await self.transport.post(
            self.auth.endpoint(method),
            method,
            idempotent=idempotent,
            data=body,
            headers=_JSON_HEADERS,
        )
        log.debug("%s: HTTP %d", method, status)
        return protocol.decode(status, data, method=method)
