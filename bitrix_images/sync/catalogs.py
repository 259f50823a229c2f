"""
The portal's product catalogs: which iblock ids ``--iblock`` takes, and what each holds.

``catalog.catalog.list`` names every catalog (DOCS catalog/catalog/catalog-catalog-list.md:
``id``, ``iblockId``, ``name``); a catalog of variations (offers, SKUs) names its parent in
``productIblockId`` and the property that ties an offer to its product in ``skuPropertyId``
(DOCS catalog/data-types.md). Each catalog's size is one counted ``catalog.product.list``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Final

import attrs

from .._wire.protocol import normalize_code
from .._wire.validate import check_int
from ..exceptions import AccessDenied, BitrixError, MalformedResponse
from .ids import CatalogIds, count_products
from .terminal import PROG, printable, warn

if TYPE_CHECKING:
    from ..client import BitrixClient

__all__ = ["CatalogInfo", "check_catalog", "find_catalog", "list_catalogs", "with_counts"]

METHOD: Final = "catalog.catalog.list"
#: catalog.product.list's answer for a filter.iblockId the portal does not know (DOCS
#: api-reference/catalog/product/catalog-product-list.md, "Iblock Not Found").
IBLOCK_NOT_FOUND: Final = "200040300000"
_SELECT: Final = ("id", "iblockId", "name", "productIblockId", "skuPropertyId")


@attrs.frozen
class CatalogInfo:
    """
    One product catalog of the portal.

    Attributes:
        id: the catalog's id (for a CRM catalog, its iblock id).
        iblock_id: the information block of its products: what ``--iblock`` takes.
        name: its name, as the portal's users wrote it.
        parent_iblock_id: for a catalog of variations (offers), its parent catalog's iblock.
        sku_property_id: for a catalog of variations, the property that ties an offer to
            its product.
        products: the number of products, once counted (``None``: not counted, or the
            portal did not tell).
        count_error: why counting failed, if it did.
    """

    id: int
    iblock_id: int
    name: str
    parent_iblock_id: int | None = None
    sku_property_id: int | None = None
    products: int | None = None
    count_error: BitrixError | None = None


async def list_catalogs(client: BitrixClient) -> list[CatalogInfo]:
    """Every product catalog of the portal (``catalog.catalog.list``, all its pages)."""
    found = []
    pages = client.paginate(METHOD, {"select": list(_SELECT)}, key="catalogs")
    async for item in pages:
        found.append(_catalog(item))
    return found


async def with_counts(client: BitrixClient, catalogs: Sequence[CatalogInfo]) -> list[CatalogInfo]:
    """*catalogs* with their product counts, one counted request each; a count that fails
    is kept in ``count_error`` (the others are still counted)."""
    counted = []
    for catalog in catalogs:
        try:
            total = await count_products(client, catalog.iblock_id)
        except BitrixError as error:
            counted.append(attrs.evolve(catalog, count_error=error))
        else:
            counted.append(attrs.evolve(catalog, products=total))
    return counted


async def find_catalog(
    client: BitrixClient, iblock_id: int
) -> tuple[CatalogInfo | None, list[CatalogInfo]]:
    """The catalog of *iblock_id* (``None`` if the portal has none such) and the catalogs of
    its variations."""
    iblock_id = check_int("iblock_id", iblock_id, minimum=1)
    catalogs = await list_catalogs(client)
    found = next((c for c in catalogs if c.iblock_id == iblock_id), None)
    return found, [c for c in catalogs if c.parent_iblock_id == iblock_id]


async def check_catalog(client: BitrixClient, ids: CatalogIds, warnings: IO[str]) -> None:
    """
    Before a job walks *ids* (``mirror --iblock N``): N must be a catalog of the portal, in
    ``catalog.catalog.list`` and not refused as "Iblock Not Found" by the count, else a
    ``ValueError`` naming the ``catalogs`` command, before any product is asked for. An
    empty catalog is a warning on *warnings*, and a catalog with variations gets a line
    there saying how to mirror those too. The count made here is the walk's own.
    """
    try:
        found, variations = await find_catalog(client, ids.iblock_id)
    except AccessDenied as error:
        # A user may read products without the right to the catalogs' settings: the walk can
        # still run, and the count below still tells a missing iblock ("Iblock Not Found").
        warn(
            f"cannot check catalog {ids.iblock_id}: {METHOD} was refused "
            f"({error.description}); walking it anyway",
            warnings,
        )
        found, variations = None, []
    else:
        if found is None:
            raise _no_catalog(ids.iblock_id)
    try:
        total = await ids.count()
    except BitrixError as error:
        if error.code is not None and normalize_code(error.code) == IBLOCK_NOT_FOUND:
            raise _no_catalog(ids.iblock_id) from error
        raise
    if total == 0:
        name = "" if found is None else f" ({found.name})"
        warn(f"catalog {ids.iblock_id}{name} has no products", warnings)
    for offers in variations:
        line = (
            f"{PROG}: catalog {ids.iblock_id} has variations (offers) in catalog "
            f"{offers.iblock_id} ({offers.name}); mirror them too with --iblock {offers.iblock_id}"
        )
        print(printable(line), file=warnings)


def _no_catalog(iblock_id: int) -> ValueError:
    return ValueError(
        f"iblock {iblock_id} is not a product catalog of this portal; `{PROG} catalogs` lists them"
    )


def _catalog(item: object) -> CatalogInfo:
    if not isinstance(item, Mapping):
        raise MalformedResponse("a catalog is not an object", method=METHOD)
    iblock_id = _id(item.get("iblockId"))
    if iblock_id is None:
        raise MalformedResponse("a catalog without its iblockId", method=METHOD)
    name = item.get("name")
    return CatalogInfo(
        id=_id(item.get("id")) or iblock_id,
        iblock_id=iblock_id,
        name=name if isinstance(name, str) else "",
        parent_iblock_id=_id(item.get("productIblockId")),
        sku_property_id=_id(item.get("skuPropertyId")),
    )


def _id(value: object) -> int | None:
    # Ids come as numbers or numeric strings; an absent one is null (or 0 on some portals).
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if value not in (None, 0, "", "0"):
        raise MalformedResponse(f"a catalog id is not a positive integer: {value!r}", method=METHOD)
    return None
