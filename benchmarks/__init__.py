"""
Benchmarks of ``bitrix_images`` against its peers, on an embedded portal in its own process.

``python -m benchmarks`` runs the full suite (and rewrites the table in ``RESULTS.md``);
``python -m benchmarks --quick`` runs the same workloads scaled down, in under a minute.
Every client runs in a process of its own; the portal (``bitrix_images.testing.FakePortal``)
runs in another (``benchmarks._portal_proc``) and is asked for its request counters after
each client run. See ``RESULTS.md`` for the method and the latest figures.
"""

from __future__ import annotations

from pathlib import Path


def write_section(results: Path, workload: str, title: str, table: str) -> None:
    """Put *table* between the *workload*'s markers in *results*, or append a new section."""
    begin = f"<!-- BEGIN {workload}: python -m benchmarks --only {workload} -->"
    end = f"<!-- END {workload} -->"
    text = results.read_text()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        results.write_text(f"{head}{begin}\n{table}{end}{tail}")
    else:
        results.write_text(f"{text.rstrip()}\n\n## {title}\n\n{begin}\n{table}{end}\n")
