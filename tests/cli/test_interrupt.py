"""SIGINT and SIGTERM stop the command line cleanly: real subprocesses, real signals, the
embedded portal on loopback. A token refresh in flight completes and is saved first."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ThreadPortal

from bitrix_images.cli.interrupt import Interrupted, run_interruptible

# Generous: these wait for events, they never time anything.
PATIENCE = 60.0


@pytest.fixture
def slow_portal() -> Iterator[ThreadPortal]:
    portal = ThreadPortal(products=20, images_per_product=3)
    yield portal
    portal.close()


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


def start_cli(*argv: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 -- our own interpreter and module
        [sys.executable, "-m", "bitrix_images", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def oauth_variables(served: ThreadPortal) -> dict[str, str]:
    portal = served.portal
    return {
        "BITRIX_CLIENT_ENDPOINT": str(portal.client_endpoint),
        "BITRIX_ACCESS_TOKEN": portal.access_token,
        "BITRIX_REFRESH_TOKEN": portal.refresh_token,
        "BITRIX_CLIENT_ID": portal.client_id,
        "BITRIX_CLIENT_SECRET": portal.client_secret,
        "BITRIX_OAUTH_URL": str(portal.oauth_url),
    }


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_refresh_in_flight_is_saved_before_exit(
    slow_portal: ThreadPortal, tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    portal = slow_portal.portal
    env = oauth_variables(slow_portal)
    slow_portal.call(portal.expire_access_token)
    # The token server answers after a while: the signal arrives while the refresh is out.
    slow_portal.call(portal.inject, "delay", method="oauth.token", delay=1.0)
    tokens = tmp_path / "tokens.json"
    ids = [f"--product={n}" for n in range(1, 21)]
    # One request a second: the mirror is still running whenever the signal comes.
    process = start_cli(
        "--token-file", str(tokens), "--rate", "1", "--burst", "1",
        "mirror", str(tmp_path / "out"), *ids, env=env,
    )  # fmt: skip
    try:
        wait_until(lambda: portal.counters.by_method["oauth.token"] >= 1, "the refresh")
        process.send_signal(signum)
        _, err = process.communicate(timeout=PATIENCE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == status, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert portal.counters.refreshes == 1
    saved = json.loads(tokens.read_text())
    assert (saved["access_token"], saved["refresh_token"]) == (
        portal.access_token,
        portal.refresh_token,
    )
    assert portal.refresh_token not in err


async def test_run_interruptible_passes_results_and_errors_through() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def fail() -> None:
        raise LookupError("no")

    assert await run_interruptible(answer()) == 42
    with pytest.raises(LookupError):
        await run_interruptible(fail())


async def test_a_signal_cancels_the_work_and_is_raised_after_it_unwound() -> None:
    unwound = asyncio.Event()
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            unwound.set()

    running = asyncio.ensure_future(run_interruptible(work()))
    await started.wait()
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)  # a second signal changes nothing
    with pytest.raises(Interrupted) as caught:
        await running
    assert unwound.is_set()
    assert (caught.value.signum, caught.value.exit_status) == (signal.SIGTERM, 143)
    assert str(caught.value) == "SIGTERM"


async def test_work_that_returns_after_a_signal_is_still_interrupted() -> None:
    started = asyncio.Event()

    async def summary_on_the_way_out() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "summary"
        return "never"  # pragma: no cover -- the wait above only ends by cancellation

    running = asyncio.ensure_future(run_interruptible(summary_on_the_way_out()))
    await started.wait()
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(Interrupted) as caught:
        await running
    assert caught.value.exit_status == 130


async def test_cancelling_from_outside_is_a_plain_cancellation() -> None:
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.Event().wait()

    running = asyncio.ensure_future(run_interruptible(work()))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    # The handlers are gone: the default disposition is back for SIGTERM.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
