"""``catalogs``: the portal's product catalogs, with the iblock ids ``--iblock`` takes."""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING

from ...sync.catalogs import CatalogInfo, list_catalogs, with_counts
from ...sync.terminal import printable
from ..options import CatalogsOptions
from ..output import warning
from .jobs import Failed

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = ["catalogs_command"]


async def catalogs_command(client: BitrixClient, options: CatalogsOptions, out: IO[str]) -> int:
    """One line per catalog (``--json``: one object), each with its product count."""
    catalogs = await with_counts(client, await list_catalogs(client))
    if options.json:
        out.write(json.dumps({"catalogs": [_json(c) for c in catalogs]}, ensure_ascii=False))
        out.write("\n")
    else:
        if not catalogs:
            print("no product catalogs", file=out)
        for catalog in catalogs:
            print(_line(catalog), file=out)
    failed = [c for c in catalogs if c.count_error is not None]
    for catalog in failed:
        warning(f"iblock {catalog.iblock_id}: products not counted: {catalog.count_error}")
    if failed:
        raise Failed(f"{len(failed)} catalogs could not be counted (see the warnings)")
    return 0


def _line(catalog: CatalogInfo) -> str:
    count = "? products" if catalog.products is None else f"{catalog.products} products"
    line = f"iblock {catalog.iblock_id}\t{count}\t{printable(catalog.name)}"
    if catalog.parent_iblock_id is not None:
        line += f"\t(variations of iblock {catalog.parent_iblock_id})"
    return line


def _json(catalog: CatalogInfo) -> dict[str, object]:
    return {
        "id": catalog.id,
        "iblock_id": catalog.iblock_id,
        "name": catalog.name,
        "products": catalog.products,
        "variations_of": catalog.parent_iblock_id,
        "sku_property_id": catalog.sku_property_id,
    }
