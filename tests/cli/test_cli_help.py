"""``--help`` that answers: every argument described, examples, the destructive flags marked,
the exit statuses, a "did you mean" for a mistyped option, and shell completion."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import ThreadPortal, run_cli

from bitrix_images.cli.parser import EXIT_STATUSES, SHELLS, build_parser
from bitrix_images.testing.__main__ import build_parser as portal_parser

pytestmark = pytest.mark.usefixtures("cli_env")

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _env(**extra: str) -> dict[str, str]:
    """This checkout's package first, whatever the working directory."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


COMMANDS = sorted(_commands())


def _undescribed(parser: argparse.ArgumentParser) -> list[str]:
    return [
        action.metavar or action.dest  # type: ignore[misc]
        for action in parser._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run_cli(capsys, *argv, "--help")
    assert (code, err) == (0, "")
    return " ".join(out.split())  # the words, whatever the terminal's width wrapped


@pytest.mark.parametrize("command", COMMANDS)
def test_every_argument_is_described(command: str) -> None:
    assert _undescribed(_commands()[command]) == []


def test_every_top_level_option_is_described() -> None:
    assert _undescribed(build_parser()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_two_or_three_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    examples = out.split("\nexamples:\n", 1)[1].splitlines()
    assert 2 <= len(examples) <= 3, examples
    for line in examples:
        assert line.startswith("  "), line
        assert f"bitrix-images {command}" in line, line


@pytest.mark.parametrize(
    ("argv", "marked"),
    [
        (("mirror",), "--prune DESTRUCTIVE: remove the files in DEST"),
        (("upload",), "--prune DESTRUCTIVE: delete on the portal"),
        (("add",), "DESTRUCTIVE: DETAIL_PICTURE and PREVIEW_PICTURE replace the product's"),
        (("delete",), "DESTRUCTIVE: remove an image from a product on the portal"),
    ],
)
def test_destructive_flags_are_marked(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], marked: str
) -> None:
    assert marked in _help(capsys, *argv)


def test_upload_help_names_the_prefixes_and_the_formats(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(capsys, "upload")
    assert "detail@NAME becomes the product's DETAIL_PICTURE" in text
    assert "preview@NAME its PREVIEW_PICTURE" in text
    assert "JPEG, PNG, GIF, WebP or BMP" in text


def test_exit_statuses_in_the_help_and_the_readme(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    table = out.split("\nexit status:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in table] == ["0", "1", "2", "130", "143"]
    readme = README.read_text(encoding="utf-8")
    for status, meaning in EXIT_STATUSES:
        assert f"| {status} | {meaning} |" in readme


def test_a_mistyped_option_names_the_command_and_the_nearest_option(
    served: ThreadPortal, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "mirror", "out", "--product", "1", "--prnue")
    assert (code, out) == (2, "")
    assert err.startswith("usage: bitrix-images mirror ")
    assert err.rstrip().endswith(
        "bitrix-images mirror: error: unrecognized arguments: --prnue (did you mean --prune?)"
    )
    assert served.portal.counters.requests == 0


def test_an_unknown_word_without_a_near_option_is_named_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run_cli(capsys, "upload", "src", "--zzzzzz")
    assert code == 2
    assert err.startswith("usage: bitrix-images upload ")
    assert err.rstrip().endswith("error: unrecognized arguments: --zzzzzz")


def test_the_test_portal_help_is_complete() -> None:
    parser = portal_parser()
    assert _undescribed(parser) == []
    for action in parser._actions:
        valued = action.default not in (None, True, False, argparse.SUPPRESS)
        if valued and action.choices is None:
            assert "default" in (action.help or ""), action.dest
    help = parser.format_help()
    assert "\nexamples:\n" in help
    assert "\nexit status:" in help


def test_the_test_portal_help_runs_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bitrix_images.testing", "--help"],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0
    assert "--operating-limit S" in done.stdout
    assert "examples:" in done.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_prints_the_script_without_a_portal(
    capsys: pytest.CaptureFixture[str], shell: str
) -> None:
    code, out, err = run_cli(capsys, "completion", shell)
    assert (code, err) == (0, "")
    assert "bitrix-images" in out
    assert "_ARGCOMPLETE" in out


def test_completion_of_an_unknown_shell_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run_cli(capsys, "completion", "cmd")
    assert code == 2
    assert "invalid choice: 'cmd'" in err


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("bitrix-images mir", {"mirror"}),
        ("bitrix-images mirror out --pr", {"--product", "--products-file", "--prune"}),
        ("bitrix-images add 1 x.png --type D", {"DETAIL_PICTURE"}),
        ("bitrix-images completion z", {"zsh"}),
    ],
)
def test_the_shell_asks_and_the_parser_answers(
    tmp_path: Path, line: str, expected: set[str]
) -> None:
    # What the completion scripts do on Tab: run the command with argcomplete's variables.
    answer = tmp_path / "answer"
    env = _env(
        _ARGCOMPLETE="1",
        _ARGCOMPLETE_STDOUT_FILENAME=str(answer),
        COMP_LINE=line,
        COMP_POINT=str(len(line)),
    )
    done = subprocess.run(
        [sys.executable, "-m", "bitrix_images"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    words = set(re.split(r"[\x0b\s]+", answer.read_text().strip()))
    assert words == expected
