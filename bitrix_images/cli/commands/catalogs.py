"""``catalogs``: the portal's product catalogs, and the check ``mirror --iblock`` makes first."""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING, Final

from ..._wire.protocol import normalize_code
from ...exceptions import BitrixError
from ...sync.catalogs import CatalogInfo, find_catalog, list_catalogs, with_counts
from ...sync.ids import CatalogIds
from ...sync.terminal import PROG, printable
from ..options import CatalogsOptions
from ..output import warning
from .jobs import Failed

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = ["catalogs_command", "check_iblock"]

#: catalog.product.list's answer for a filter.iblockId the portal does not know (DOCS
#: api-reference/catalog/product/catalog-product-list.md, "Iblock Not Found").
IBLOCK_NOT_FOUND: Final = "200040300000"


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


async def check_iblock(client: BitrixClient, ids: CatalogIds, warnings: IO[str]) -> None:
    """
    Before ``mirror --iblock N``: N must be a catalog of the portal (``Failed`` naming
    ``catalogs`` otherwise: not in ``catalog.catalog.list``, or "Iblock Not Found" from the
    count); an empty one is a warning, and a catalog with variations gets
    a line saying how to mirror those too. The count made here is the walk's own.
    """
    found, variations = await find_catalog(client, ids.iblock_id)
    if found is None:
        raise _no_catalog(ids.iblock_id)
    try:
        total = await ids.count()
    except BitrixError as error:
        if error.code is not None and normalize_code(error.code) == IBLOCK_NOT_FOUND:
            raise _no_catalog(ids.iblock_id) from error
        raise
    if total == 0:
        warning(f"catalog {ids.iblock_id} ({found.name}) has no products")
    for offers in variations:
        print(
            printable(
                f"{PROG}: catalog {ids.iblock_id} has variations (offers) in catalog "
                f"{offers.iblock_id} ({offers.name}); mirror them too with "
                f"--iblock {offers.iblock_id}"
            ),
            file=warnings,
        )


def _no_catalog(iblock_id: int) -> Failed:
    return Failed(
        f"iblock {iblock_id} is not a product catalog of this portal; `{PROG} catalogs` lists them"
    )


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
