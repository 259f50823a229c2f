"""``python -m bitrix_images.testing``: as a real subprocess, and in-process for coverage."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time

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
