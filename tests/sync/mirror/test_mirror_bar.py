"""The mirror's bar counts images: it moves with every file, grows as products are listed,
and shows a percentage and an ETA over images once the listing has ended."""

from __future__ import annotations

import io
from pathlib import Path

from support import Terminal, webhook_client

import bitrix_images as bx
from bitrix_images.sync.progress import Progress
from bitrix_images.testing import FakePortal


def frames(screen: Terminal) -> list[str]:
    return [frame for frame in screen.getvalue().split("\r") if frame.strip()]


def test_the_bar_grows_with_the_listing_then_shows_an_eta() -> None:
    screen = Terminal()
    bar = Progress(screen, screen, per_image=True)
    bar.set_total(3)
    bar.product_done()
    bar.images_listed(4)
    bar.add_download(100, 1, "a.png", 5)
    bar.images_listed(0)  # a product with no images changes nothing
    listing = screen.getvalue()
    bar.product_done()
    bar.images_listed(2)
    bar.skip(1, "b.png", 6)
    bar.fail(1, "c.png", 7, "refused")
    bar.listing_done()
    bar.add_download(100, 1, "a.png", 5)
    bar.close()
    shown = screen.getvalue()
    assert "images listed so far" in listing
    assert "%" not in listing  # no percentage while the length may still grow
    assert "4/6 images" in shown
    assert "67%" in shown
    assert "2/3 products" in shown
    assert "<" in frames(screen)[-1]  # elapsed<remaining: an ETA over images


def test_no_bar_when_no_terminal() -> None:
    bar = Progress(None, io.StringIO(), per_image=True)
    bar.images_listed(3)
    bar.add_download(1, 1, "a.png", 5)
    bar.listing_done()
    bar.close()
    assert bar.downloaded == 1


async def test_one_product_of_many_images_moves_the_bar_per_file(tmp_path: Path) -> None:
    screen = Terminal()
    async with FakePortal(products=1, images_per_product=40, rate=None) as portal:
        async with webhook_client(portal) as client:
            result = await bx.mirror(client, [1], tmp_path, progress=screen, concurrency=1)
    assert result.downloaded == 40
    shown = frames(screen)
    assert "100%" in shown[-1]
    assert "40/40 images" in shown[-1]
    assert "1/1 products" in shown[-1]
