"""Bad-input fuzzing of every public call, and the secret watch itself.

Hypothesis feeds wrong types and wrong values to the constructors, ``call``, ``paginate``
and every ``client.images`` method. Each must raise ``ValueError`` or ``TypeError`` with a
readable message that shows no credential, and no request may reach the portal
(``portal.counters.requests`` stays 0 for the whole test).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import FAST_RETRY, PNG, UNLIMITED, examples, secrets_of
from yarl import URL

import bitrix_images as bx
from bitrix_images.testing import FakePortal

FUZZ = settings(
    max_examples=examples(60),
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
T = TypeVar("T")
CODE = "c0ffee5ecret0c0de"  # the webhook code in generated URLs: never in a message

not_int = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.builds(object),
)
bad_ids = st.one_of(not_int, st.integers(max_value=0))
good_ids = st.integers(1, 20)
bad_starts = st.one_of(st.integers(max_value=-1), st.booleans(), st.floats(), st.text(max_size=3))
bad_selects = st.one_of(
    st.text(max_size=8),  # a string is not a list of names
    st.binary(max_size=4),
    st.integers(),
    st.lists(st.one_of(st.integers(), st.none(), st.binary(max_size=3)), min_size=1, max_size=3),
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3).filter(
        lambda names: any(n not in {"id", "name", "type"} and "_" not in n for n in names)
    ),
)


def _readable(error: BaseException) -> None:
    assert type(error) in (ValueError, TypeError) or isinstance(error, (ValueError, TypeError)), (
        repr(error)
    )
    assert not isinstance(error, bx.BitrixError)
    message = str(error)
    assert message
    assert message.strip()
    assert len(message) < 500
    assert CODE not in message


async def _refused(call: Callable[[], Awaitable[object] | object]) -> BaseException:
    """Run *call* (sync or async, an async iterator is drained); return what it raised."""
    try:
        result = call()
        if asyncio.iscoroutine(result):
            await result
        elif hasattr(result, "__aiter__"):
            _ = [item async for item in result]  # type: ignore[union-attr]
    except (ValueError, TypeError) as error:
        _readable(error)
        return error
    raise AssertionError("the call was accepted")


# --- client.images ---------------------------------------------------------------------------


@FUZZ
@given(
    args=st.one_of(
        st.tuples(bad_ids, good_ids),
        st.tuples(good_ids, bad_ids),
        st.tuples(bad_ids, bad_ids),
    ),
    method=st.sampled_from(["get", "delete"]),
)
async def test_get_and_delete_refuse_bad_ids(
    portal: FakePortal, client: bx.BitrixClient, args: tuple[Any, Any], method: str
) -> None:
    await _refused(lambda: getattr(client.images, method)(*args))
    assert portal.counters.requests == 0


@FUZZ
@given(
    case=st.one_of(
        st.fixed_dictionaries({"product_id": bad_ids}),
        st.fixed_dictionaries({"product_id": good_ids, "select": bad_selects}),
        st.fixed_dictionaries({"product_id": good_ids, "start": bad_starts}),
    )
)
async def test_list_refuses_bad_arguments(
    portal: FakePortal, client: bx.BitrixClient, case: dict[str, Any]
) -> None:
    product_id = case.pop("product_id")
    await _refused(lambda: client.images.list(product_id, **case))
    assert portal.counters.requests == 0


@FUZZ
@given(
    case=st.one_of(
        # Not an iterable of ids at all.
        st.fixed_dictionaries(
            {"ids": st.one_of(st.none(), st.integers(), st.text(max_size=4), st.binary())}
        ),
        # A bad id among the first batch's 50.
        st.fixed_dictionaries(
            {
                "ids": st.tuples(
                    st.lists(good_ids, max_size=40), bad_ids, st.lists(good_ids, max_size=40)
                ).map(lambda parts: [*parts[0], parts[1], *parts[2]])
            }
        ),
        st.fixed_dictionaries({"ids": st.lists(good_ids, max_size=5), "select": bad_selects}),
    ),
    asynchronous=st.booleans(),
)
async def test_list_many_refuses_bad_arguments(
    portal: FakePortal, client: bx.BitrixClient, case: dict[str, Any], asynchronous: bool
) -> None:
    ids = case.pop("ids")
    if asynchronous and isinstance(ids, list):
        assume(len(ids) <= 50)

        async def generate() -> Any:
            for value in ids:
                yield value

        source: Any = generate()
    else:
        if isinstance(ids, list):
            first_bad = next((k for k, value in enumerate(ids) if _bad(value)), 0)
            assume(first_bad < 50)  # a later bad id lets the batches before it go out
        source = ids
    await _refused(lambda: client.images.list_many(source, **case))
    assert portal.counters.requests == 0


def _bad(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or value <= 0


@st.composite
def bad_adds(draw: st.DrawFn) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """add() arguments with at least one thing wrong."""
    product_id: Any = draw(good_ids)
    file: Any = PNG
    kwargs: dict[str, Any] = {"name": "a.png"}
    wrong = draw(st.sampled_from(["product_id", "file", "content", "name", "no_name", "type"]))
    if wrong == "product_id":
        product_id = draw(bad_ids)
    elif wrong == "file":
        file = draw(st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2)))
    elif wrong == "content":
        file = draw(st.binary(max_size=40).filter(lambda b: not _looks_like_an_image(b)))
    elif wrong == "name":
        kwargs["name"] = draw(
            st.one_of(
                st.text(alphabet=" \t\n", max_size=3),
                st.text(min_size=1, max_size=8).map(lambda s: s + "/x.png"),
                st.text(min_size=1, max_size=8).map(lambda s: "..\\" + s),
                st.integers(),
                st.binary(min_size=1, max_size=4),
            )
        )
    elif wrong == "no_name":
        kwargs = {}
    else:
        kwargs["type"] = draw(
            st.one_of(st.sampled_from(["MORE_PHOTO", "DETAIL_PICTURE"]), st.integers())
        )
    return (product_id, file), kwargs


def _looks_like_an_image(content: bytes) -> bool:
    from bitrix_images.images import is_image

    return is_image(content)


@FUZZ
@given(case=bad_adds())
async def test_add_refuses_bad_arguments(
    portal: FakePortal, client: bx.BitrixClient, case: tuple[tuple[Any, ...], dict[str, Any]]
) -> None:
    args, kwargs = case
    await _refused(lambda: client.images.add(*args, **kwargs))
    assert portal.counters.requests == 0


@FUZZ
@given(
    wrong=st.sampled_from(["image", "no_url", "foreign", "dest", "missing_dir"]),
    value=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=3)),
)
async def test_download_refuses_bad_arguments(
    portal: FakePortal, client: bx.BitrixClient, tmp_path: Path, wrong: str, value: Any
) -> None:
    good = bx.ProductImage(
        id=1, name="a.png", download_url=URL(f"{portal.webhook_url}download/?token=t")
    )
    image: Any = good
    dest: Any = tmp_path
    if wrong == "image":
        image = value
    elif wrong == "no_url":
        image = bx.ProductImage(id=1, name="a.png")
    elif wrong == "foreign":
        image = bx.ProductImage(
            id=1, download_url=URL(f"https://evil.example/rest/1/{CODE}/download/?token=t")
        )
    elif wrong == "dest":
        dest = value if not isinstance(value, str) else 5
    else:
        dest = tmp_path / "missing" / "deeper" / f"{value!s}.png"
    await _refused(lambda: client.images.download(image, dest))
    assert portal.counters.requests == 0
    assert list(tmp_path.iterdir()) == []


# --- call and paginate ---------------------------------------------------------------------------

method_names = st.one_of(
    st.text(max_size=20).filter(
        lambda s: not s[:1].isalpha() or not s.replace(".", "").replace("_", "").isalnum()
    ),
    st.sampled_from(["../../profile", "user.current/..", "batch?x=1", "a b", "", ".list", "x..y"]),
)


@FUZZ
@given(
    case=st.one_of(
        st.fixed_dictionaries({"method": method_names}),
        st.fixed_dictionaries({"method": not_int.filter(lambda v: not isinstance(v, str))}),
        st.fixed_dictionaries(
            {
                "method": st.just("catalog.productImage.list"),
                "params": st.one_of(
                    st.lists(st.integers(), max_size=2), st.text(max_size=3), st.integers()
                ),
            }
        ),
        st.fixed_dictionaries(
            {
                "method": st.just("catalog.productImage.list"),
                "params": st.one_of(
                    st.just({"productId": object()}),
                    st.just({"productId": 2**70}),
                    st.just({"x": {1, 2}}),
                    st.just({"x": b"\xff"}),
                ),
            }
        ),
    )
)
async def test_call_refuses_bad_arguments(
    portal: FakePortal, client: bx.BitrixClient, case: dict[str, Any]
) -> None:
    await _refused(lambda: client.call(case["method"], case.get("params")))
    assert portal.counters.requests == 0


@FUZZ
@given(
    case=st.one_of(
        st.fixed_dictionaries({"method": method_names}),
        st.fixed_dictionaries(
            {"params": st.one_of(st.lists(st.integers(), min_size=1), st.integers())}
        ),
        st.fixed_dictionaries({"params": st.just({"start": 0})}),
        st.fixed_dictionaries({"key": st.one_of(st.just(""), st.integers(), st.none())}),
        st.fixed_dictionaries({"start": bad_starts}),
    )
)
async def test_paginate_refuses_bad_arguments(
    portal: FakePortal, client: bx.BitrixClient, case: dict[str, Any]
) -> None:
    options: dict[str, Any] = {"method": "catalog.product.list", "key": "products"}
    options.update(case)
    method = options.pop("method")
    await _refused(lambda: client.paginate(method, **options))
    assert portal.counters.requests == 0


# --- constructors ------------------------------------------------------------------------------

hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "portal.example", "10.0.0.1", "", "[::1"]),
    st.text(max_size=12),
)
ports = st.one_of(
    st.just(""),
    st.integers(-5, 99999).map(lambda p: f":{p}"),
    st.text(max_size=4).map(lambda s: ":" + s),
)
schemes = st.sampled_from(["http", "https", "ftp", "", "HTTP", "javascript"])
paths = st.sampled_from(
    [
        f"/rest/1/{CODE}/",
        f"/rest/{CODE}/",
        f"/{CODE}/",
        f"/rest/1/{CODE}/?x=1",
        f"/rest/1/{CODE}/#f",
        f"rest/1/{CODE}",
    ]
)


@FUZZ
@given(parts=st.tuples(schemes, hosts, ports, paths), as_url=st.booleans())
def test_from_webhook_refuses_bad_urls_without_showing_them(
    parts: tuple[str, str, str, str], as_url: bool, secret_watch: Any
) -> None:
    secret_watch.learn(CODE)
    scheme, host, port, path = parts
    text = f"{scheme}://{host}{port}{path}" if scheme else f"{host}{port}{path}"
    try:
        url: Any = URL(text) if as_url else text
    except ValueError:
        return  # yarl refused it before the SDK saw it
    try:
        client = bx.BitrixClient.from_webhook(url)
    except (ValueError, TypeError) as error:
        _readable(error)
        secret_watch.check(error)
        return
    # Accepted: then it is a loopback http or an https webhook URL, and its repr is clean.
    assert client.origin.scheme in ("http", "https")
    secret_watch.check(client)


@FUZZ
@given(
    option=st.sampled_from(["rate_limit", "retry", "session", "timeout"]),
    value=st.one_of(
        st.integers(max_value=0),
        st.booleans(),
        st.text(max_size=3),
        st.floats(max_value=0, allow_nan=False),
        st.builds(dict),
    ),
)
def test_from_webhook_refuses_bad_options(option: str, value: Any) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        bx.BitrixClient.from_webhook(f"https://p.example/rest/1/{CODE}/", **{option: value})
    _readable(info.value)


@FUZZ
@given(
    field=st.sampled_from(
        [
            "client_endpoint",
            "access_token",
            "refresh_token",
            "client_id",
            "client_secret",
            "oauth_url",
            "on_token_refresh",
        ]
    ),
    value=st.one_of(
        st.none(), st.just(""), st.integers(), st.binary(max_size=3), st.text(max_size=4)
    ),
)
def test_from_oauth_refuses_bad_arguments(field: str, value: Any, secret_watch: Any) -> None:
    options: dict[str, Any] = {
        "client_endpoint": "https://p.example/rest/",
        "access_token": "a" * 32,
        "refresh_token": "r" * 32,
        "client_id": "local.x",
        "client_secret": CODE,
        "oauth_url": "https://oauth.example/oauth/token/",
    }
    if field in ("client_endpoint", "oauth_url") and isinstance(value, str) and value:
        value = "http://203.0.113.9/" + value  # plain http to a remote host
    elif field == "on_token_refresh":
        assume(value is not None)
    elif isinstance(value, str) and value:
        value = value.encode()
    options[field] = value
    secret_watch.learn(CODE, "a" * 32, "r" * 32)
    endpoint = options.pop("client_endpoint")
    with pytest.raises((ValueError, TypeError)) as info:
        bx.BitrixClient.from_oauth(endpoint, **options)
    _readable(info.value)
    secret_watch.check(info.value)


def _built(build: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    """What *build* made, or the ValueError/TypeError it raised (anything else propagates)."""
    try:
        return build(), None
    except (ValueError, TypeError) as error:
        return None, error


numbers = st.one_of(
    st.floats(allow_nan=False),
    st.integers(-3, 10**6),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


@FUZZ
@given(rate=numbers, burst=numbers, in_flight=numbers, limit=numbers, headroom=numbers)
def test_rate_limit_accepts_only_sane_values(
    rate: Any, burst: Any, in_flight: Any, limit: Any, headroom: Any
) -> None:
    value, error = _built(
        lambda: bx.RateLimit(
            rate=rate,
            burst=burst,
            max_in_flight=in_flight,
            operating_limit=limit,
            operating_headroom=headroom,
        )
    )
    if value is None:
        assert str(error)
        return
    assert value.rate > 0
    assert isinstance(value.burst, int)
    assert value.burst >= 1
    assert value.max_in_flight >= 1
    assert value.operating_limit > 0
    assert 0 < value.operating_headroom <= 1


@FUZZ
@given(attempts=numbers, initial=numbers, maximum=numbers, wait=numbers)
def test_retry_policy_accepts_only_sane_values(
    attempts: Any, initial: Any, maximum: Any, wait: Any
) -> None:
    policy, error = _built(
        lambda: bx.RetryPolicy(
            max_attempts=attempts, initial_delay=initial, max_delay=maximum, max_wait=wait
        )
    )
    if policy is None:
        assert str(error)
        return
    assert isinstance(policy.max_attempts, int)
    assert policy.max_attempts >= 1
    assert 0 <= policy.initial_delay <= policy.max_delay
    assert policy.max_wait >= 0


@pytest.mark.parametrize(
    "build",
    [
        lambda: bx.RetryPolicy(initial_delay=math.nan),
        lambda: bx.RetryPolicy(max_delay=math.nan),
        lambda: bx.RetryPolicy(max_wait=math.nan),
        lambda: bx.BitrixClient.from_webhook("https://p.example/rest/1/abc/", timeout=math.nan),
    ],
    ids=["initial_delay", "max_delay", "max_wait", "timeout"],
)
def test_nan_is_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"nan|NaN|must be"):
        build()


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: bx.RateLimit(rate="2"), "rate"),
        (lambda: bx.RateLimit(operating_limit="480"), "operating_limit"),
        (lambda: bx.RateLimit(operating_headroom=None), "operating_headroom"),
        (lambda: bx.RetryPolicy(initial_delay="0.5"), "initial_delay"),
        (lambda: bx.RetryPolicy(max_wait=None), "max_wait"),
    ],
    ids=["rate", "operating_limit", "operating_headroom", "initial_delay", "max_wait"],
)
def test_wrong_types_name_the_argument(build: Callable[[], object], name: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        build()
    assert name in str(info.value)


# --- the secret watch itself -----------------------------------------------------------------


async def test_the_watch_knows_every_credential_a_portal_makes(secret_watch: Any) -> None:
    async with FakePortal(products=2, images_per_product=2, rate=None) as portal:
        first = secrets_of(portal)
        assert first <= secret_watch.secrets
        async with bx.BitrixClient.from_oauth(
            portal.client_endpoint,
            access_token=portal.access_token,
            refresh_token=portal.refresh_token,
            client_id=portal.client_id,
            client_secret=portal.client_secret,
            oauth_url=portal.oauth_url,
            retry=FAST_RETRY,
            rate_limit=UNLIMITED,
        ) as client:
            portal.expire_access_token()
            image = await client.images.get(1, 1)  # refreshed: new tokens
            assert portal.counters.refreshes == 1
            assert secrets_of(portal) <= secret_watch.secrets
            assert image.download_url is not None
            token = image.download_url.query["token"]
            signature = token.rsplit("|", 1)[-1]
            assert signature in secret_watch.secrets
            secret_watch.check(client, image, client.stats, image.download_url.host)


async def test_the_watch_catches_a_leak(secret_watch: Any) -> None:
    secret_watch.learn("0123456789abcdef0123")
    leaky = bx.BitrixError("failed for https://p/rest/1/0123456789abcdef0123/")
    try:
        with pytest.raises(AssertionError, match="secrets"):
            secret_watch.check(leaky)
        chained = ValueError("outer")
        chained.__context__ = KeyError("token=0123456789abcdef0123")
        assert secret_watch.scan(chained)
        batch = bx.BatchError("batch failed", errors={"p0": leaky})
        assert secret_watch.scan(batch)
        assert not secret_watch.scan(bx.BitrixError("clean"), "0123456789abcdef012")
    finally:
        # The leaky errors were recorded when they were made; forget them, or this test
        # would fail at teardown, as it should for any other test.
        secret_watch.errors.clear()


async def test_a_session_of_the_wrong_type_is_refused(portal: FakePortal) -> None:
    with pytest.raises(TypeError):
        bx.BitrixClient.from_webhook(portal.webhook_url, session=aiohttp.ClientTimeout())  # type: ignore[arg-type]
    assert portal.counters.requests == 0
