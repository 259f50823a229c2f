"""
``python -m benchmarks [--quick] [--write-results] [--runs N] [--only W1,W2,...]``

Starts one embedded portal process per workload, runs every client in a fresh process of
its own against it, reads the portal's request counters after each run, and reports the
median of the runs with ratios to the raw-aiohttp floor and to fast-bitrix24. The full run
rewrites the generated part of ``benchmarks/RESULTS.md``; ``--quick`` leaves it alone unless
``--write-results`` is given. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.metadata
import json
import math
import os
import platform
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
BEGIN = "<!-- BEGIN GENERATED: python -m benchmarks --write-results -->"
END = "<!-- END GENERATED -->"

W2_RATE = 20.0
W2_BURST = 50
W4_CONCURRENCY = 16
W4_IMAGE_SIZE = 65536
NAIVE_CONCURRENCY = 8

SCALES: dict[str, dict[str, Any]] = {
    "full": {
        "runs": 3,
        "w1_products": 10_000,
        "w2_products": 10_000,
        "w3_per": 50,
        "w3_small": 2_000,  # x 50 = 100,000 images
        "w3_large": 20_000,  # x 50 = 1,000,000 images
        "w4_images": 2_000,
        "client_timeout": 900.0,
    },
    "quick": {
        "runs": 1,
        "w1_products": 2_000,
        "w2_products": 4_000,  # 80 batches: 30 past the burst, a 1.5 s bound at 20/s
        "w3_per": 50,
        # 50,000 and 100,000 images: the portal spends ~20-50 us serving an image, so
        # 100k + 200k (+ fast-bitrix24 at 200k) alone took ~40 s of the 60 s budget.
        "w3_small": 1_000,
        "w3_large": 2_000,
        "w4_images": 300,
        "client_timeout": 45.0,
    },
}

_LIVE: list[subprocess.Popen[str]] = []


def _cleanup() -> None:
    """Stop every portal process still running (atexit and signal handlers)."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        if proc in _LIVE:
            _LIVE.remove(proc)


def _on_signal(signum: int, frame: object) -> None:
    _cleanup()
    sys.exit(128 + signum)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


class Portal:
    """A ``benchmarks._portal_proc`` child, spoken to in JSON lines."""

    def __init__(self, name: str, *, products: int, per: int, **options: Any) -> None:
        self.name = name
        self.products = products
        self.per = per
        args = [
            sys.executable,
            "-m",
            "benchmarks._portal_proc",
            "--products",
            str(products),
            "--images-per-product",
            str(per),
        ]
        for key, value in options.items():
            if value is not None:
                args += [f"--{key.replace('_', '-')}", str(value)]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=_env(),
        )
        _LIVE.append(self.proc)
        self.url = str(self._read(30.0)["url"])

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError(f"portal {self.name}: no answer in {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"portal {self.name} exited (code {self.proc.poll()})")
        return dict(json.loads(line))

    def ask(self, cmd: str, timeout: float = 60.0, **extra: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **extra}) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.ask("quit", timeout=5.0)
        except (OSError, TimeoutError, RuntimeError, ValueError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc in _LIVE:
            _LIVE.remove(self.proc)

    def __enter__(self) -> Portal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_client(
    portal: Portal,
    client: str,
    workload: str,
    *,
    products: int,
    timeout: float,
    rate: float | None = None,
    burst: int = 50,
    concurrency: int = 8,
    images: int = 0,
    out_root: str | None = None,
) -> dict[str, Any]:
    """One client process against *portal*; its JSON line merged with the portal's counters."""
    expected = portal.ask("expected", products=products, timeout=120.0)
    reset = portal.ask("reset")
    out_dir = tempfile.mkdtemp(prefix="bench-dl-", dir=out_root) if workload == "download" else None
    args = [
        sys.executable,
        "-m",
        "benchmarks._run",
        client,
        workload,
        portal.url,
        "--products",
        str(products),
        "--burst",
        str(burst),
        "--concurrency",
        str(concurrency),
        "--images",
        str(images),
    ]
    if rate is not None:
        args += ["--rate", str(rate)]
    if out_dir is not None:
        args += ["--out-dir", out_dir]
        # Flush the page cache's dirty pages first: otherwise the previous client's 128 MB
        # of files are written back during this client's run and billed to it (measured:
        # the same client swung from 0.64x to 1.04x of raw with the order of the runs).
        os.sync()
    started = time.perf_counter()
    try:
        done = subprocess.run(
            args,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=_env(),
        )
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        result: dict[str, Any] = (
            json.loads(lines[-1]) if lines else {"error": done.stderr.strip()[-500:]}
        )
        if "error" in result and done.stderr:
            result["stderr"] = done.stderr.strip()[-800:]
    except subprocess.TimeoutExpired:
        result = {"error": f"timed out after {timeout} s"}
    result["process_seconds"] = round(time.perf_counter() - started, 3)
    counters = portal.ask("counters")
    result["requests"] = counters["requests"]
    result["by_method"] = counters["by_method"]
    result["rate_limited"] = counters["rate_limited"]
    result["portal_max_in_flight"] = counters["max_in_flight"]
    result["portal_cpu"] = round(counters["cpu"] - reset["cpu"], 4)
    if workload == "download":
        expected_count = images
        result["correct"] = result.get("count") == expected_count
        if out_dir is not None:
            files = list(Path(out_dir).iterdir())
            sizes = [f.stat().st_size for f in files]
            result["files"] = len(files)
            result["bytes"] = sum(sizes)
            result["correct"] = bool(
                result["correct"]
                and len(files) == images
                and all(s >= W4_IMAGE_SIZE * 0.9 for s in sizes)
            )
            shutil.rmtree(out_dir, ignore_errors=True)
    else:
        result["expected"] = expected
        result["correct"] = all(result.get(k) == expected[k] for k in ("count", "sum", "sumsq"))
    return result


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the runs of one client in one workload."""
    keys = (
        "wall",
        "cpu",
        "rss_peak_mb",
        "rss_base_mb",
        "requests",
        "rate_limited",
        "ctx_switches",
        "process_seconds",
    )
    out: dict[str, Any] = {k: _median(runs, k) for k in keys}
    out["portal_cpu"] = _median(runs, "portal_cpu")
    out["count"] = runs[0].get("count") if runs else None
    out["runs"] = len(runs)
    out["correct"] = bool(runs) and all(r.get("correct") for r in runs)
    out["errors"] = sorted({r["error"] for r in runs if r.get("error")})
    out["walls"] = [r.get("wall") for r in runs]
    downloads = [r.get("by_method", {}).get("download") for r in runs]
    if any(downloads):
        out["downloads"] = statistics.median([d or 0 for d in downloads])
    if out["count"] and out["cpu"] is not None:
        out["cpu_us_per_image"] = out["cpu"] / out["count"] * 1e6
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def execute(scale: dict[str, Any], only: set[str], log: Any) -> dict[str, Any]:
    """Run the workloads; return ``{workload: {label: summary}}`` and the raw runs."""
    runs_n = scale["runs"]
    timeout = scale["client_timeout"]
    results: dict[str, Any] = {}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def record(workload: str, label: str, result: dict[str, Any]) -> None:
        raw.setdefault(workload, {}).setdefault(label, []).append(result)
        flag = "ok" if result.get("correct") else f"WRONG {result.get('error', '')}"
        log(
            f"  {workload} {label:<22} wall {result.get('wall', '-'):>8} s  "
            f"cpu {result.get('cpu', '-'):>7} s  rss {result.get('rss_peak_mb', '-'):>7} MB  "
            f"req {result['requests']:>5}  503 {result['rate_limited']:>4}  {flag}"
        )

    if "W1" in only:
        products = scale["w1_products"]
        log(f"W1: {products} products x 3 images, no portal limit")
        with Portal("W1", products=products, per=3) as portal:
            for _ in range(runs_n):
                for client in (
                    "bitrix_images",
                    "naive",
                    "fast_bitrix24",
                    "b24pysdk",
                    "raw_aiohttp",
                ):
                    conc = NAIVE_CONCURRENCY if client == "naive" else 8
                    res = run_client(
                        portal,
                        client,
                        "list",
                        products=products,
                        timeout=timeout,
                        concurrency=conc,
                    )
                    record("W1", client, res)

    if "W2" in only:
        products = scale["w2_products"]
        log(f"W2: {products} products x 3 images, portal bucket {W2_RATE}/s burst {W2_BURST}")
        with Portal("W2", products=products, per=3, rate=W2_RATE, burst=W2_BURST) as portal:
            for _ in range(runs_n):
                for client in ("bitrix_images", "fast_bitrix24", "raw_aiohttp"):
                    res = run_client(
                        portal,
                        client,
                        "list",
                        products=products,
                        timeout=timeout,
                        rate=W2_RATE,
                        burst=W2_BURST,
                    )
                    record("W2", client, res)

    if "W3" in only:
        per = scale["w3_per"]
        small, large = scale["w3_small"], scale["w3_large"]
        log(f"W3: streaming {small * per} and {large * per} images ({per} per product)")
        with Portal("W3", products=large, per=per) as portal:
            for _ in range(runs_n):
                for label, client, products in (
                    (f"bitrix_images@{small * per}", "bitrix_images", small),
                    (f"bitrix_images@{large * per}", "bitrix_images", large),
                    (f"fast_bitrix24@{large * per}", "fast_bitrix24", large),
                    (f"raw_aiohttp@{large * per}", "raw_aiohttp", large),
                ):
                    res = run_client(portal, client, "list", products=products, timeout=timeout)
                    record("W3", label, res)

    if "W4" in only:
        images = scale["w4_images"]
        products = -(-images // 2)
        log(f"W4: downloading {images} images of {W4_IMAGE_SIZE} bytes, {W4_CONCURRENCY} at once")
        # On the local disk (the temp directory) and, where there is one, on a tmpfs, where an
        # fsync costs nothing and what is left is the SDK's own cost per file.
        roots: list[tuple[str, str | None]] = [("", None)]
        if _is_tmpfs(TMPFS):
            roots.append(("@tmpfs", TMPFS))
        with Portal("W4", products=products, per=2, image_size=W4_IMAGE_SIZE) as portal:
            for _ in range(runs_n):
                for suffix, root in roots:
                    for client in (
                        "bitrix_images",
                        "raw_aiohttp_fsync",
                        "bitrix_images_fast",
                        "raw_aiohttp",
                    ):
                        res = run_client(
                            portal,
                            client,
                            "download",
                            products=products,
                            timeout=timeout,
                            concurrency=W4_CONCURRENCY,
                            images=images,
                            out_root=root,
                        )
                        record("W4", client + suffix, res)

    for workload, by_label in raw.items():
        results[workload] = {label: summarize(runs) for label, runs in by_label.items()}
    return {"summary": results, "raw": raw}


TMPFS = "/dev/shm"


def _is_tmpfs(path: str) -> bool:
    """Whether *path* is a writable tmpfs mount (Linux, /proc/mounts)."""
    try:
        with open("/proc/mounts") as mounts:
            found = any(
                line.split()[1:3] == [path, "tmpfs"] for line in mounts if len(line.split()) > 2
            )
    except OSError:
        return False
    return found and os.access(path, os.W_OK)


def derive(summary: dict[str, Any], scale: dict[str, Any]) -> dict[str, Any]:
    """Ratios and the targets, each with its measured value and verdict."""
    targets: dict[str, Any] = {}
    w1 = summary.get("W1", {})
    if w1:
        bi, fb = w1.get("bitrix_images", {}), w1.get("fast_bitrix24", {})
        want = math.ceil(scale["w1_products"] / 50)
        targets["W1_requests"] = {
            "target": f"== ceil(products/50) = {want}",
            "measured": bi.get("requests"),
            "met": bi.get("requests") == want,
        }
        ratio = _ratio(bi.get("cpu_us_per_image"), fb.get("cpu_us_per_image"))
        targets["W1_cpu_per_image_vs_fast_bitrix24"] = {
            "target": "<= 0.8x fast-bitrix24",
            "measured": ratio,
            "met": ratio is not None and ratio <= 0.8,
        }
        raw = w1.get("raw_aiohttp", {})
        ratio = _ratio(bi.get("cpu_us_per_image"), raw.get("cpu_us_per_image"))
        targets["W1_cpu_per_image_vs_raw"] = {
            "target": "<= 1.2x raw aiohttp",
            "measured": ratio,
            "met": ratio is not None and ratio <= 1.2,
        }
    w2 = summary.get("W2", {})
    if w2:
        needed = math.ceil(scale["w2_products"] / 50)
        bound = max(0.0, (needed - W2_BURST) / W2_RATE)
        for s in w2.values():
            s["bound"] = bound
            s["wall_vs_bound"] = _ratio(s.get("wall"), bound) if bound else None
        bi = w2.get("bitrix_images", {})
        ratio = bi.get("wall_vs_bound")
        targets["W2_wall_vs_bound"] = {
            "target": f"<= 1.05x bound ({bound:.2f} s)",
            "measured": ratio,
            "met": ratio is not None and ratio <= 1.05,
        }
        targets["W2_503s"] = {
            "target": "0",
            "measured": bi.get("rate_limited"),
            "met": bi.get("rate_limited") == 0,
        }
    w3 = summary.get("W3", {})
    if w3:
        per = scale["w3_per"]
        small = w3.get(f"bitrix_images@{scale['w3_small'] * per}", {})
        large = w3.get(f"bitrix_images@{scale['w3_large'] * per}", {})
        peak = large.get("rss_peak_mb")
        growth = _ratio_diff(peak, small.get("rss_peak_mb"))
        targets["W3_peak_rss_large"] = {
            "target": f"< 80 MB at {scale['w3_large'] * per} images",
            "measured": peak,
            "met": peak is not None and peak < 80,
        }
        targets["W3_rss_growth"] = {
            "target": f"< 10 MB from {scale['w3_small'] * per} to {scale['w3_large'] * per}",
            "measured": growth,
            "met": growth is not None and growth < 10,
        }
        ours = large.get("cpu_us_per_image")
        for peer, name, bound in (
            ("fast_bitrix24", "fast-bitrix24", 1.0),
            ("raw_aiohttp", "raw aiohttp", 1.4),
        ):
            ratio = _ratio(
                ours, w3.get(f"{peer}@{scale['w3_large'] * per}", {}).get("cpu_us_per_image")
            )
            targets[f"W3_cpu_per_image_vs_{peer}"] = {
                "target": f"<= {bound}x {name} at {scale['w3_large'] * per} images",
                "measured": ratio,
                "met": ratio is not None and ratio <= bound,
            }
    w4 = summary.get("W4", {})
    if w4:
        for s in w4.values():
            if s.get("wall"):
                s["images_per_s"] = scale["w4_images"] / s["wall"]
                s["mb_per_s"] = scale["w4_images"] * W4_IMAGE_SIZE / 2**20 / s["wall"]
        for suffix, where in (("", "local disk"), ("@tmpfs", "tmpfs")):
            for client, floor, bound, what, name in (
                (
                    "bitrix_images",
                    "raw_aiohttp_fsync",
                    0.9,
                    "the default download() (durable) vs raw aiohttp fsyncing each file",
                    "W4_throughput_vs_raw_fsync",
                ),
                (
                    "bitrix_images_fast",
                    "raw_aiohttp",
                    0.95,
                    "download(durable=False): atomic, no fsync, vs plain raw aiohttp",
                    "W4_throughput_vs_raw_not_durable",
                ),
            ):
                raw = w4.get(floor + suffix, {}).get("images_per_s")
                if raw is None:
                    continue
                ratio = _ratio(w4.get(client + suffix, {}).get("images_per_s"), raw)
                targets[name + suffix.replace("@", "_")] = {
                    "target": f">= {bound}x on {where}, {what}",
                    "measured": ratio,
                    "met": ratio is not None and ratio >= bound,
                }
    ours = [
        s
        for w in summary.values()
        for label, s in w.items()
        if label.startswith(("bitrix_images", "naive"))
    ]
    targets["bitrix_images_correct"] = {
        "target": "every bitrix_images run: image count and id checksum equal the catalog's",
        "measured": bool(ours) and all(s.get("correct") for s in ours),
        "met": bool(ours) and all(s.get("correct") for s in ours),
    }
    failed = sorted(
        f"{w}:{label}"
        for w, by in summary.items()
        for label, s in by.items()
        if not s.get("correct")
    )
    targets["peers_failed"] = {
        "target": "(reported, not a target) peer runs that did not return the catalog",
        "measured": ", ".join(failed) or "none",
        "met": None,
    }
    return targets


def _ratio_diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def environment() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "bitrix_images"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "?", ""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "machine": f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()}",
        "python": platform.python_version(),
        "commit": commit + (" (bitrix_images/ modified)" if dirty else ""),
        "versions": {
            n: _version(n)
            for n in (
                "bitrix_images",
                "aiohttp",
                "cattrs",
                "attrs",
                "yarl",
                "orjson",
                "fast-bitrix24",
                "b24pysdk",
                "requests",
            )
        },
    }


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render(report: dict[str, Any]) -> str:
    env, summary, targets = report["environment"], report["summary"], report["targets"]
    scale = report["scale"]
    lines = [
        f"Mode: **{report['mode']}** ({scale['runs']} run(s) per figure, the median shown), "
        f"generated {report['generated']}, total {report['elapsed']:.0f} s.",
        "",
        f"- Machine: {env['machine']}",
        f"- Python {env['python']}; repository at {env['commit']}",
        "- " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "",
    ]
    w1 = summary.get("W1")
    if w1:
        raw, fb = w1.get("raw_aiohttp", {}), w1.get("fast_bitrix24", {})
        lines += [
            f"### W1: {scale['w1_products']} products x 3 images, no portal limit",
            "",
            "| client | requests | wall s | CPU s | CPU us/image | peak RSS MB | 503s "
            "| correct | wall / raw | CPU / raw | CPU / fast-bitrix24 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, s in w1.items():
            lines.append(
                f"| {label} | {_f(s['requests'], 0)} | {_f(s['wall'], 3)} | {_f(s['cpu'], 3)} "
                f"| {_f(s.get('cpu_us_per_image'), 1)} | {_f(s['rss_peak_mb'], 1)} "
                f"| {_f(s['rate_limited'], 0)} | {_f(s['correct'])} "
                f"| {_x(_ratio(s['wall'], raw.get('wall')))} "
                f"| {_x(_ratio(s['cpu'], raw.get('cpu')))} "
                f"| {_x(_ratio(s['cpu'], fb.get('cpu')))} |"
            )
        lines.append("")
    w2 = summary.get("W2")
    if w2:
        any_s = next(iter(w2.values()))
        lines += [
            f"### W2: {scale['w2_products']} products x 3 images, portal bucket "
            f"{W2_RATE:g}/s, burst {W2_BURST} (bound {any_s.get('bound', 0):.2f} s)",
            "",
            "| client | requests | 503s received | wall s | wall / bound | CPU s | correct |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, s in w2.items():
            lines.append(
                f"| {label} | {_f(s['requests'], 0)} | {_f(s['rate_limited'], 0)} "
                f"| {_f(s['wall'], 3)} | {_x(s.get('wall_vs_bound'))} | {_f(s['cpu'], 3)} "
                f"| {_f(s['correct'])} |"
            )
        lines.append("")
    w3 = summary.get("W3")
    if w3:
        lines += [
            "### W3: streaming many images (50 per product), peak RSS",
            "",
            "| client @ images | requests | wall s | CPU s | CPU us/image | RSS before MB "
            "| peak RSS MB | correct |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, s in w3.items():
            lines.append(
                f"| {label} | {_f(s['requests'], 0)} | {_f(s['wall'], 2)} | {_f(s['cpu'], 2)} "
                f"| {_f(s.get('cpu_us_per_image'), 1)} | {_f(s['rss_base_mb'], 1)} "
                f"| {_f(s['rss_peak_mb'], 1)} | {_f(s['correct'])} |"
            )
        lines.append("")
    w4 = summary.get("W4")
    if w4:
        lines += [
            f"### W4: downloading {scale['w4_images']} images of {W4_IMAGE_SIZE // 1024} KB, "
            f"{W4_CONCURRENCY} at once, written to files (the local disk; @tmpfs: {TMPFS})",
            "",
            "The floor of a durable client is raw aiohttp fsyncing each file in a thread "
            "(`raw_aiohttp_fsync`); of `durable=False`, plain raw aiohttp. Wall and CPU are of "
            "the downloads; process s is the whole process, start to exit (imports and the "
            "untimed listing included).",
            "",
            "| client | downloads | wall s | process s | images/s | MB/s | CPU s "
            "| CPU ms / file | context switches | throughput / floor | correct |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, s in w4.items():
            client, at, where = label.partition("@")
            durable = client in ("bitrix_images", "raw_aiohttp_fsync")
            floor = w4.get(("raw_aiohttp_fsync" if durable else "raw_aiohttp") + at + where, {})
            per_file = None if s.get("cpu") is None else s["cpu"] * 1000 / scale["w4_images"]
            lines.append(
                f"| {label} | {_f(s.get('downloads'), 0)} | {_f(s['wall'], 3)} "
                f"| {_f(s.get('process_seconds'), 2)} "
                f"| {_f(s.get('images_per_s'), 0)} | {_f(s.get('mb_per_s'), 1)} "
                f"| {_f(s['cpu'], 3)} | {_f(per_file, 2)} | {_f(s.get('ctx_switches'), 0)} "
                f"| {_x(_ratio(s.get('images_per_s'), floor.get('images_per_s')))} "
                f"| {_f(s['correct'])} |"
            )
        lines.append("")
    lines += ["### Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|"]
    for name, t in targets.items():
        measured = t["measured"]
        shown = _f(measured, 3) if isinstance(measured, float) else _f(measured)
        met = "n/a" if t["met"] is None else _f(t["met"])
        lines.append(f"| {name} | {t['target']} | {shown} | {met} |")
    errors = [
        f"- {w} {label}: {e}"
        for w, by in summary.items()
        for label, s in by.items()
        for e in s["errors"]
    ]
    if errors:
        lines += ["", "Errors:", "", *errors]
    return "\n".join(lines) + "\n"


def write_results(table: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    RESULTS.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


def compact(report: dict[str, Any]) -> dict[str, Any]:
    """The one-line JSON: per workload and client the median figures, then the targets."""
    keep = (
        "requests",
        "wall",
        "cpu",
        "cpu_us_per_image",
        "rss_peak_mb",
        "rate_limited",
        "correct",
        "wall_vs_bound",
        "images_per_s",
        "ctx_switches",
        "refusals",
    )
    figures = {
        w: {
            label: {
                k: (round(s[k], 4) if isinstance(s.get(k), float) else s.get(k))
                for k in keep
                if k in s
            }
            for label, s in by.items()
        }
        for w, by in report["summary"].items()
    }
    targets = {
        name: {
            "measured": round(t["measured"], 4)
            if isinstance(t["measured"], float)
            else t["measured"],
            "met": t["met"],
        }
        for name, t in report["targets"].items()
    }
    return {
        "mode": report["mode"],
        "elapsed_s": round(report["elapsed"], 1),
        "figures": figures,
        "targets": targets,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller workloads, < 60 s")
    parser.add_argument(
        "--write-results",
        action="store_true",
        help="rewrite the table in RESULTS.md (the default for a full run)",
    )
    parser.add_argument("--no-write", action="store_true", help="never touch RESULTS.md")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure")
    parser.add_argument("--only", default="W1,W2,W3,W4,W5,W9", help="comma-separated workloads")
    parser.add_argument("--json-out", default=None, help="also save the full report here")
    args = parser.parse_args(argv)

    mode = "quick" if args.quick else "full"
    scale = dict(SCALES[mode], mode=mode)
    if args.runs is not None:
        scale["runs"] = max(1, min(args.runs, 20))
    only = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    if "W6" in only:  # its own module and report: it needs a redis-server (benchmarks/_w6.py)
        from . import _w6

        only.discard("W6")
        _w6.main(["--quick"] if args.quick else [])
        if not only:
            return 0

    atexit.register(_cleanup)
    signal.signal(signal.SIGTERM, _on_signal)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if "W7" in only:  # upload packing: its own module and section of RESULTS.md
        from . import _w7

        _w7.main(quick=args.quick, write_results=not args.no_write, log=log)
        only.discard("W7")
        if not only:
            return 0

    if "W8" in only:  # mirror through public file links: its own module and section
        from . import _w8

        _w8.main(quick=args.quick, write_results=not args.no_write, log=log)
        only.discard("W8")
        if not only:
            return 0

    if "W5" in only:  # operating time under every portal model: its own module and section
        from . import _w5

        _w5.main(quick=args.quick, write_results=not args.no_write, log=log)
        only.discard("W5")
        if not only:
            return 0

    if "W9" in only:  # the catalog walk: its own module and section of RESULTS.md
        from . import _w9

        _w9.main(quick=args.quick, write_results=not args.no_write, log=log)
        only.discard("W9")
        if not only:
            return 0

    started = time.perf_counter()
    outcome = execute(scale, only, log)
    report: dict[str, Any] = {
        "mode": mode,
        "scale": scale,
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "environment": environment(),
        "summary": outcome["summary"],
    }
    report["targets"] = derive(report["summary"], scale)
    report["elapsed"] = time.perf_counter() - started
    table = render(report)
    print(table)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**report, "raw": outcome["raw"]}, indent=1))
    if not args.no_write and (
        args.write_results or (mode == "full" and only >= {"W1", "W2", "W3", "W4"})
    ):
        write_results(table)
        log(f"wrote {RESULTS}")
    print(json.dumps(compact(report), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
