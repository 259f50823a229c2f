"""Installed in one step: the license, the package metadata, a lean `make demo` that says where
the command is, `make dist`, and CI checking the wheel as a user installs it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover -- Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")

MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="no make on this machine")


def make_plan(*targets: str) -> list[str]:
    """The commands `make TARGETS` would run on a fresh checkout (-B: as if nothing was built;
    -n: printed, not run)."""
    assert MAKE is not None
    done = subprocess.run(  # noqa: S603 -- make, on our own Makefile, printing only
        [MAKE, "-n", "-B", "PYTHON=python3", *targets],
        cwd=ROOT,
        # Not the flags and variables of a `make test` this may run under.
        env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.splitlines()


def test_the_license_is_mit_in_the_file_and_the_metadata() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the bitrix_images authors" in text
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    # An SPDX expression and license-files: PEP 639, which hatchling reads from 1.27 on.
    requires = PYPROJECT["build-system"]["requires"]
    assert requires == ["hatchling>=1.27"]


def test_build_is_a_pinned_dev_tool() -> None:
    assert any(
        dep.startswith("build") for dep in PYPROJECT["project"]["optional-dependencies"]["dev"]
    )
    pins = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    assert any(re.fullmatch(r"build==[\d.]+", line) for line in pins)


@needs_make
def test_make_demo_installs_the_runtime_only_and_says_where_the_command_is() -> None:
    plan = make_plan("demo")
    installs = [line.strip() for line in plan if "pip" in line and " install " in line]
    # Into its own venv (with the host's pip, or else the venv's own), the package alone: no
    # [test] extra, no pip upgrade.
    assert installs == [
        "python3 -m pip --python .venv-demo/bin/python install"
        " -q --disable-pip-version-check --no-compile -e .; \\",
        ".venv-demo/bin/python -m pip install -q --disable-pip-version-check --no-compile -e .; \\",
    ]
    assert not any("--upgrade pip" in line for line in plan)
    assert ".venv-demo/bin/bitrix-images mirror --demo ./demo-images" in plan
    assert "the command is .venv-demo/bin/bitrix-images" in plan[-1]


@needs_make
def test_make_dist_builds_sdist_and_wheel_and_ci_checks_the_wheel() -> None:
    plan = make_plan("wheel-check")
    assert ".venv/bin/python -m build --outdir dist ." in plan
    assert any(line.startswith(".ci/check-wheel ") for line in plan)
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "make test" in run
    assert "make wheel-check" in run
    check = (ROOT / ".ci" / "check-wheel").read_text(encoding="utf-8")
    assert "-m venv" in check
    assert "./venv/bin/bitrix-images --version" in check
    assert "./venv/bin/bitrix-images mirror --demo" in check


def test_the_readme_says_how_to_install() -> None:
    section = README.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    for command in (
        "$ pip install .",
        "$ pip install '.[redis]'",
        "$ pipx install .",
        "$ make dist",
    ):
        assert command in section
    assert "[LICENSE](LICENSE)" in section
    assert "`.venv-demo/bin/bitrix-images`" in README
