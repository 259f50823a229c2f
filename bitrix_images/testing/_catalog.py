"""The fake portal's catalog: products and their images, seeded virtually.

A seeded catalog of ``products x images_per_product`` images is never stored: an image is
computed from its id on demand (its product is ``(id - 1) // images_per_product + 1``).
Only mutations are stored: a product touched by an add or a delete is materialised into a
:class:`_ProductImages` record, and added products live in ``_extra``. So a portal seeded
with a million images starts instantly and listing one product costs O(its images).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import attrs

__all__ = [
    "DETAIL_PICTURE",
    "IMAGE_TYPES",
    "MORE_PHOTO",
    "PORTAL_TZ",
    "PREVIEW_PICTURE",
    "Catalog",
    "ImageRecord",
    "StoredImage",
    "image_mime",
    "make_png",
]

DETAIL_PICTURE = "DETAIL_PICTURE"
PREVIEW_PICTURE = "PREVIEW_PICTURE"
MORE_PHOTO = "MORE_PHOTO"
# DOCS api-reference/catalog/product-image/index.md: the three image types.
IMAGE_TYPES = (DETAIL_PICTURE, PREVIEW_PICTURE, MORE_PHOTO)

#: The portal's time zone: Bitrix writes ``date('c')`` in the server zone (docs show +02:00).
PORTAL_TZ = timezone(timedelta(hours=2))
# The create time of the docs' example image (catalog.productImage.list page).
_BASE_TIME = datetime(2024, 10, 17, 10, 48, 5, tzinfo=PORTAL_TZ)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@attrs.frozen
class StoredImage:
    """One image as the portal stores it (public view, with its bytes)."""

    id: int
    product_id: int
    name: str
    type: str
    created: datetime
    content: bytes = attrs.field(repr=lambda c: f"<{len(c)} bytes>")


@attrs.frozen
class ImageRecord:
    """An image without necessarily its bytes: ``content`` is None for a seeded image."""

    id: int
    product_id: int
    name: str
    type: str
    created: datetime
    content: bytes | None = attrs.field(default=None, repr=False)


@attrs.define
class _ProductImages:
    preview: ImageRecord | None = None
    detail: ImageRecord | None = None
    more: list[ImageRecord] = attrs.Factory(list)

    def ordered(self) -> list[ImageRecord]:
        # Server order (CORE productimage.php listAction): preview, detail, then MORE_PHOTO.
        head = [image for image in (self.preview, self.detail) if image is not None]
        return head + self.more


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@lru_cache(maxsize=256)
def make_png(image_id: int, seed: int, size: int | None) -> bytes:
    """A valid 1x1 PNG unique to ``image_id``, padded to about ``size`` bytes."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    text = _chunk(b"tEXt", b"Comment\x00" + f"fake portal image {image_id} seed {seed}".encode())
    data = _chunk(b"IDAT", zlib.compress(b"\x00" + digest[:3]))
    end = _chunk(b"IEND", b"")
    body = _PNG_SIGNATURE + header + text + data
    if size is not None and size > len(body) + len(end) + 12:
        # "paDd": ancillary, private, safe-to-copy chunk that decoders skip.
        body += _chunk(b"paDd", bytes(size - len(body) - len(end) - 12))
    return body + end


def image_mime(content: bytes) -> str | None:
    """The MIME type of image bytes by magic number (the formats CFile accepts), else None."""
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content.startswith(_PNG_SIGNATURE):
        return "image/png"
    if content.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    if content.startswith(b"BM"):
        return "image/bmp"
    return None


@attrs.frozen
class _Seed:
    """The rules of a seeded catalog: image ``id`` belongs to product
    ``(id - 1) // per + 1``; its name, type, time and bytes follow from the id and the seed."""

    per: int
    seed: int
    size: int | None

    def time(self, image_id: int) -> datetime:
        return _BASE_TIME + timedelta(seconds=image_id * 61 + self.seed * 3607)

    def content(self, image_id: int) -> bytes:
        return make_png(image_id, self.seed, self.size)

    def record(self, product_id: int, index: int, image_id: int | None = None) -> ImageRecord:
        """The *index*-th image of a seeded product (or, with *image_id*, of a product added
        later: then the record carries its bytes)."""
        seeded = image_id is None
        if image_id is None:
            image_id = (product_id - 1) * self.per + index + 1
        return ImageRecord(
            id=image_id,
            product_id=product_id,
            name=f"photo-{index + 1}.png",
            type=DETAIL_PICTURE if index == 0 else MORE_PHOTO,
            created=self.time(image_id),
            content=None if seeded else self.content(image_id),
        )

    def product(self, product_id: int) -> Iterator[ImageRecord]:
        return (self.record(product_id, index) for index in range(self.per))


class Catalog:
    """In-memory products and images of one fake portal."""

    def __init__(
        self,
        *,
        products: int = 10,
        images_per_product: int = 3,
        seed: int = 0,
        image_size: int | None = None,
        iblock_id: int = 14,
    ) -> None:
        if products < 0 or images_per_product < 0:
            raise ValueError("products and images_per_product must be >= 0")
        self._seeded = products
        self._per = images_per_product
        self._rules = _Seed(images_per_product, seed, image_size)
        self.iblock_id = iblock_id
        self._materialised: dict[int, _ProductImages] = {}
        self._extra: dict[int, str] = {}
        self._owner: dict[int, int] = {}  # ids of images added after seeding -> product
        self._next_id = products * images_per_product + 1
        self._count = products * images_per_product
        self._deny_read: set[int] = set()
        self._deny_write: set[int] = set()
        self._ids_cache: list[int] | None = None

    # -- products -----------------------------------------------------------------------

    def has_product(self, product_id: int) -> bool:
        return 1 <= product_id <= self._seeded or product_id in self._extra

    def product_ids(self) -> list[int]:
        """Every product id, ascending."""
        if self._ids_cache is None:
            self._ids_cache = [*range(1, self._seeded + 1), *sorted(self._extra)]
        return self._ids_cache

    def product_name(self, product_id: int) -> str:
        if product_id in self._extra:
            return self._extra[product_id]
        if self.has_product(product_id):
            return f"Product {product_id}"
        raise KeyError(product_id)

    def add_product(
        self, images: int = 0, *, product_id: int | None = None, name: str | None = None
    ) -> int:
        """Create a product with ``images`` seeded-like images; return its id."""
        ids = self.product_ids()
        if product_id is None:
            product_id = (ids[-1] if ids else 0) + 1
        if product_id <= 0 or self.has_product(product_id):
            raise ValueError(f"product id {product_id} is taken or invalid")
        self._extra[product_id] = name if name is not None else f"Product {product_id}"
        self._ids_cache = None
        self._materialised[product_id] = _ProductImages()
        for index in range(images):
            self._store(self._rules.record(product_id, index, self._next_id))
        return product_id

    def deny_read(self, product_id: int) -> None:
        """Calls reading this product answer 200040300010 Access Denied."""
        self._deny_read.add(product_id)

    def deny_write(self, product_id: int) -> None:
        """Calls changing this product answer 200040300020 Access Denied."""
        self._deny_write.add(product_id)

    def can_read(self, product_id: int) -> bool:
        return product_id not in self._deny_read

    def can_write(self, product_id: int) -> bool:
        return product_id not in self._deny_write

    # -- images -------------------------------------------------------------------------

    def _state(self, product_id: int) -> _ProductImages:
        """Materialise a seeded product so it can be changed."""
        state = self._materialised.get(product_id)
        if state is None:
            if not self.has_product(product_id):
                raise KeyError(product_id)
            state = _ProductImages()
            for record in self._rules.product(product_id):
                if record.type == DETAIL_PICTURE:
                    state.detail = record
                else:
                    state.more.append(record)
            self._materialised[product_id] = state
        return state

    def records(self, product_id: int) -> list[ImageRecord]:
        """The images of a product, in server order, without computing their bytes."""
        state = self._materialised.get(product_id)
        if state is not None:
            return state.ordered()
        if not self.has_product(product_id):
            raise KeyError(product_id)
        return list(self._rules.product(product_id))

    def find(self, image_id: int) -> ImageRecord | None:
        """The image with this id, wherever it is attached, or None."""
        product_id = self._owner.get(image_id)
        if product_id is None:
            if not 1 <= image_id <= self._seeded * self._per:
                return None
            product_id = (image_id - 1) // self._per + 1
        state = self._materialised.get(product_id)
        if state is None:
            return self._rules.record(product_id, (image_id - 1) % self._per)
        return next((r for r in state.ordered() if r.id == image_id), None)

    def content(self, record: ImageRecord) -> bytes:
        """The bytes of an image (computed for a seeded one)."""
        if record.content is not None:
            return record.content
        return self._rules.content(record.id)

    def public(self, record: ImageRecord) -> StoredImage:
        fields = attrs.asdict(record, recurse=False)
        return StoredImage(**{**fields, "content": self.content(record)})

    def images(self, product_id: int) -> list[StoredImage]:
        """The images of a product in the order the server lists them."""
        return [self.public(record) for record in self.records(product_id)]

    def image_count(self) -> int:
        return self._count

    def _store(self, record: ImageRecord) -> ImageRecord:
        state = self._state(record.product_id)
        self._next_id = max(self._next_id, record.id + 1)
        self._owner[record.id] = record.product_id
        # CORE productimage.php addAction: DETAIL/PREVIEW replace the element's picture,
        # anything else appends a MORE_PHOTO property value.
        if record.type == DETAIL_PICTURE:
            self._drop(state.detail)
            state.detail = record
        elif record.type == PREVIEW_PICTURE:
            self._drop(state.preview)
            state.preview = record
        else:
            state.more.append(record)
        self._count += 1
        return record

    def _drop(self, record: ImageRecord | None) -> None:
        if record is not None:
            self._owner.pop(record.id, None)
            self._count -= 1

    def add_image(
        self,
        product_id: int,
        *,
        name: str,
        content: bytes,
        type: str = MORE_PHOTO,  # the Bitrix field is called "type"
        created: datetime | None = None,
    ) -> StoredImage:
        """Attach an image directly (no HTTP). DETAIL/PREVIEW replace, others append."""
        if not self.has_product(product_id):
            raise KeyError(product_id)
        if type not in IMAGE_TYPES:
            type = MORE_PHOTO
        if created is None:
            created = datetime.now(PORTAL_TZ).replace(microsecond=0)
        elif created.tzinfo is None:
            created = created.replace(tzinfo=PORTAL_TZ)
        record = ImageRecord(
            id=self._next_id,
            product_id=product_id,
            name=name,
            type=type,
            created=created,
            content=content,
        )
        return self.public(self._store(record))

    def delete_image(self, product_id: int, image_id: int) -> bool:
        """Detach and forget an image; False when it is not attached to that product."""
        state = self._state(product_id)
        for slot in ("preview", "detail"):
            record: ImageRecord | None = getattr(state, slot)
            if record is not None and record.id == image_id:
                setattr(state, slot, None)
                self._drop(record)
                return True
        for index, record in enumerate(state.more):
            if record.id == image_id:
                del state.more[index]
                self._drop(record)
                return True
        return False
