"""Image names anyone who may edit the catalog can create, over loopback."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

import bitrix_images as bx
from bitrix_images.testing import FakePortal
from bitrix_images.testing._catalog import make_png
from bitrix_images.testing._portal import content_disposition

CONTROL_NAMES = [
    "line\nbreak.png",
    "carriage\rreturn.png",
    "\x1b]0;PWNED-TITLE\x07\x1b[2J.png",
    'quote"back\\slash%41.png',
    "фото\u202egnp.png",
]


@pytest.mark.parametrize("name", CONTROL_NAMES)
async def test_the_portal_serves_any_name(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path, name: str
) -> None:
    content = make_png(10_000, 1, None)
    stored = portal.catalog.add_image(4, name=name, content=content)
    image = await client.images.get(4, stored.id)
    assert image.name == name
    assert image.download_url is not None
    async with (
        aiohttp.ClientSession(headers={"User-Agent": "tests"}) as session,
        session.get(image.download_url) as response,
    ):
        assert response.status == 200
        disposition = response.headers["Content-Disposition"]
        assert await response.read() == content
    assert disposition == content_disposition(name)
    assert response.content_disposition is not None
    assert response.content_disposition.filename == name  # aiohttp reads filename* back


def test_content_disposition() -> None:
    assert content_disposition("photo-1.png") == 'attachment; filename="photo-1.png"'
    assert content_disposition('a\nb".png') == (
        "attachment; filename=\"a_b_.png\"; filename*=UTF-8''a%0Ab%22.png"
    )
