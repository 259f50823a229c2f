"""Injected faults: misbehaviour queued by a test, taken by the routes as requests arrive.

Two hooks of one shape: :class:`Fault` for REST requests and the token endpoint (see
:meth:`FakePortal.inject`), :class:`FileFault` for the public files under ``/upload/`` (see
:meth:`FakePortal.inject_file`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

__all__ = [
    "EARLY_FAULTS",
    "FAULT_KINDS",
    "FILE_FAULT_KINDS",
    "Fault",
    "FaultKind",
    "FaultQueue",
    "FileFault",
    "FileFaultKind",
]

FaultKind = Literal[
    "error", "html", "reset", "drop", "delay", "truncated", "cut_body", "command_error"
]
FAULT_KINDS: frozenset[str] = frozenset(
    ("error", "html", "reset", "drop", "delay", "truncated", "cut_body", "command_error")
)
#: Kinds answered before the request is processed.
EARLY_FAULTS = frozenset(("error", "html", "reset"))

FileFaultKind = Literal["forbidden", "not_found", "login_page", "cut_short", "other_bytes", "busy"]
FILE_FAULT_KINDS: frozenset[str] = frozenset(
    ("forbidden", "not_found", "login_page", "cut_short", "other_bytes", "busy")
)


@attrs.define
class Fault:
    """An injected fault of REST requests, see :meth:`FakePortal.inject`."""

    kind: FaultKind
    times: int = 1
    method: str | None = None
    status: int | None = None
    body: dict[str, object] | None = None
    delay: float = 0.0

    def matches(self, method: str) -> bool:
        return self.method is None or self.method.lower() == method


@attrs.define
class FileFault:
    """An injected fault of public files, see :meth:`FakePortal.inject_file`."""

    kind: FileFaultKind
    image_id: int | None = None
    times: int | None = None

    def matches(self, image_id: int) -> bool:
        return self.image_id is None or self.image_id == image_id


@attrs.define
class FaultQueue:
    """The queued faults of one portal."""

    rest: list[Fault] = attrs.Factory(list)
    files: list[FileFault] = attrs.Factory(list)

    def inject(
        self,
        kind: FaultKind,
        *,
        times: int = 1,
        method: str | None = None,
        status: int | None = None,
        body: Mapping[str, object] | None = None,
        delay: float = 0.0,
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        if kind == "error" and (status is None or body is None):
            raise ValueError("an 'error' fault needs status and body")
        fault = Fault(
            kind=kind,
            times=times,
            method=method.lower() if method is not None else None,
            status=status,
            body=dict(body) if body is not None else None,
            delay=delay,
        )
        self.rest.append(fault)
        return fault

    def inject_file(
        self, kind: FileFaultKind, *, image_id: int | None = None, times: int | None = None
    ) -> FileFault:
        if kind not in FILE_FAULT_KINDS:
            expected = sorted(FILE_FAULT_KINDS)
            raise ValueError(f"unknown file fault kind {kind!r}; expected one of {expected}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 (or None: every time)")
        fault = FileFault(kind=kind, image_id=image_id, times=times)
        self.files.append(fault)
        return fault

    def clear(self) -> None:
        self.rest.clear()
        self.files.clear()

    def take(self, method: str, *, commands: bool = False, rest: bool = True) -> Fault | None:
        """The first queued fault for *method* (batch sub-commands if *commands*; REST
        requests if *rest*, else the token endpoint), one use spent."""
        for fault in self.rest:
            if (fault.kind == "command_error") != commands:
                continue
            if fault.method is None and not rest:
                continue
            if fault.matches(method):
                fault.times -= 1
                if fault.times <= 0:
                    self.rest.remove(fault)
                return fault
        return None

    def take_file(self, image_id: int) -> FileFault | None:
        """The first file fault for *image_id*, one use spent (None ``times``: never spent)."""
        for fault in self.files:
            if fault.matches(image_id):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.files.remove(fault)
                return fault
        return None
