"""``doctor``: the portal's checks, one line each and a verdict, or one JSON object."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

import attrs

from ...sync.terminal import printable
from ..options import DoctorOptions
from ..output import emit

if TYPE_CHECKING:
    from ...client import BitrixClient

__all__ = ["doctor_command"]

_WIDTH = len("operating_counters")  # the longest name


async def doctor_command(client: BitrixClient, options: DoctorOptions, out: IO[str]) -> int:
    """Check the portal; exit status 0 when it is ready for list, mirror and upload, else 1."""
    report = await client.doctor(write_check=options.write_check)
    if options.json:
        emit({"ok": report.ok, "checks": [attrs.asdict(c) for c in report.checks]}, out)
    else:
        for check in report.checks:
            out.write(f"{check.status:<4}  {check.name:<{_WIDTH}}  {printable(check.detail)}\n")
            if check.hint is not None:
                out.write(f"{'':<4}  {'':<{_WIDTH}}  hint: {printable(check.hint)}\n")
        failed = [c.name for c in report.checks if c.status == "fail"]
        warned = sum(c.status == "warn" for c in report.checks)
        if report.ok:
            notes = f" ({warned} warning(s))" if warned else ""
            out.write(f"ok: the portal is ready for list, mirror and upload{notes}\n")
        else:
            out.write(f"not ok: {', '.join(failed)} failed\n")
    return 0 if report.ok else 1
