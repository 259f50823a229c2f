"""``bitrix-images catalogs`` and the checks ``mirror --iblock N`` makes before its walk,
against the embedded portal (``catalogs=``) on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import ThreadPortal, assert_one_error_line, run_cli

from bitrix_images.testing import PortalCatalog

pytestmark = pytest.mark.usefixtures("cli_env")

CATALOGS = (
    PortalCatalog(14, "Products"),
    PortalCatalog(
        15, "Products (offers)", products=[8, 9, 10], parent_iblock_id=14, sku_property_id=97
    ),
    PortalCatalog(20, "Empty \x1b[31mred", products=[]),
)
ACCESS_DENIED = {"error": "ACCESS_DENIED", "error_description": "Access denied."}


@pytest.fixture
def portal() -> ThreadPortal:
    served = ThreadPortal(products=10, images_per_product=1, catalogs=CATALOGS)
    yield served  # type: ignore[misc]
    served.close()


def test_catalogs_text(portal: ThreadPortal, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "catalogs", "--webhook", portal.url)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "iblock 14\t7 products\tProducts",
        "iblock 15\t3 products\tProducts (offers)\t(variations of iblock 14)",
        "iblock 20\t0 products\tEmpty \\x1b[31mred",  # the portal's text, made printable
    ]
    # The list, then one counted request per catalog.
    counters = portal.portal.counters
    assert counters.by_method["catalog.catalog.list"] == 1
    assert counters.by_method["catalog.product.list"] == 3
    assert counters.requests == 4


def test_catalogs_json(portal: ThreadPortal, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "catalogs", "--json", "--webhook", portal.url)
    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    assert json.loads(out) == {
        "catalogs": [
            {
                "id": 14,
                "iblock_id": 14,
                "name": "Products",
                "products": 7,
                "variations_of": None,
                "sku_property_id": None,
            },
            {
                "id": 15,
                "iblock_id": 15,
                "name": "Products (offers)",
                "products": 3,
                "variations_of": 14,
                "sku_property_id": 97,
            },
            {
                "id": 20,
                "iblock_id": 20,
                "name": "Empty \x1b[31mred",
                "products": 0,
                "variations_of": None,
                "sku_property_id": None,
            },
        ]
    }


def test_catalogs_a_count_that_fails(
    portal: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    portal.call(
        portal.portal.inject,
        "error",
        method="catalog.product.list",
        status=403,
        body=ACCESS_DENIED,
    )
    code, out, err = run_cli(capsys, "catalogs", "--json", "--webhook", portal.url)
    assert code == 1
    counts = [c["products"] for c in json.loads(out)["catalogs"]]
    assert counts == [None, 3, 0]
    assert "iblock 14: products not counted" in err
    assert err.splitlines()[-1] == (
        "bitrix-images: error: 1 catalogs could not be counted (see the warnings)"
    )


def test_catalogs_errors_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    served = ThreadPortal(scopes=("user",))
    try:
        code, out, err = run_cli(capsys, "catalogs", "--webhook", served.url)
        assert (code, out) == (1, "")
        assert "insufficient" in assert_one_error_line(err).lower()
    finally:
        served.close()
    code, _, err = run_cli(capsys, "catalogs", "--jsn")
    assert code == 2
    assert "unrecognized arguments: --jsn" in err


def test_mirror_an_iblock_that_is_no_catalog(
    portal: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for extra in ((), ("--dry-run",)):
        code, out, err = run_cli(
            capsys, "mirror", "out", "--iblock", "99", *extra, "--webhook", portal.url
        )
        assert (code, out) == (1, "")
        line = assert_one_error_line(err)
        assert "iblock 99 is not a product catalog" in line
        assert "bitrix-images catalogs" in line
    assert not (tmp_path / "out").exists()
    # Found out from the list of catalogs: not one product was asked for.
    assert portal.portal.counters.by_method["catalog.product.list"] == 0


def test_mirror_an_iblock_the_portal_does_not_know(
    portal: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Listed as a catalog, but catalog.product.list answers "Iblock Not Found" (DOCS
    # catalog-product-list.md): the same error. Any other refusal is the portal's own.
    not_found = {"error": 200040300000, "error_description": "Iblock Not Found"}
    for body, message in (
        (not_found, "iblock 14 is not a product catalog"),
        (ACCESS_DENIED, "Access denied"),
    ):
        portal.call(
            portal.portal.inject, "error", method="catalog.product.list", status=400, body=body
        )
        code, out, err = run_cli(capsys, "mirror", "out", "--iblock", "14", "--webhook", portal.url)
        assert (code, out) == (1, "")
        assert message in assert_one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_mirror_an_iblock_when_the_catalogs_list_is_refused(
    portal: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    # Products readable, catalog settings not: the check warns and the walk runs; an
    # iblock the portal does not know still stops at the count.
    portal.call(
        portal.portal.inject,
        "error",
        method="catalog.catalog.list",
        status=403,
        body=ACCESS_DENIED,
        times=2,
    )
    code, out, err = run_cli(capsys, "mirror", "out", "--iblock", "20", "--webhook", portal.url)
    assert code == 0
    assert "warning: cannot check catalog 20: catalog.catalog.list was refused" in err
    assert "warning: catalog 20 has no products" in err
    not_found = {"error": 200040300000, "error_description": "Iblock Not Found"}
    portal.call(
        portal.portal.inject, "error", method="catalog.product.list", status=400, body=not_found
    )
    code, out, err = run_cli(capsys, "mirror", "out", "--iblock", "99", "--webhook", portal.url)
    assert (code, out) == (1, "")
    assert "iblock 99 is not a product catalog" in err


def test_mirror_an_empty_catalog(portal: ThreadPortal, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "mirror", "out", "--iblock", "20", "--webhook", portal.url)
    assert code == 0
    assert out.startswith("0 products")
    assert "bitrix-images: warning: catalog 20 (Empty \\x1b[31mred) has no products" in err
    # One count, shared by the check and the walk; one batch finds the end.
    assert portal.portal.counters.by_method["catalog.product.list"] == 1
    assert portal.portal.counters.by_method["batch"] == 1


def test_mirror_a_catalog_with_variations(
    portal: ThreadPortal, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run_cli(
        capsys, "mirror", "out", "--iblock", "14", "--dry-run", "--webhook", portal.url
    )
    assert code == 0
    assert (
        "bitrix-images: catalog 14 has variations (offers) in catalog 15 (Products (offers)); "
        "mirror them too with --iblock 15"
    ) in err
    assert "warning" not in err
    assert "7 products" in out
    assert not (tmp_path / "out").exists()  # a dry run fetches nothing
    assert portal.portal.counters.files == 0
    assert portal.portal.counters.by_method["download"] == 0
    # The catalog list, one count, then the ids in one batch (and the images in another).
    assert portal.portal.counters.by_method["catalog.catalog.list"] == 1
    assert portal.portal.counters.by_method["catalog.product.list"] == 1
    assert portal.portal.counters.commands["catalog.product.list"] == 1
    code, out, err = run_cli(capsys, "mirror", "out", "--iblock", "15", "--webhook", portal.url)
    assert code == 0
    assert out.startswith("3 products, 3 images (3 downloaded")
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["10", "8", "9"]
    assert "variations" not in err


def _answer(catalogs: object) -> dict[str, object]:
    return {"result": {"catalogs": catalogs}, "total": 1, "time": {"start": 0, "finish": 0}}


@pytest.mark.parametrize(
    ("catalogs", "out", "message"),
    [
        ([], "no product catalogs\n", None),
        (
            [{"id": "3", "iblockId": "14", "name": None, "productIblockId": "0"}],
            "iblock 14\t7 products\t\n",
            None,
        ),
        ([{"id": 3, "iblockId": 14, "productIblockId": 0, "skuPropertyId": ""}], None, None),
        (["14"], "", "a catalog is not an object"),
        ([{"id": 3, "name": "x"}], "", "a catalog without its iblockId"),
        ([{"id": 3, "iblockId": -4}], "", "not a positive integer: -4"),
        ([{"iblockId": 14, "productIblockId": "x"}], "", "not a positive integer: 'x'"),
    ],
)
def test_catalogs_as_portals_send_them(
    portal: ThreadPortal,
    capsys: pytest.CaptureFixture[str],
    catalogs: object,
    out: str | None,
    message: str | None,
) -> None:
    portal.call(
        portal.portal.inject,
        "error",
        method="catalog.catalog.list",
        status=200,
        body=_answer(catalogs),
    )
    code, printed, err = run_cli(capsys, "catalogs", "--webhook", portal.url)
    if message is None:
        assert code == 0
        assert printed == (out if out is not None else "iblock 14\t7 products\t\n")
    else:
        assert (code, printed) == (1, "")
        assert message in assert_one_error_line(err)
