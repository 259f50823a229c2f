"""``--redis`` / ``BITRIX_REDIS_URL`` on the command line."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer, running_redis
from support import ThreadPortal
from test_cli import oauth_env, run_cli

from bitrix_images import cli
from bitrix_images._coordinator import Keys, oauth_credential, webhook_credential


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


def stored_tokens(server: RedisServer, keys: Keys) -> dict[str, Any]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return client.hgetall(keys.tokens)  # type: ignore[return-value]
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
    assert redis_keys(redis_server, keys.prefix.replace("{", "[{]") + ":*") == [
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


def test_an_unreachable_redis_falls_back_and_keeps_its_password(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://:pa55word@127.0.0.1:{port}/0"
    code, out, err = run_cli(capsys, "list", "1", "--webhook", served.url, "--redis", url)
    assert code == 0
    assert len(out.splitlines()) == 3
    assert "Redis is unreachable" in caplog.text
    assert "pa55word" not in err + caplog.text


def test_a_bad_redis_url_is_one_error_line(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "fields", "--webhook", served.url, "--redis", "http://user:secretpw@127.0.0.1/"
    )
    assert code == 1
    assert err.startswith("bitrix-images: error: ")
    assert "secretpw" not in err


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
    assert {k: stored_tokens(redis_server, keys)[k] for k in newest} == newest
    assert {k: json.loads(tokens.read_text())[k] for k in newest} == newest  # a copy

    # The environment's pair is dead, and so is an old token file: Redis's pair wins.
    stale = json.loads(tokens.read_text()) | {"access_token": "old", "refresh_token": "old"}
    tokens.write_text(json.dumps(stale))
    for extra in ([], ["--token-file", str(tokens)]):
        code, out, err = run_cli(capsys, "get", "1", "1", *extra)
        assert (code, err) == (0, "")  # no refresh, and no warning to keep the new pair
        assert json.loads(out)["id"] == 1
    assert portal.counters.refreshes == 1
