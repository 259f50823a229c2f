"""Every ```python block of README.md runs, against an embedded portal.

Conventions (documented at the end of the README): the placeholder webhook becomes the
portal's, the ``BITRIX_*`` OAuth variables point at the portal, ``BITRIX_REDIS_URL`` at a
test ``redis-server`` (for the blocks that use one), each block runs in a fresh
folder holding a ``cover.png``, and the ``test_*`` coroutines a block defines are awaited.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, running_redis
from support import PNG_HEAD, ThreadPortal

from bitrix_images import cli
from bitrix_images.testing import FakePortal

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8")
PLACEHOLDER = "https://example.bitrix24.com/rest/1/abc123/"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", TEXT, flags=re.DOTALL | re.MULTILINE)
# The smallest byte string both the SDK and the portal take for a PNG image.
COVER = PNG_HEAD + bytes(16)


@pytest.fixture
def served() -> Iterator[FakePortal]:
    portal = ThreadPortal(products=10, images_per_product=3, rate=2.0)
    yield portal.portal
    portal.close()


def test_readme_starts_with_the_two_commands() -> None:
    lines = TEXT.splitlines()
    assert lines[0] == "# bitrix_images"
    assert lines[1] == ""
    assert lines[2].strip()  # the one-line description
    assert lines[3:8] == ["", "```", "make demo", "make test", "```"]


def test_readme_has_the_required_sections() -> None:
    for heading in ("## Performance", "## Reliability", "## The command line", "## Errors"):
        assert f"\n{heading}\n" in TEXT
    assert "(benchmarks/RESULTS.md)" in TEXT
    for command in ("list", "get", "add", "delete", "fields", "mirror", "mirror --demo"):
        assert f"$ bitrix-images {command} " in TEXT or f"$ bitrix-images {command}\n" in TEXT
    for name in (cli.WEBHOOK_ENV, *cli.OAUTH_ENV, cli.OAUTH_URL_ENV):
        assert f"`{name}`" in TEXT or f"`{name}," in TEXT or f" `{name}`" in TEXT, name
    for error in ("AuthError", "AccessDenied", "NotFound", "RateLimited", "BatchError"):
        assert f"| `{error}`" in TEXT


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 5
    assert any(PLACEHOLDER in block for block in BLOCKS)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(
    index: int,
    served: FakePortal,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *,
    request: pytest.FixtureRequest,
) -> None:
    block = BLOCKS[index]
    if "RedisCoordinator" in block:  # the test Redis, started only for the blocks that use it
        monkeypatch.setenv("BITRIX_REDIS_URL", request.getfixturevalue("redis_server").url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cover.png").write_bytes(COVER)
    monkeypatch.setenv("BITRIX_CLIENT_ENDPOINT", str(served.client_endpoint))
    monkeypatch.setenv("BITRIX_ACCESS_TOKEN", served.access_token)
    monkeypatch.setenv("BITRIX_REFRESH_TOKEN", served.refresh_token)
    monkeypatch.setenv("BITRIX_CLIENT_ID", served.client_id)
    monkeypatch.setenv("BITRIX_CLIENT_SECRET", served.client_secret)
    monkeypatch.setenv("BITRIX_OAUTH_URL", str(served.oauth_url))
    oauth = "from_oauth" in block
    if oauth:
        served.expire_access_token()  # so that the block's on_token_refresh runs
    code = compile(
        block.replace(PLACEHOLDER, str(served.webhook_url)), f"README.md block {index}", "exec"
    )
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(code, namespace)  # noqa: S102 -- the README's own examples
    tests = [
        function
        for name, function in namespace.items()
        if name.startswith("test_") and inspect.iscoroutinefunction(function)
    ]
    for test in tests:
        asyncio.run(test())
    out = capsys.readouterr().out
    assert out or tests, "a README block should show something"
    if oauth:
        saved = (tmp_path / "bitrix-tokens.json").read_text()
        assert served.refresh_token in saved
        assert served.counters.refreshes == 1


# The blocks that are pytest tests, as a user copies them into their own project.
PYTEST_BLOCKS = [block for block in BLOCKS if re.search(r"^async def test_", block, re.MULTILINE)]


def test_readme_pytest_examples_run_as_written_outside_this_repository(tmp_path: Path) -> None:
    # A folder with no pyproject.toml, pytest.ini or conftest.py of ours (so pytest-asyncio is
    # in its default, strict mode), run by plain pytest in its own process, as a user would.
    assert len(PYTEST_BLOCKS) >= 2
    project = tmp_path / "their-project"
    project.mkdir()
    for index, block in enumerate(PYTEST_BLOCKS):
        (project / f"test_readme_{index}.py").write_text(block, encoding="utf-8")
    functions = sum(len(re.findall(r"^async def test_", b, re.MULTILINE)) for b in PYTEST_BLOCKS)
    root = README.parent
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "."],
        cwd=project,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"rootdir: {project}" in done.stdout
    assert f"{functions} passed" in done.stdout
    assert not (project / "conftest.py").exists()
