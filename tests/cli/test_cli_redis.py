"""``--redis`` / ``BITRIX_REDIS_URL`` on the command line."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer, running_redis
from support import ThreadPortal, assert_one_error_line, oauth_env, run_cli

from bitrix_images import cli
from bitrix_images._coordinator import Keys, fingerprint, oauth_credential, webhook_credential


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def served() -> Iterator[ThreadPortal]:
    portal = ThreadPortal()
    yield portal
    portal.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (cli.WEBHOOK_ENV, *cli.OAUTH_ENV, cli.OAUTH_URL_ENV, cli.REDIS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def redis_keys(server: RedisServer, pattern: str) -> list[str]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return sorted(client.scan_iter(match=pattern))
    finally:
        client.close()


def stored_tokens(server: RedisServer, keys: Keys, first_refresh: str) -> dict[str, Any]:
    """The grant whose first refresh token was *first_refresh*."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return client.hgetall(keys.grant(fingerprint(first_refresh)))  # type: ignore[return-value]
    finally:
        client.close()


def test_list_shares_the_bucket_through_redis(
    served: ThreadPortal, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    portal = served.portal
    code, out, err = run_cli(
        capsys, "--redis", redis_server.url, "list", "1", "--webhook", served.url
    )
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 3
    keys = Keys.of("bitrix_images", portal.origin, webhook_credential(portal.webhook_code))
    assert redis_keys(redis_server, keys.portal.replace("{", "[{]") + ":*") == [
        keys.bucket,
        keys.operating("catalog.productImage.list"),
    ]


def test_redis_from_the_environment_after_the_command(
    served: ThreadPortal,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(cli.REDIS_ENV, redis_server.url)
    monkeypatch.setenv(cli.WEBHOOK_ENV, served.url)
    assert run_cli(capsys, "fields")[0] == 0
    monkeypatch.delenv(cli.REDIS_ENV)
    assert run_cli(capsys, "fields", "--redis", redis_server.url)[0] == 0
    keys = Keys.of(
        "bitrix_images", served.portal.origin, webhook_credential(served.portal.webhook_code)
    )
    assert redis_keys(redis_server, keys.prefix.replace("{", "[{]") + ":*")


def test_an_unreachable_redis_stops_the_command_and_keeps_its_password(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # A mistyped port: nothing listens there.
    url = f"redis://:pa55word@127.0.0.1:{port}/0"
    code, out, err = run_cli(capsys, "list", "1", "--webhook", served.url, "--redis", url)
    assert (code, out) == (2, "")
    assert_one_error_line(err, "pa55word")
    assert f"127.0.0.1:{port}" in err
    assert "pa55word" not in caplog.text
    assert served.portal.counters.requests == 0  # refused before any request


def test_a_bad_redis_url_is_one_error_line(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "fields", "--webhook", served.url, "--redis", "http://user:secretpw@127.0.0.1/"
    )
    assert code == 2
    assert_one_error_line(err, "secretpw")
    assert "not a Redis URL" in err


def test_without_redis_py_the_option_says_how_to_get_it(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    code, _, err = run_cli(capsys, "fields", "--webhook", served.url, "--redis", "redis://x/0")
    assert code == 1
    assert "pip install 'bitrix_images[redis]'" in err


def test_redis_is_the_source_of_truth_for_tokens(
    served: ThreadPortal,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    portal = served.portal
    oauth_env(monkeypatch, portal)
    monkeypatch.setenv(cli.REDIS_ENV, redis_server.url)
    keys = Keys.of("bitrix_images", portal.origin, oauth_credential(portal.client_id))
    tokens = tmp_path / "tokens.json"

    served.call(portal.expire_access_token)
    code, out, err = run_cli(capsys, "list", "1", "--token-file", str(tokens))
    assert (code, err) == (0, "")
    assert portal.counters.refreshes == 1
    newest = {"access_token": portal.access_token, "refresh_token": portal.refresh_token}
    first = os.environ["BITRIX_REFRESH_TOKEN"]
    assert {k: stored_tokens(redis_server, keys, first)[k] for k in newest} == newest
    assert {k: json.loads(tokens.read_text())[k] for k in newest} == newest  # a copy

    # The environment's pair is dead, and so is an old token file holding it: they are an
    # earlier pair of the grant in Redis, whose current pair wins.
    old = {"access_token": os.environ["BITRIX_ACCESS_TOKEN"], "refresh_token": first}
    tokens.write_text(json.dumps(json.loads(tokens.read_text()) | old))
    for extra in ([], ["--token-file", str(tokens)]):
        code, out, err = run_cli(capsys, "get", "1", "1", *extra)
        assert (code, err) == (0, "")  # no refresh, and no warning to keep the new pair
        assert json.loads(out)["id"] == 1
    assert portal.counters.refreshes == 1
