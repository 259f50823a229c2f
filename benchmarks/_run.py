"""
One client run in its own process; prints one JSON line.

    python -m benchmarks._run CLIENT WORKLOAD URL --products N [--rate R --burst B]
        [--concurrency C] [--images M --out-dir DIR]

Measured here, around ``run()`` only (imports and the untimed ``prepare()`` excluded):
wall seconds (``perf_counter``), CPU seconds (``getrusage`` user+sys delta), peak RSS
(``ru_maxrss``, the process's high-water mark) and the RSS just before the timed part.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import resource
import sys
import time
import traceback

from ._clients import CLIENTS, Job, Tally


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def parse(argv: list[str] | None = None) -> Job:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._run")
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("workload", choices=("list", "download"))
    parser.add_argument("url")
    parser.add_argument("--products", type=int, required=True)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--images", type=int, default=0)
    parser.add_argument("--out-dir", default=None)
    job = parser.parse_args(argv, namespace=Job())
    if not job.url.endswith("/"):
        job.url += "/"
    return job


def main(argv: list[str] | None = None) -> int:
    job = parse(argv)
    out: dict[str, object] = {"client": job.client, "workload": job.workload}
    try:
        module = importlib.import_module(f"benchmarks._clients.{CLIENTS[job.client]}")
        state = module.prepare(job)
        tally = Tally()
        gc.collect()
        out["rss_base_mb"] = round(_rss_now_mb(), 2)
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        extra = module.run(job, state, tally)
        wall = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        out.update(tally.as_dict())
        out["wall"] = round(wall, 4)
        out["cpu"] = round(
            (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime), 4
        )
        out["rss_peak_mb"] = round(usage1.ru_maxrss / 1024, 2)  # Linux: kilobytes
        # Voluntary + involuntary context switches: a thread hop per file shows up here.
        out["ctx_switches"] = (usage1.ru_nvcsw - usage0.ru_nvcsw) + (
            usage1.ru_nivcsw - usage0.ru_nivcsw
        )
        out["extra"] = extra
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:500]
        traceback.print_exc(file=sys.stderr)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())
