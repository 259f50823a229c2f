"""
``client.doctor()``: what a portal allows, asked before a long job.

``examine`` runs the checks of ``checks.STEPS`` in order through the client's own caller
(its auth, limits and token refresh) and file fetching, each within its time, and gathers
their findings into a ``PortalReport``. A check whose needs failed is skipped, so a dead
portal costs one short connection attempt and nothing more. Nothing is written unless a
product to write to is given.
"""

from __future__ import annotations

from .._calls.links import PublicLinks
from .._wire.commands import check_id
from .checks import STEPS, Visit, run_step
from .report import Check, PortalReport, Status

__all__ = ["Check", "PortalReport", "Status", "examine"]


async def examine(links: PublicLinks, *, write_check: int | None = None) -> PortalReport:
    """Check the portal behind *links* (its caller); with *write_check*, add and delete an image."""
    if write_check is not None:
        write_check = check_id(write_check, "write_check")
    visit = Visit(links.caller, write_check, links)
    checks: list[Check] = []
    stopped: dict[str, str] = {}  # name -> "failed" / "not run", for the checks after it
    for step in STEPS:
        if step.name == "write" and write_check is None:
            continue
        blocker = next((need for need in step.needs if need in stopped), None)
        if blocker is not None:
            detail = f"not run: {blocker} {stopped[blocker]}"
            checks.append(Check(step.name, "skip", detail))
            stopped[step.name] = "was not run"
            continue
        finding = await run_step(step, visit)
        checks.append(Check(step.name, finding.status, finding.detail, finding.hint))
        if finding.status == "fail":
            stopped[step.name] = "failed"
    return PortalReport.of(tuple(checks))
