"""The demo portal of ``bitrix_images mirror --demo``: a seeded catalog, like a real one."""

from __future__ import annotations

from typing import Final

from ._portal import FakePortal

__all__ = ["DEMO_BURST", "DEMO_RATE", "demo_portal"]

# The demo portal keeps a leaky bucket like a real one, only faster, so that the demo shows
# the throttle at work and still ends in seconds.
DEMO_RATE: Final = 200.0
DEMO_BURST: Final = 100


def demo_portal() -> FakePortal:
    """
    The sample catalog of ``mirror --demo`` (not started yet).

    300 products with 3 images, 8 with 12, and one with two files of the same name, as
    real catalogs have: 1 000 small PNG images in all.
    """
    portal = FakePortal(products=300, images_per_product=3, rate=DEMO_RATE, burst=DEMO_BURST)
    for _ in range(8):
        portal.catalog.add_product(images=12)
    twins = portal.catalog.add_product(images=3)
    first = portal.catalog.images(twins)[0]
    portal.catalog.add_image(twins, name=first.name, content=first.content)
    return portal
