"""Shared fixtures: an embedded portal on loopback, clients with tiny retry delays, and a
secret watch that fails any test in which a credential shows up where a user could see it.

The watch (autouse, ``secret_watch``) learns every credential any ``FakePortal`` of the
test creates: the webhook code, the client secret, every access and refresh token it
issues, and every signed download token it hands out. It then fails the test when one of
them appears in

* an SDK log record (formatted, with its traceback);
* the message or ``repr()`` of any ``BitrixError`` created during the test, caught or not
  (with its chained causes and, for a ``BatchError``, its per-command errors);
* any exception that escapes the test body (a ``ValueError`` from an argument check too);
* the ``repr()`` of any ``BitrixClient`` built during the test, of its ``stats``, its auth
  object and its OAuth tokens, and of the first images it decoded;
* anything a test hands to ``secret_watch.check(...)`` explicitly.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import CLI_ENV, FAST_RETRY, UNLIMITED, ThreadPortal, secrets_of

import bitrix_images as bx
from bitrix_images._wire.auth import OAuthAuth, WebhookAuth
from bitrix_images._wire.converters import Converter
from bitrix_images.testing import FakePortal

# Credentials shorter than this are test fixtures ("abc"), not secrets: they would match by
# chance. Real webhook codes and tokens are 16 characters and more.
_MIN_SECRET = 8
# Images decoded per test whose repr is checked (the soak decodes 100 000).
_IMAGES_CHECKED = 200


def _shown(text_of: Callable[[object], str], item: object) -> str | None:
    try:
        return text_of(item)
    except Exception:  # a repr that raises hides nothing; other tests catch that
        return None


def _text_of(obj: object) -> list[str]:
    """Every string a user may see of *obj*: str() and repr(), chained causes included."""
    texts: list[str | None] = []
    seen: set[int] = set()
    stack: list[object] = [obj]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        texts.append(_shown(repr, item))
        if isinstance(item, BaseException):
            texts.append(_shown(str, item))
            stack.append(item.__cause__)
            stack.append(item.__context__)
            if isinstance(item, bx.BatchError):
                stack.extend(item.errors.values())
            stack.extend(getattr(item, "exceptions", ()))  # an exception group's members
        elif isinstance(item, bx.BitrixClient):
            stack.append(item.stats)
        elif isinstance(item, (WebhookAuth, OAuthAuth)):
            stack.append(getattr(item, "tokens", None))
        else:
            texts.append(_shown(str, item))
    return [text for text in texts if text]


_HEX_RUN = re.compile(rf"[0-9a-f]{{{_MIN_SECRET},}}")


class _Matcher:
    """Finds any of many secrets in a text fast: hex secrets (every credential a portal
    makes) by their windows in the text's hex runs, the others by substring."""

    def __init__(self, secrets: set[str]) -> None:
        self.size = len(secrets)
        self.hex: dict[int, set[str]] = {}
        self.other = []
        for secret in secrets:
            if _HEX_RUN.fullmatch(secret):
                self.hex.setdefault(len(secret), set()).add(secret)
            elif secret:
                self.other.append(secret)

    def __call__(self, text: str) -> bool:
        if any(secret in text for secret in self.other):
            return True
        for run in _HEX_RUN.findall(text):
            for size, group in self.hex.items():
                if any(run[i : i + size] in group for i in range(len(run) - size + 1)):
                    return True
        return False


class SecretWatch(logging.Handler):
    """Collects every record the SDK logs, and every object a user may print."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.secrets: set[str] = set()
        self.errors: list[BaseException] = []  # every BitrixError created during the test
        self.clients: list[bx.BitrixClient] = []
        self.auths: list[object] = []  # every client's auth (and so its OAuth tokens)
        self.images: list[bx.ProductImage] = []
        self.checked = 0  # objects whose text was scanned
        self._match: _Matcher | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("bitrix_images.testing"):
            return  # the embedded portal's own logs are the server's, not the SDK's
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)

    def learn(self, *values: object) -> None:
        """Register credentials (too-short fixture values are ignored)."""
        for value in values:
            if isinstance(value, str) and len(value) >= _MIN_SECRET:
                self.secrets.add(value)

    def learn_download_token(self, token: str) -> None:
        """A signed download token: its signature is in every form of it (raw, quoted)."""
        signature = token.rsplit("|", 1)[-1]
        self.learn(signature if len(signature) >= _MIN_SECRET else token)

    def _matcher(self) -> _Matcher:
        if self._match is None or self._match.size != len(self.secrets):
            self._match = _Matcher(self.secrets)
        return self._match

    def leaks(self) -> list[str]:
        match = self._matcher()
        return [line for line in self.lines if match(line)]

    def scan(self, *objects: object) -> list[str]:
        """The texts of *objects* that show a secret."""
        match = self._matcher()
        found = []
        for obj in objects:
            self.checked += 1
            found.extend(text[:300] for text in _text_of(obj) if match(text))
        return found

    def check(self, *objects: object) -> None:
        """Fail now if the str/repr of any of *objects* (or their causes) shows a secret."""
        leaks = self.scan(*objects)
        assert not leaks, f"secrets in str()/repr(): {leaks[:3]}"

    def final_leaks(self) -> list[str]:
        objects: list[object] = [*self.errors, *self.clients, *self.auths, *self.images]
        return self.leaks() + self.scan(*objects)


def _wrap(
    monkeypatch: pytest.MonkeyPatch,
    owner: type,
    name: str,
    after: Callable[[Any, Any, tuple[Any, ...]], None],
) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        after(self, result, args)
        return result

    monkeypatch.setattr(owner, name, wrapper)


def _install(watch: SecretWatch, monkeypatch: pytest.MonkeyPatch) -> None:
    """Teach *watch* every credential portals create, and record what users may print."""

    def portal_made(portal: FakePortal, _: object, __: tuple[Any, ...]) -> None:
        watch.learn(*secrets_of(portal))

    def tokens_issued(portal: FakePortal, _: object, __: tuple[Any, ...]) -> None:
        watch.learn(portal.access_token, portal.refresh_token)

    def download_token(_: object, token: str, __: tuple[Any, ...]) -> None:
        watch.learn_download_token(token)

    def error_made(error: BaseException, _: object, __: tuple[Any, ...]) -> None:
        watch.errors.append(error)

    def client_made(client: bx.BitrixClient, _: object, __: tuple[Any, ...]) -> None:
        watch.clients.append(client)

    def auth_made(auth: object, _: object, __: tuple[Any, ...]) -> None:
        watch.auths.append(auth)

    def image_made(_: object, image: bx.ProductImage, __: tuple[Any, ...]) -> None:
        if len(watch.images) < _IMAGES_CHECKED:
            watch.images.append(image)

    _wrap(monkeypatch, FakePortal, "__init__", portal_made)
    _wrap(monkeypatch, FakePortal, "_issue_tokens", tokens_issued)
    _wrap(monkeypatch, FakePortal, "_download_token", download_token)
    _wrap(monkeypatch, bx.BitrixError, "__init__", error_made)
    _wrap(monkeypatch, bx.BitrixClient, "__init__", client_made)
    _wrap(monkeypatch, Converter, "image", image_made)
    _wrap(monkeypatch, WebhookAuth, "__init__", auth_made)
    _wrap(monkeypatch, OAuthAuth, "__init__", auth_made)

    def images_made(_: object, images: list[bx.ProductImage], __: tuple[Any, ...]) -> None:
        # Listing builds a command's images in one call (Converter.images).
        watch.images.extend(images[: max(0, _IMAGES_CHECKED - len(watch.images))])

    _wrap(monkeypatch, Converter, "images", images_made)


@pytest.fixture(autouse=True)
def secret_watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretWatch]:
    """Log the SDK at DEBUG during every test and fail the test if a secret shows up."""
    watch = SecretWatch()
    _install(watch, monkeypatch)
    logger = logging.getLogger("bitrix_images")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(old_level)
    leaks = watch.final_leaks()
    _TOTALS.update(
        tests=1,
        secrets=len(watch.secrets),
        log_lines=len(watch.lines),
        errors=len(watch.errors),
        clients=len(watch.clients),
        images=len(watch.images),
        leaks=len(leaks),
    )
    assert not leaks, f"secrets in log records, messages or reprs: {leaks[:3]}"


# What the secret watch looked at over the session (shown at the end of a run).
_TOTALS: Counter[str] = Counter()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker of ``pytest -n`` (pytest-xdist) hands its totals to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["secret_watch"] = dict(_TOTALS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """The controller of ``pytest -n`` adds up what its workers' secret watches saw."""
    _TOTALS.update(getattr(node, "workeroutput", {}).get("secret_watch", {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TOTALS["tests"]:
        terminalreporter.write_line(
            "secret watch: {tests} tests, {secrets} credentials watched, {errors} SDK "
            "exceptions, {clients} clients, {images} images and {log_lines} log records "
            "scanned; {leaks} leaks".format(**_TOTALS)
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """An exception escaping a test (any type, xfail included) must not show a secret."""
    try:
        return (yield)
    except BaseException as exc:
        watch = getattr(item, "funcargs", {}).get("secret_watch")
        if isinstance(watch, SecretWatch):
            leaks = watch.scan(exc)
            if leaks:
                raise AssertionError(f"secrets in an escaping exception: {leaks[:3]}") from exc
        raise


@pytest.fixture(name="portal")
async def _portal(secret_watch: SecretWatch) -> AsyncIterator[FakePortal]:
    async with FakePortal(products=20, images_per_product=3, rate=None) as portal:
        secret_watch.secrets |= secrets_of(portal)
        yield portal


@pytest.fixture(name="client")
async def _client(portal: FakePortal) -> AsyncIterator[bx.BitrixClient]:
    async with bx.BitrixClient.from_webhook(
        portal.webhook_url, retry=FAST_RETRY, rate_limit=UNLIMITED
    ) as client:
        yield client


# --- the command line ---------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "served(**options): the FakePortal options of the `served` fixture"
    )


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[ThreadPortal]:
    """A portal in a background thread, for the command line (its ``asyncio.run``)."""
    marker = request.node.get_closest_marker("served")
    portal = ThreadPortal(**(marker.kwargs if marker is not None else {}))
    yield portal
    portal.close()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No portal from the environment, and a scratch folder as the working directory."""
    for name in CLI_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
