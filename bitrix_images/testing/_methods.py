"""The REST methods of the fake portal, as pure functions of (context, params).

Each handler returns a :class:`MethodResult` (``result`` plus the ``total``/``next`` that the
server lifts to the top level of the envelope) or raises :class:`RestError`. Business
errors of ``catalog.productImage.*`` are HTTP 400 with an *integer* ``error`` code
(CORE ``restmanager.php::createExceptionFromErrors``, ``catalog/lib/controller/errorcode.php``).
"""

from __future__ import annotations

import base64
import binascii
import operator
import re
import secrets
import time
from collections.abc import Callable, Mapping

import attrs

from ._catalog import (
    DETAIL_PICTURE,
    MORE_PHOTO,
    PREVIEW_PICTURE,
    Catalog,
    ImageRecord,
    image_mime,
)
from ._catalogs import CatalogIndex, catalog_json
from ._errors import RestError
from ._phpquery import php_intval, php_values

__all__ = ["METHODS", "PAGE_SIZE", "MethodContext", "MethodResult", "image_json"]

#: IRestService::LIST_LIMIT (CORE rest.php): list methods answer at most 50 items.
PAGE_SIZE = 50

# CORE catalog/lib/controller/errorcode.php
READ_DENIED = 200040300010
MODIFY_DENIED = 200040300020

_INT_TEXT = re.compile(r"^\s*[+-]?[0-9]+\s*$")
_B64_JUNK = re.compile(r"[^A-Za-z0-9+/]")
_ID_FILTER = re.compile(r"^(>=|<=|>|<|=)?id$", re.IGNORECASE)
_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "=": operator.eq,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

# DOCS api-reference/catalog/data-types.md §catalog_product_image (key order as in the
# docs' example answer).
IMAGE_FIELDS = ("createTime", "detailUrl", "downloadUrl", "id", "name", "productId", "type")
_IMAGE_FIELD_BY_NORM = {f.lower(): f for f in IMAGE_FIELDS} | {
    "create_time": "createTime",
    "detail_url": "detailUrl",
    "download_url": "downloadUrl",
    "product_id": "productId",
}
_PRODUCT_FIELDS = ("id", "iblockId", "name")


@attrs.frozen
class MethodContext:
    """What a handler needs besides its params: state and how to spell URLs for this caller."""

    catalog: Catalog
    catalogs: CatalogIndex
    page_mode: str
    download_url: Callable[[ImageRecord], str]
    detail_url: Callable[[ImageRecord], str]
    scopes: tuple[str, ...] = ("catalog",)
    server_now: Callable[[], float] = time.time
    caller: str = "webhook"
    client_id: str = ""


@attrs.frozen
class MethodResult:
    """A handler's answer; ``rows_read`` is what it read in the database (a counter)."""

    result: object
    total: int | None = None
    next: int | None = None
    rows_read: int = 0


Handler = Callable[[MethodContext, Mapping[str, object]], MethodResult]


def _missing(name: str) -> RestError:
    # Main\Engine binder text, code 100 (DOCS catalog-price-get.md: "Could not find value
    # for parameter {id}").
    return RestError(400, 100, f"Could not find value for parameter {{{name}}}")


def _bind_int(params: Mapping[str, object], name: str) -> int:
    """Bind an ``int $name`` action argument as Main\\Engine does."""
    value = params.get(name)
    if value is None:
        raise _missing(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.match(value):
        return int(value)
    # DOCS catalog-product-property-feature-get-available-features-by-property.md; the code
    # of this binder error is [UNCONFIRMED], 100 like its sibling above.
    raise RestError(
        400,
        100,
        f"Invalid value {value} to match with parameter {{{name}}}. Should be value of type int.",
    )


def _bind_array(params: Mapping[str, object], name: str) -> Mapping[str, object] | list[object]:
    value = params.get(name)
    if value is None:
        raise _missing(name)
    if isinstance(value, dict | list):
        return value
    raise RestError(
        400,
        100,
        f"Invalid value {value} to match with parameter {{{name}}}. Should be value of type array.",
    )


def _select(params: Mapping[str, object], known: Mapping[str, str]) -> set[str] | None:
    """The selected wire names, or None for "all" (no select, empty, or nothing known).

    The Internalizer turns camelCase into UPPER_SNAKE (CORE rest/lib/integration/controller/
    base.php), so ``productId``, ``PRODUCT_ID`` and ``productid`` all name one field.
    Unknown names are ignored [UNCONFIRMED: the server may reject them].
    """
    raw = params.get("select")
    values = php_values(raw) if isinstance(raw, dict | list) else [raw] if raw else []
    chosen = {known[str(v).lower()] for v in values if str(v).lower() in known}
    return chosen or None


def image_json(ctx: MethodContext, record: ImageRecord, select: set[str] | None) -> object:
    """One ``catalog_product_image`` object (DOCS data-types.md)."""
    full: dict[str, object] = {
        "createTime": record.created.isoformat(timespec="seconds"),
        "detailUrl": ctx.detail_url(record),
        "downloadUrl": ctx.download_url(record),
        "id": record.id,
        "name": record.name,
        "productId": record.product_id,
        "type": record.type,
    }
    if select is None:
        return full
    return {key: value for key, value in full.items() if key in select}


def _check_product(ctx: MethodContext, product_id: int, *, write: bool) -> None:
    # CORE productimage.php: productId <= 0 is "Empty productID"; then the product must
    # exist; then the iblock right (element_read / element_edit) must be granted.
    if product_id <= 0:
        raise RestError(400, 0, "Empty productID")
    if not ctx.catalog.has_product(product_id):
        raise RestError(400, 0, "Product was not found")
    if write and not ctx.catalog.can_write(product_id):
        raise RestError(400, MODIFY_DENIED, "Access Denied")
    if not write and not ctx.catalog.can_read(product_id):
        raise RestError(400, READ_DENIED, "Access Denied")


def _image_list(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    product_id = _bind_int(params, "productId")
    select = _select(params, _IMAGE_FIELD_BY_NORM)
    _check_product(ctx, product_id, write=False)
    records = ctx.catalog.records(product_id)
    start = php_intval(params.get("start", 0))
    if ctx.page_mode == "offset":
        # DOCS list-methods-pecularities.md: 50 per page from `start`, `next` while more remain.
        offset = max(start, 0)
        page = records[offset : offset + PAGE_SIZE]
        items = [image_json(ctx, r, select) for r in page]
        if start == -1:
            return MethodResult({"productImages": items})
        more = offset + PAGE_SIZE < len(records)
        return MethodResult(
            {"productImages": items},
            total=len(records),
            next=offset + PAGE_SIZE if more else None,
        )
    # Source mode (CORE productimage.php listAction + restmanager.php getNavigationData):
    # every image in one Page with total == count, so `next` never appears and `start`
    # does not skip; start=-1 (DONT_CALCULATE_COUNT) drops `total`.
    items = [image_json(ctx, r, select) for r in records]
    return MethodResult({"productImages": items}, total=None if start == -1 else len(items))


def _find_attached(ctx: MethodContext, product_id: int, image_id: int) -> ImageRecord:
    record = ctx.catalog.find(image_id)
    if record is None or record.product_id != product_id:
        raise RestError(400, 0, "Image does not exist")
    return record


def _image_get(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    # getAction(int $id, int $productId): the binder checks arguments in that order.
    image_id = _bind_int(params, "id")
    product_id = _bind_int(params, "productId")
    _check_product(ctx, product_id, write=False)
    record = _find_attached(ctx, product_id, image_id)
    return MethodResult({"productImage": image_json(ctx, record, None)})


def _image_delete(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    image_id = _bind_int(params, "id")
    product_id = _bind_int(params, "productId")
    # CORE-NEW: the file must exist first, then the product, then the modify right.
    if ctx.catalog.find(image_id) is None:
        raise RestError(400, 0, "Image does not exist")
    _check_product(ctx, product_id, write=True)
    _find_attached(ctx, product_id, image_id)
    ctx.catalog.delete_image(product_id, image_id)
    return MethodResult(True)


def _decode_base64(text: str) -> bytes:
    """PHP ``base64_decode`` (non-strict): junk characters are skipped, padding optional."""
    cleaned = _B64_JUNK.sub("", text)
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4 if len(cleaned) % 4 == 1 else None]
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except binascii.Error:  # pragma: no cover - cleaned input is always decodable
        return b""


def _image_add(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    fields = _bind_array(params, "fields")
    file_content = _bind_array(params, "fileContent")
    field_map = fields if isinstance(fields, Mapping) else {}
    product_id = php_intval(field_map.get("productId"))
    if product_id <= 0 or not ctx.catalog.has_product(product_id):
        raise RestError(400, 0, "Product was not found")
    if not ctx.catalog.can_write(product_id):
        raise RestError(400, MODIFY_DENIED, "Access Denied")
    # CRestUtil::saveFile: list($fileName, $fileContent) = array_values($fileContent).
    values = [*php_values(file_content), None, None]
    raw_name, raw_content = values[0], values[1]
    content = _decode_base64(raw_content) if isinstance(raw_content, str) else b""
    if not content or raw_content == "false":
        raise RestError(400, 0, "Could not save image.")
    name = str(raw_name).replace("\\", "/").rsplit("/", 1)[-1] if raw_name else ""
    if not name:
        name = secrets.token_hex(16)  # saveFile names a nameless file randomly (32 chars)
    if image_mime(content) is None:
        # CFile::CheckFile(..., CFile::GetImageExtensions()) refuses non-images, code 0.
        raise RestError(400, 0, "The file is not an image.")
    kind = field_map.get("type")
    image_type = kind if kind in (DETAIL_PICTURE, PREVIEW_PICTURE) else MORE_PHOTO
    stored = ctx.catalog.add_image(product_id, name=name, content=content, type=str(image_type))
    record = ImageRecord(
        id=stored.id,
        product_id=stored.product_id,
        name=stored.name,
        type=stored.type,
        created=stored.created,
        content=stored.content,
    )
    return MethodResult({"productImage": image_json(ctx, record, None)})


def _field(*, read_only: bool, required: bool, kind: str) -> dict[str, object]:
    return {"isImmutable": False, "isReadOnly": read_only, "isRequired": required, "type": kind}


# DOCS catalog-product-image-get-fields.md (the docs say productId is "string"; the server
# view says TYPE_INT [UNCONFIRMED which a live portal sends]; the docs are followed here).
_IMAGE_FIELDS_META: dict[str, object] = {
    "createTime": _field(read_only=True, required=False, kind="datetime"),
    "detailUrl": _field(read_only=True, required=False, kind="string"),
    "downloadUrl": _field(read_only=True, required=False, kind="string"),
    "id": _field(read_only=True, required=False, kind="integer"),
    "name": _field(read_only=True, required=False, kind="string"),
    "productId": _field(read_only=False, required=True, kind="string"),
    "type": _field(read_only=False, required=False, kind="string"),
}


def _image_get_fields(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    return MethodResult({"productImage": _IMAGE_FIELDS_META})


def _bound_test(compare: Callable[[int, int], bool], value: object) -> Callable[[int], bool] | None:
    """One id condition; an array value (a batch reference to a missing path gives one)
    is ORed over its elements' intval, an empty one or null adds no condition, as
    CIBlockElement's filter builds SQL for a numeric field [UNCONFIRMED live]."""
    if value is None:
        return None
    if isinstance(value, dict | list):
        bounds = [php_intval(v) for v in php_values(value)]
        if not bounds:
            return None
        return lambda pid: any(compare(pid, bound) for bound in bounds)
    bound = php_intval(value)
    return lambda pid: compare(pid, bound)


def _product_filter(filter_: Mapping[str, object]) -> Callable[[int], bool]:
    """The id conditions of a ``catalog.product.list`` filter (``id``, ``>id``, ``<=id``...)."""
    tests: list[Callable[[int], bool]] = []
    for key, value in filter_.items():
        match = _ID_FILTER.match(str(key))
        if match is not None:
            test = _bound_test(_COMPARE[match.group(1) or "="], value)
            if test is not None:
                tests.append(test)
    return lambda pid: all(test(pid) for test in tests)


def _product_list(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    """DOCS catalog-product-list.md; paging by ``>id`` with ``start=-1`` per DOCS
    settings/performance/huge-data.md."""
    raw_filter = params.get("filter")
    filter_ = raw_filter if isinstance(raw_filter, dict) else {}
    lowered = {str(k).lower(): v for k, v in filter_.items()}
    if "iblockid" not in lowered:
        # DOCS catalog-product-list.md: filter.iblockId is required [UNCONFIRMED text].
        raise RestError(400, 0, "Required filter fields: iblockId")
    select = _select(params, {f.lower(): f for f in _PRODUCT_FIELDS})
    iblock_id = php_intval(lowered["iblockid"])
    keep = _product_filter(filter_)
    ids = [pid for pid in ctx.catalogs.product_ids(iblock_id) if keep(pid)]
    raw_order = params.get("order")
    order = raw_order if isinstance(raw_order, dict) else {}
    direction = next((str(v) for k, v in order.items() if str(k).lower() == "id"), "asc")
    if direction.lower() == "desc":
        ids.reverse()
    start = php_intval(params.get("start", 0))
    offset = max(start, 0)
    page = ids[offset : offset + PAGE_SIZE]
    products = []
    for pid in page:
        full: dict[str, object] = {
            "id": pid,
            "iblockId": iblock_id,
            "name": ctx.catalog.product_name(pid),
        }
        products.append({k: v for k, v in full.items() if select is None or k in select})
    if start == -1:
        # RestManager::DONT_CALCULATE_COUNT: no COUNT(*), no offset: only its own rows.
        return MethodResult({"products": products}, rows_read=len(page))
    more = offset + PAGE_SIZE < len(ids)
    return MethodResult(
        {"products": products},
        total=len(ids),
        next=offset + PAGE_SIZE if more else None,
        # The database walks past every skipped row, then counts the matching ones.
        rows_read=offset + len(page) + len(ids),
    )


def _catalog_list(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    """DOCS api-reference/catalog/catalog/catalog-catalog-list.md (offset pages of 50)."""
    catalogs = [catalog_json(c) for c in ctx.catalogs.catalogs]
    start = php_intval(params.get("start", 0))
    offset = max(start, 0)
    page = catalogs[offset : offset + PAGE_SIZE]
    if start == -1:
        return MethodResult({"catalogs": page})
    more = offset + PAGE_SIZE < len(catalogs)
    return MethodResult(
        {"catalogs": page}, total=len(catalogs), next=offset + PAGE_SIZE if more else None
    )


#: Lower-cased method name -> handler (CRestServer lower-cases method names).
METHODS: dict[str, Handler] = {
    "catalog.productimage.list": _image_list,
    "catalog.productimage.get": _image_get,
    "catalog.productimage.add": _image_add,
    "catalog.productimage.delete": _image_delete,
    "catalog.productimage.getfields": _image_get_fields,
    "catalog.product.list": _product_list,
    "catalog.catalog.list": _catalog_list,
}
