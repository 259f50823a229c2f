"""``python -m bitrix_images.testing``: as a real subprocess, and in-process for coverage."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from bitrix_images.testing.__main__ import main, parse_args, serve

# A generous limit for a portal to start or stop: its readiness is the URL it prints, and a
# slow or loaded machine is not a bug (a hang is).
PATIENCE = 60.0


async def _spawn(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``python -m bitrix_images.testing`` and wait until it prints its URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bitrix_images.testing",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=PATIENCE)
    except BaseException:
        process.kill()
        await process.communicate()
        raise
    return process, line.decode().strip()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_cli_serves_and_stops_cleanly(stop: signal.Signals) -> None:
    process, url = await _spawn("--port", "0", "--products", "1000", "--images-per-product", "3")
    try:
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/")
        async with (
            aiohttp.ClientSession() as session,
            session.post(url + "catalog.productImage.list.json", json={"productId": 1}) as r,
        ):
            assert r.status == 200
            body = await r.json()
        assert [image["id"] for image in body["result"]["productImages"]] == [1, 2, 3]
        assert body["total"] == 3
        assert set(body["result"]["productImages"][0]) == {
            "id",
            "name",
            "productId",
            "type",
            "createTime",
            "downloadUrl",
            "detailUrl",
        }
    finally:
        process.send_signal(stop)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=PATIENCE)
    assert process.returncode == 0, stderr
    assert b"client_id=local." in stderr


async def test_cli_options_reach_the_portal() -> None:
    process, url = await _spawn(
        "--products",
        "1",
        "--images-per-product",
        "60",
        "--page-mode",
        "offset",
        "--rate",
        "0",
        "--image-size",
        "4096",
        "--operating-cost",
        "1.5",
        "--webhook-code",
        "fixedcode",
    )
    try:
        assert url.endswith("/rest/1/fixedcode/")
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "catalog.productImage.list", json={"productId": 1}) as r:
                body = await r.json()
            assert body["next"] == 50
            assert body["time"]["operating"] == 1.5
            link = body["result"]["productImages"][0]["downloadUrl"]
            async with session.get(link) as r:
                assert abs(len(await r.read()) - 4096) < 16
    finally:
        process.terminate()
        await asyncio.wait_for(process.communicate(), timeout=PATIENCE)
    assert process.returncode == 0


def test_parse_args_defaults() -> None:
    args = parse_args([])
    assert (args.host, args.port, args.products, args.images_per_product) == (
        "127.0.0.1",
        0,
        10,
        3,
    )
    assert (args.rate, args.burst, args.page_mode, args.image_size) == (2.0, 50, "source", None)


async def test_serve_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(parse_args(["--products", "2"]), stop))
    out = ""

    async def until_the_url() -> None:
        nonlocal out
        while not out and not task.done():
            out = capsys.readouterr().out
            await asyncio.sleep(0.01)

    await asyncio.wait_for(until_the_url(), timeout=PATIENCE)
    stop.set()
    await task
    assert out.startswith("http://127.0.0.1:")


def test_main_until_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    before = signal.getsignal(signal.SIGTERM)

    def stop_when_listening() -> None:
        # loop.add_signal_handler replaces the SIGTERM disposition: then killing is safe
        # (a SIGTERM before the portal listens still lets it start, print and stop). Never
        # kill before: the default disposition would end the test run.
        deadline = time.monotonic() + PATIENCE
        while signal.getsignal(signal.SIGTERM) is before:
            if time.monotonic() > deadline:
                return  # main() then never returns: faulthandler_timeout shows where
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=stop_when_listening)
    thread.start()
    try:
        assert main(["--port", "0", "--rate", "0"]) == 0
    finally:
        thread.join()
    assert capsys.readouterr().out.startswith("http://127.0.0.1:")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


async def _serve_until_url(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[str, asyncio.Event, asyncio.Task[None]]:
    """Run serve() in this process; its webhook URL, its stop switch and its task."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(parse_args(argv), stop))
    out = ""
    while not out and not task.done():
        out = capsys.readouterr().out
        await asyncio.sleep(0.01)
    return out.splitlines()[0], stop, task


def test_new_flags_default_to_the_portal_defaults() -> None:
    args = parse_args([])
    assert args.scopes == ("catalog",)
    assert (args.public_files, args.files_origin, args.batch_writes) == (True, None, True)
    assert (args.clock_skew, args.variations, args.iblock_id) == (0.0, 0, 14)
    assert (args.operating_baskets, args.operating_reset_rounding) == ("first-call", "floor")


async def test_serve_passes_every_portal_flag(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        *("--products", "4", "--variations", "2", "--rate", "0"),
        *("--scopes", "catalog, user", "--no-batch-writes", "--clock-skew", "3600"),
        *("--private-files", "--files-origin", "127.0.0.1"),
        *("--operating-baskets", "clock", "--operating-reset-rounding", "ceil"),
        *("--operating-cost", "0.5"),
    ]
    url, stop, task = await asyncio.wait_for(_serve_until_url(capsys, argv), PATIENCE)
    try:
        async with aiohttp.ClientSession() as session:

            async def post(method: str, payload: object) -> dict[str, Any]:
                async with session.post(url + method, json=payload) as response:
                    body: dict[str, Any] = await response.json()
                    return body

            assert (await post("scope", {}))["result"] == ["catalog", "user"]
            catalogs = (await post("catalog.catalog.list", {}))["result"]["catalogs"]
            assert [(c["iblockId"], c["productIblockId"]) for c in catalogs] == [
                (14, None),
                (15, 14),
            ]
            products = await post("catalog.product.list", {"filter": {"iblockId": 15}})
            assert [p["id"] for p in products["result"]["products"]] == [3, 4]
            add = "catalog.productImage.add?fields[productId]=1"
            batch = await post("batch", {"cmd": {"a": add}})
            assert batch["result"]["result_error"]["a"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
            listed = await post("catalog.productImage.list", {"productId": 1})
            # Aligned baskets of 60 s: the oldest leaves on a whole minute.
            assert listed["time"]["operating_reset_at"] % 60 == 0
            detail = listed["result"]["productImages"][0]["detailUrl"]
            assert detail.startswith("http://127.0.0.1:")
            assert not url.startswith(detail[: detail.index("/upload/")] + "/")
            async with session.get(detail) as response:
                assert response.status == 403
            server = datetime.fromisoformat((await post("server.time", {}))["result"])
            # An hour ahead; the margin only absorbs a slow machine, never decides the test.
            assert abs(server.timestamp() - time.time() - 3600) < 600
    finally:
        stop.set()
        await task


async def test_serve_without_catalog_scope(capsys: pytest.CaptureFixture[str]) -> None:
    url, stop, task = await asyncio.wait_for(
        _serve_until_url(capsys, ["--scopes", "user"]), PATIENCE
    )
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url + "catalog.catalog.list", json={}) as response,
        ):
            assert (await response.json())["error"] == "insufficient_scope"
    finally:
        stop.set()
        await task
