"""
W8: ``bitrix-images mirror --iblock`` of 100 products x 3 images through the command line,
against a portal process with the cloud's default bucket (2 requests a second, 50 at once).

    python -m benchmarks --only W8 [--quick]      (the section "W8" of RESULTS.md)

Three cases, each a real ``python -m bitrix_images mirror DEST --iblock 14`` subprocess
(``--via auto``, the default) timed from start to exit:

* public: ``/upload/`` served to anonymous visitors (the portal's default);
* a second run into the same DEST: every file is in place, none is fetched;
* closed: ``/upload/`` answers 403 (``--private-files``), so every file comes through REST.

The portal runs in its own process (this module's ``portal`` mode, a ``FakePortal`` that
answers ``counters`` and ``files`` on stdin): REST requests and public file answers are the
portal's counts; "exact" compares every file in DEST with the portal's bytes (SHA-256).
The REST bound is what the bucket allows: ``max(0, requests - 50) / 2`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from . import write_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

SCALES = {
    "full": {"products": 100, "images": 3},
    "quick": {"products": 20, "images": 3},
}
RATE, BURST = 2.0, 50
MANIFEST = ".bitrix-images.sqlite"


class _Portal:
    """The portal process: its webhook URL, and its counters and files on request."""

    def __init__(self, products: int, images: int, *, private: bool) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "benchmarks._w8", "portal"),
                *("--products", str(products), "--images", str(images)),
                *(("--private-files",) if private else ()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self.ask("url")["url"]

    def ask(self, command: str) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None  # the pipes asked for above
        assert stdout is not None
        if command != "url":
            stdin.write(command + "\n")
            stdin.flush()
        answer: dict[str, Any] = json.loads(stdout.readline())
        return answer

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.process.wait(timeout=30)

    def __enter__(self) -> _Portal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mirror(url: str, dest: Path) -> tuple[float, str]:
    """One CLI run; its wall time and its summary line."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "bitrix_images", "mirror", str(dest), "--iblock", "14"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
        env={**os.environ, "BITRIX_WEBHOOK_URL": url},
    )
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"W8 mirror failed: {out.stderr[-2000:]}")
    return wall, out.stdout.strip().splitlines()[-1]


def _exact(dest: Path, expected: dict[str, str]) -> bool:
    found = {
        path.relative_to(dest).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in dest.rglob("*")
        if path.is_file() and not path.name.startswith(MANIFEST)
    }
    return found == expected


def _case(portal: _Portal, dest: Path, expected: dict[str, str]) -> dict[str, Any]:
    portal.ask("reset")
    wall, summary = _mirror(portal.url, dest)
    counts = portal.ask("counters")
    requests = counts["requests"]
    return {
        "wall": wall,
        "requests": requests,
        "files": counts["files"],
        "downloads": counts["downloads"],
        "bound": max(0, requests - BURST) / RATE,
        "exact": _exact(dest, expected),
        "summary": summary,
    }


def measure(scale: dict[str, int], log: Callable[[str], None]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="w8-") as tmp:
        root = Path(tmp)
        with _Portal(scale["products"], scale["images"], private=False) as portal:
            expected = portal.ask("files")["files"]
            log(f"W8: public /upload/, {scale['products']} x {scale['images']} images")
            rows["public /upload/"] = _case(portal, root / "a", expected)
            log("W8: a second run into the same folder")
            rows["second run"] = _case(portal, root / "a", expected)
        with _Portal(scale["products"], scale["images"], private=True) as portal:
            log("W8: closed /upload/ (403): every file through REST")
            rows["closed /upload/"] = _case(portal, root / "b", expected)
    return {
        "scale": scale,
        "rows": rows,
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def render(report: dict[str, Any]) -> str:
    scale = report["scale"]
    lines = [
        f"### W8: `bitrix-images mirror DEST --iblock 14` of {scale['products']} products x "
        f"{scale['images']} images, portal bucket {RATE:g}/s burst {BURST}, `--via auto`",
        "",
        "| case | wall s | REST requests | of them downloads | public files | REST bound s "
        "| wall / bound | exact |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, row in report["rows"].items():
        ratio = f"{row['wall'] / row['bound']:.2f}" if row["bound"] else "-"
        lines.append(
            f"| {label} | {row['wall']:.2f} | {row['requests']} | {row['downloads']} | "
            f"{row['files']} | {row['bound']:.1f} | {ratio} | {'yes' if row['exact'] else 'NO'} |"
        )
    public, second, closed = (
        report["rows"][k] for k in ("public /upload/", "second run", "closed /upload/")
    )
    met = {
        "public: <= 3 s wall, <= 6 REST requests, exact": public["wall"] <= 3
        and public["requests"] <= 6
        and public["exact"],
        "second run: 0 files fetched, <= 5 REST requests": second["files"] == 0
        and second["downloads"] == 0
        and second["requests"] <= 5,
        "closed: exact, <= 1.05x the REST bound": closed["exact"]
        and closed["wall"] <= 1.05 * closed["bound"],
    }
    lines += ["", "Targets (issue 20):", ""]
    lines += [f"- {target}: {'met' if ok else 'MISSED'}" for target, ok in met.items()]
    lines += ["", "The summary lines:", ""]
    lines += [f"- {label}: `{row['summary']}`" for label, row in report["rows"].items()]
    lines += ["", f"({report['generated']}.)", ""]
    return "\n".join(lines)


def write(table: str) -> None:
    write_section(RESULTS, "W8", "Mirror through public file links (W8)", table)


def main(*, quick: bool, write_results: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Run W8, print its table, and (unless told not to) write it into RESULTS.md."""
    report = measure(SCALES["quick" if quick else "full"], log)
    table = render(report)
    print(table)
    if write_results and not quick:
        write(table)
        log(f"wrote W8 into {RESULTS}")
    return report


# --- the portal process ---------------------------------------------------------------------


def _say(out: IO[str], payload: dict[str, Any]) -> None:
    out.write(json.dumps(payload) + "\n")
    out.flush()


async def _serve(products: int, images: int, private: bool) -> None:
    from bitrix_images.testing import FakePortal  # the portal process only

    async with FakePortal(
        products=products,
        images_per_product=images,
        rate=RATE,
        burst=BURST,
        public_files=not private,
    ) as portal:
        _say(sys.stdout, {"url": str(portal.webhook_url)})
        while line := (await asyncio.to_thread(sys.stdin.readline)).strip():
            counters = portal.counters
            if line == "reset":
                counters.reset()
                _say(sys.stdout, {"ok": True})
            elif line == "counters":
                payload = {
                    "requests": counters.requests,
                    "downloads": counters.by_method["download"],
                    "files": counters.files,
                }
                _say(sys.stdout, payload)
            elif line == "files":
                files = {
                    f"{pid}/{image.name}": hashlib.sha256(image.content).hexdigest()
                    for pid in range(1, products + 1)
                    for image in portal.catalog.images(pid)
                }
                _say(sys.stdout, {"files": files})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks._w8")
    parser.add_argument("mode", choices=("portal",))
    parser.add_argument("--products", type=int, required=True)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--private-files", action="store_true")
    args = parser.parse_args()
    asyncio.run(_serve(args.products, args.images, args.private_files))
