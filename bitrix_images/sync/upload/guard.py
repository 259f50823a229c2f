"""
What keeps one upload from adding an image twice: the folder's lock and journal, the Redis
product locks, and the adds in flight.

The run (``run``) asks; ``Guard`` holds the state: it takes the folder (``journal``), holds
the products across hosts when a coordinator is set, journals each add before it is sent,
settles the adds an earlier run left behind, and on close names the adds still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..._coordinator import RedisDown
from ..._wire import clock
from ..._wire.text import plural
from .journal import Entry, FolderLock, Journal, LockedError
from .plan import Op

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = ["Guard"]

_LOCK_POLL: Final = 0.2


class Guard:
    """The locks, the journal and the adds in flight of one upload run."""

    def __init__(
        self,
        client: BitrixClient,
        src: Path,
        warn: Callable[[str], None],
        *,
        settle_after: float,
        lock_wait: float,
    ) -> None:
        self.client = client
        self.src = src
        self.warn = warn
        self.settle_after = settle_after
        self.lock_wait = lock_wait
        self.portal = str(client.origin.origin())  # the journal's key: one portal's adds
        self.lock: FolderLock | None = None
        self.held: dict[str, str] = {}  # Redis product locks: key -> token
        self.heartbeat: asyncio.Future[None] | None = None
        self.journal: Journal | None = None
        self.sent: dict[tuple[int, str], Op] = {}  # adds sent, outcome not confirmed yet
        self.sent_at: dict[tuple[int, str], float] = {}  # when each of them was sent
        self.lost: set[tuple[int, str]] = set()  # of them, those whose answer was lost
        self.settled: list[Op] = []  # adds whose outcome is known, to drop from the journal

    async def take_folder(self) -> None:
        """The folder's lock (waiting up to ``lock_wait``), then its journal."""
        lock = await asyncio.to_thread(FolderLock, self.src)
        deadline = time.monotonic() + self.lock_wait
        while not lock.try_acquire():
            if time.monotonic() >= deadline:
                holder = lock.holder()
                lock.release()
                raise LockedError(
                    f"another upload of {self.src} is running ({holder}); "
                    f"waited {self.lock_wait:.0f} s"
                )
            await asyncio.sleep(_LOCK_POLL)
        self.lock = lock
        self.journal = await asyncio.to_thread(Journal, self.src)

    async def hold_products(self, product_ids: Iterable[int]) -> None:
        """
        With a coordinator: one upload per portal and product id across hosts, a Redis lock
        per product for the whole run (extended while it runs). Fails closed: a product
        held elsewhere past ``lock_wait``, or a Redis that does not answer, ends the run
        before any request to the portal.
        """
        coordinator = self.client._caller.coordinator
        if coordinator is None:
            return
        origin = self.client.origin
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        token = f"pid {os.getpid()} on {socket.gethostname()}, since {started} ({uuid.uuid4().hex})"
        deadline = time.monotonic() + self.lock_wait
        try:
            for product_id in product_ids:
                key = coordinator.product_lock(origin, "upload", product_id)
                while not await coordinator.try_hold(key, token):
                    if time.monotonic() >= deadline:
                        holder = await coordinator.holder(key) or "another process"
                        raise LockedError(
                            f"product {product_id} is being uploaded by {holder.split(' (')[0]}; "
                            f"waited {self.lock_wait:.0f} s"
                        )
                    await asyncio.sleep(_LOCK_POLL)
                self.held[key] = token
        except RedisDown as down:
            raise LockedError(
                f"Redis did not answer ({down}); the products were not locked"
            ) from None
        self.heartbeat = asyncio.ensure_future(self.keep_held(coordinator.lock_ttl / 4))

    async def keep_held(self, every: float) -> None:
        coordinator = self.client._caller.coordinator
        assert coordinator is not None  # noqa: S101 -- started by hold_products
        while True:
            await asyncio.sleep(every)
            for key, token in self.held.items():
                try:
                    kept = await coordinator.extend_hold(key, token)
                except RedisDown:
                    kept = False
                if not kept:
                    self.warn(f"the lock of {key.rsplit(':', 1)[-1]} was lost (Redis); going on")

    async def release_products(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            await asyncio.gather(self.heartbeat, return_exceptions=True)
        coordinator = self.client._caller.coordinator
        if coordinator is None:
            return
        for key, token in self.held.items():
            with contextlib.suppress(RedisDown):
                await coordinator.release_hold(key, token)
        self.held = {}

    def close(self) -> None:
        """Name the adds still in flight, keep them in the journal, release the folder."""
        if self.sent:
            shown = ", ".join(sorted(op.shown for op in self.sent.values()))
            self.warn(
                f"{plural(len(self.sent), 'add was', 'adds were')} in flight, outcome unknown: "
                f"{shown}; "
                "the next run lists their products before it adds anything"
            )
        if self.journal is not None:
            self.forget_settled()
            self.journal.close()
        if self.lock is not None:
            self.lock.release()

    async def settle(self, product_ids: Collection[int], *, dry_run: bool) -> None:
        """
        Wait until every add an earlier run journalled for this portal is settled: its
        send time plus ``settle_after``; the first round's listing then shows its outcome.
        *product_ids* are the products this run has folders for.
        """
        assert self.journal is not None  # noqa: S101 -- taken in prepare()
        pending = self.journal.pending(self.portal)
        if not pending:
            return
        if dry_run:
            self.warn(
                f"{len(pending)} adds of an earlier run are not settled yet; "
                "the plan may add them again, a real run will not"
            )
            return
        wait = max(entry.sent for entry in pending) + self.settle_after - time.time()
        if wait > 0:
            self.warn(
                f"{len(pending)} adds of an earlier run may still be running on the portal: "
                f"waiting {wait:.0f} s before listing their products"
            )
            await clock.current().sleep(min(wait, self.settle_after))
        # Adds of products no folder names any more cannot be added again by this run.
        for product_id in {entry.product for entry in pending} - set(product_ids):
            self.journal.settle(self.portal, product_id)

    def answer_lost(self, ops: Iterable[Op]) -> None:
        """The answers of the adds among *ops* were lost: they may still be running."""
        self.lost.update((op.product_id, op.file.name) for op in ops if op.file is not None)

    def unsettled(self) -> float:
        """
        Seconds until every add whose answer was lost may show in a listing: its send
        time plus ``settle_after``, the rule the next run keeps for the journal (0 when
        there is none). An add the portal answered, even with an error, has ended.
        """
        sent = [self.sent_at[key] for key in self.lost if key in self.sent_at]
        return max(0.0, max(sent) + self.settle_after - time.time()) if sent else 0.0

    def listed(self, product_id: int) -> None:
        """*product_id* was listed after its adds settled: what it shows is their outcome."""
        if self.journal is None:
            return
        self.journal.settle(self.portal, product_id)
        for key in [key for key in self.sent if key[0] == product_id]:
            del self.sent[key]
            self.sent_at.pop(key, None)
            self.lost.discard(key)

    def forget_settled(self) -> None:
        """Drop the adds whose outcome is known from the journal."""
        if self.journal is None or not self.settled:
            return
        by_product: dict[int, list[str]] = {}
        for op in self.settled:
            assert op.file is not None  # noqa: S101 -- only adds are journalled
            by_product.setdefault(op.product_id, []).append(op.file.name)
        self.settled = []
        for product_id, names in by_product.items():
            self.journal.settle(self.portal, product_id, names)

    def sending(self, ops: Iterable[Op]) -> None:
        """Journal the adds among *ops* before they are sent."""
        adds = [op for op in ops if op.file is not None]
        if not adds or self.journal is None:
            return
        now = time.time()
        entries = []
        for op in adds:
            assert op.file is not None  # noqa: S101 -- filtered above
            entries.append(Entry(self.portal, op.product_id, op.file.name, now))
            self.sent[(op.product_id, op.file.name)] = op
            self.sent_at[(op.product_id, op.file.name)] = now
        # Written and fsynced before the request goes: a kill after this line leaves the
        # entries for the next run to settle.
        self.journal.record(entries)

    def known(self, op: Op) -> None:
        """*op*'s outcome is known: it leaves the adds in flight and the journal."""
        if op.file is None:
            return
        self.sent_at.pop((op.product_id, op.file.name), None)
        self.lost.discard((op.product_id, op.file.name))
        if self.sent.pop((op.product_id, op.file.name), None) is not None:
            self.settled.append(op)
