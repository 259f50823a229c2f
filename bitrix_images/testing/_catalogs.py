"""The portal's product catalogs (``catalog.catalog.list``) and which products each holds.

A portal has one or more catalogs, each an information block (iblock) of products; a catalog
of variations (offers, SKUs) is tied to its parent catalog by ``productIblockId`` and
``skuPropertyId`` (DOCS api-reference/catalog/data-types.md §catalog_catalog). The products
themselves (and their images) live in one :class:`~._catalog.Catalog`; a
:class:`PortalCatalog` names the products of its iblock, or takes the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ._catalog import Catalog

__all__ = ["CatalogIndex", "PortalCatalog", "catalog_json"]


def _ids(value: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen
class PortalCatalog:
    """One catalog of the portal: its iblock, name and (for variations) its parent.

    ``products`` are the ids (of ``portal.catalog``) that live in this catalog; None takes
    every product no other catalog names. ``parent_iblock_id`` and ``sku_property_id`` make
    it a catalog of variations (``productIblockId``, ``skuPropertyId``).
    """

    iblock_id: int
    name: str = "Product catalog"
    products: tuple[int, ...] | None = attrs.field(default=None, converter=_ids)
    parent_iblock_id: int | None = None
    sku_property_id: int | None = None


def catalog_json(catalog: PortalCatalog) -> dict[str, object]:
    """One ``catalog_catalog`` object, keys as the docs' example answer orders them (DOCS
    api-reference/catalog/catalog/catalog-catalog-list.md); a CRM catalog's id is its iblock
    id and its iblock type the constant ``CRM_PRODUCT_CATALOG`` (DOCS data-types.md)."""
    return {
        "iblockId": catalog.iblock_id,
        "iblockTypeId": "CRM_PRODUCT_CATALOG",
        "id": catalog.iblock_id,
        "lid": "s1",
        "name": catalog.name,
        "productIblockId": catalog.parent_iblock_id,
        "skuPropertyId": catalog.sku_property_id,
        "subscription": "N",
        "vatId": None,
    }


class CatalogIndex:
    """Which products each catalog holds, over the one product store."""

    def __init__(self, catalog: Catalog, catalogs: Sequence[PortalCatalog]) -> None:
        iblocks = [c.iblock_id for c in catalogs]
        if not catalogs or len(set(iblocks)) != len(iblocks):
            raise ValueError(f"catalogs need one or more distinct iblock ids, not {iblocks}")
        self.catalog = catalog
        self.catalogs = tuple(catalogs)
        self._claimed = frozenset(pid for c in catalogs for pid in c.products or ())

    def find(self, iblock_id: int) -> PortalCatalog | None:
        return next((c for c in self.catalogs if c.iblock_id == iblock_id), None)

    def product_ids(self, iblock_id: int) -> list[int]:
        """The ids of the products in *iblock_id*, ascending (none for an unknown iblock)."""
        found = self.find(iblock_id)
        if found is None:
            return []
        every = self.catalog.product_ids()
        if found.products is not None:
            return sorted(pid for pid in found.products if self.catalog.has_product(pid))
        if not self._claimed:
            return every
        return [pid for pid in every if pid not in self._claimed]
