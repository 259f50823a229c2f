"""The OAuth token file: written atomically (0600, fsynced), checked before any refresh,
written through a symlink, and never dropped when it cannot be written (real files in a tmp
dir; the CLI against the embedded portal on loopback)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yarl
from support import ThreadPortal, assert_one_error_line, ndjson, oauth_env, run_cli

from bitrix_images import OAuthTokens
from bitrix_images.cli import tokenfile as _tokenfile
from bitrix_images.testing import FakePortal

pytestmark = pytest.mark.usefixtures("cli_env")

TOKENS = OAuthTokens(
    access_token="access-token-1",
    refresh_token="refresh-token-1",
    expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    client_endpoint=yarl.URL("https://portal.example.com/rest/"),
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_write_then_read(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    assert _tokenfile.write_tokens(path, TOKENS) == path
    assert mode(path) == 0o600
    assert _tokenfile.read_tokens(path) == {
        "BITRIX_ACCESS_TOKEN": "access-token-1",
        "BITRIX_REFRESH_TOKEN": "refresh-token-1",
        "BITRIX_CLIENT_ENDPOINT": "https://portal.example.com/rest/",
        "expires_at": "2030-01-01T00:00:00+00:00",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]


def test_an_existing_world_readable_file_becomes_0600(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{}")
    path.chmod(0o644)
    _tokenfile.write_tokens(path, TOKENS)
    assert mode(path) == 0o600


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"access_token": 1}',
        json.dumps(
            {
                "access_token": 1,
                "refresh_token": "r",
                "client_endpoint": "https://portal.example.com/rest/",
                "expires_at": "2030-01-01T00:00:00+00:00",
            }
        ),
    ],
)
def test_read_refuses_other_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(text)
    with pytest.raises(_tokenfile.TokenFileError, match="not a token file written by me"):
        _tokenfile.read_tokens(path, writer="me")


def test_a_symlinked_token_file_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "secrets" / "tokens.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = tmp_path / "tokens.json"
    link.symlink_to(real)
    assert _tokenfile.write_tokens(link, TOKENS) == real
    assert link.is_symlink()
    assert _tokenfile.read_tokens(link)["BITRIX_REFRESH_TOKEN"] == "refresh-token-1"
    assert mode(real) == 0o600
    # The temporary file was made beside the target, and is gone.
    assert [p.name for p in real.parent.iterdir()] == ["tokens.json"]


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    real = tmp_path / "tokens-real.json"
    link = tmp_path / "tokens.json"
    link.symlink_to(real)
    _tokenfile.check_writable(link)
    _tokenfile.write_tokens(link, TOKENS)
    assert link.is_symlink()
    assert json.loads(real.read_text())["access_token"] == "access-token-1"


def test_without_following_a_planted_link_is_replaced_not_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = tmp_path / "rescued.json"
    planted.symlink_to(victim)
    assert _tokenfile.write_tokens(planted, TOKENS, follow_symlinks=False) == planted
    assert victim.read_text() == "precious"
    assert not planted.is_symlink()
    assert mode(planted) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    # A directory that is not empty cannot be replaced by a file: rename(2) fails for real.
    path = tmp_path / "tokens.json"
    path.mkdir()
    (path / "keep").write_text("x")
    with pytest.raises(IsADirectoryError):
        _tokenfile.write_tokens(path, TOKENS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json"]
    assert (path / "keep").read_text() == "x"


def test_check_writable(tmp_path: Path) -> None:
    _tokenfile.check_writable(tmp_path / "tokens.json")  # a new file in a writable directory
    (tmp_path / "tokens.json").write_text("{}")
    _tokenfile.check_writable(tmp_path / "tokens.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json"]  # the probe is gone

    with pytest.raises(_tokenfile.TokenFileError, match="no such directory"):
        _tokenfile.check_writable(tmp_path / "nonexistent-dir" / "tokens.json")
    with pytest.raises(_tokenfile.TokenFileError, match="is a directory"):
        _tokenfile.check_writable(tmp_path)
    with pytest.raises(_tokenfile.TokenFileError, match="cannot save OAuth tokens to /proc"):
        _tokenfile.check_writable(Path("/proc/self/tokens.json"))  # even root cannot
    (tmp_path / "plain").write_text("")
    with pytest.raises(_tokenfile.TokenFileError, match="no such directory"):
        _tokenfile.check_writable(tmp_path / "plain" / "tokens.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_check_writable_read_only_directory(tmp_path: Path) -> None:  # pragma: no cover
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(_tokenfile.TokenFileError, match="cannot save OAuth tokens"):
            _tokenfile.check_writable(folder / "tokens.json")
    finally:
        folder.chmod(0o700)


def test_save_falls_back_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.mkdir()
    (path / "keep").write_text("x")
    written, error = _tokenfile.save_tokens(path, TOKENS)
    assert isinstance(error, OSError)
    assert written.parent == tmp_path
    assert written.name.startswith("tokens.json.")
    assert written.name.endswith(".rescued.json")
    assert _tokenfile.read_tokens(written)["BITRIX_REFRESH_TOKEN"] == "refresh-token-1"
    assert mode(written) == 0o600


def test_save_falls_back_to_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    written, error = _tokenfile.save_tokens(tmp_path / "gone" / "tokens.json", TOKENS)
    assert isinstance(error, FileNotFoundError)
    assert written.parent == home
    assert _tokenfile.read_tokens(written)["BITRIX_ACCESS_TOKEN"] == "access-token-1"


def test_save_raises_when_no_place_is_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "no-home"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-tmp"))
    with pytest.raises(FileNotFoundError):
        _tokenfile.save_tokens(tmp_path / "gone" / "tokens.json", TOKENS)


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def expired(served: ThreadPortal, monkeypatch: pytest.MonkeyPatch) -> FakePortal:
    """The portal of the OAuth variables, its access token expired: the next call refreshes."""
    oauth_env(monkeypatch, served.portal)
    served.call(served.portal.expire_access_token)
    return served.portal


def test_an_unwritable_token_file_fails_before_any_request(
    expired: FakePortal,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    portal = expired
    before = portal.counters.requests
    tokens = tmp_path / "nonexistent-dir" / "tokens.json"
    code, _, err = run_cli(capsys, "list", "1", "--token-file", str(tokens))
    assert code == 1
    assert "no such directory" in assert_one_error_line(err, portal.refresh_token)
    # Nothing was sent, so the portal did not rotate the pair: the environment's still works.
    assert portal.counters.requests == before
    assert portal.counters.refreshes == 0


def test_the_cli_writes_through_a_symlinked_token_file(
    expired: FakePortal,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    portal = expired
    real = tmp_path / "vault" / "tokens.json"
    real.parent.mkdir()
    link = tmp_path / "tokens.json"
    link.symlink_to(real)
    code, out, err = run_cli(capsys, "list", "1", "--token-file", str(link))
    assert (code, err) == (0, "")
    assert len(ndjson(out)) == 3
    assert link.is_symlink()
    assert json.loads(real.read_text())["refresh_token"] == portal.refresh_token


def test_the_cli_rescues_tokens_it_cannot_save(
    expired: FakePortal,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    portal = expired
    folder = tmp_path / "state"
    folder.mkdir()
    tokens = folder / "tokens.json"
    # Writable when checked, gone when the refreshed pair is saved (an unmount, a cleaner).
    original = _tokenfile.write_tokens
    calls: list[Path] = []

    def remove_folder_first(path: Path, new: OAuthTokens, **options: bool) -> Path:
        if not calls:
            folder.rmdir()
        calls.append(path)
        return original(path, new, **options)

    monkeypatch.setattr(_tokenfile, "write_tokens", remove_folder_first)
    monkeypatch.setenv("HOME", str(tmp_path))
    code, out, err = run_cli(capsys, "list", "1", "--token-file", str(tokens))
    assert code == 1  # done, but the next run needs a hand first
    assert len(ndjson(out)) == 3
    assert "could not save the refreshed OAuth tokens" in err
    assert f"the refreshed OAuth tokens are in {calls[-1]}, not {tokens}" in err
    assert portal.refresh_token not in err
    rescued = calls[-1]
    assert str(rescued) in err
    assert rescued.parent == tmp_path
    assert json.loads(rescued.read_text())["refresh_token"] == portal.refresh_token
