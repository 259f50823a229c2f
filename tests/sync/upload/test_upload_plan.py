"""``sync.upload.plan``: what an upload sends for one product, from plain data (no network)."""

from __future__ import annotations

from pathlib import Path

import bitrix_images as bx
from bitrix_images.sync.upload.plan import ADD, DELETE, Op, applied, plan_product
from bitrix_images.sync.upload.scan import Folder, ImageFile


def folder(product_id: int, *names: str) -> Folder:
    files = tuple(
        ImageFile(product_id, Path(f"src/{product_id}/{name}"), name, bx.ImageType.MORE_PHOTO)
        for name in names
    )
    return Folder(product_id, files, frozenset(names))


def image(image_id: int, name: str | None, product_id: int = 7) -> bx.ProductImage:
    return bx.ProductImage(id=image_id, name=name, product_id=product_id)


def test_files_the_product_lacks_are_added_and_the_rest_counted_present() -> None:
    plan = plan_product(folder(7, "a.png", "b.png", "c.png"), [image(1, "b.png")], prune=False)
    assert [op.file.name for op in plan.adds if op.file is not None] == ["a.png", "c.png"]
    assert all(op.method == ADD for op in plan.adds)
    assert plan.present == 1
    assert plan.deletes == ()


def test_prune_deletes_images_no_file_names_and_keeps_nameless_ones() -> None:
    images = [image(1, "a.png"), image(2, "old.png"), image(3, None)]
    plan = plan_product(folder(7, "a.png"), images, prune=True)
    assert [(op.method, op.image) for op in plan.deletes] == [(DELETE, images[1])]
    assert plan.deletes[0].shown == "7/old.png (image 2)"
    assert plan_product(folder(7, "a.png"), images, prune=False).deletes == ()


def test_files_given_up_are_not_planned_again() -> None:
    plan = plan_product(folder(7, "a.png", "b.png"), [], prune=False, given_up={(7, "a.png")})
    assert [op.shown for op in plan.adds] == ["7/b.png"]


def test_the_lines_of_a_dry_run() -> None:
    add = Op(7, file=ImageFile(7, Path("src/7/detail@f.png"), "f.png", bx.ImageType.DETAIL_PICTURE))
    assert add.planned() == "+ 7/detail@f.png"
    old = bx.ProductImage(id=31, name="photo-1.png", type=bx.ImageType.DETAIL_PICTURE)
    assert Op(7, file=add.file, replaces=old).planned() == (
        "~ 7/detail@f.png replaces 'photo-1.png' (id 31)"
    )
    assert Op(7, image=image(9, "x\x1b[2J.png")).planned() == "- 7/x\\x1b[2J.png (id 9)"
    plan = plan_product(folder(7, "a.png", "b.png"), [image(1, "a.png"), old], prune=True)
    assert [file.shown for file in plan.kept] == ["7/a.png"]
    assert [op.planned() for op in plan.deletes] == ["- 7/photo-1.png (id 31)"]


def test_prune_keeps_every_name_of_the_folder_and_spares_a_folder_without_images() -> None:
    images = [image(1, "a.png"), image(2, "empty.png")]
    some = Folder(7, folder(7, "a.png").files, frozenset({"a.png", "empty.png"}))
    assert plan_product(some, images, prune=True).deletes == ()
    assert plan_product(Folder(7, (), frozenset()), images, prune=True).deletes == ()


def test_a_new_listing_tells_which_unknown_commands_were_applied() -> None:
    keys = [("add", "a.png"), ("add", "b.png"), ("delete", 5), ("delete", 6)]
    # a.png is there now, b.png is not; image 5 is gone, image 6 is still there.
    done = applied(7, keys, [image(1, "a.png"), image(6, "y.png")])
    assert [event.line for event in done] == ["+ 7/a.png", "- 7 (id 5)"]
    assert applied(7, [], [image(1, "a.png")]) == []
