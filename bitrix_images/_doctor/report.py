"""``PortalReport`` and ``Check``: what ``client.doctor()`` found, as frozen values."""

from __future__ import annotations

from typing import Final, Literal

import attrs

from .._wire.text import one_line

__all__ = ["NEEDED", "Check", "PortalReport", "Status"]

Status = Literal["ok", "warn", "fail", "skip"]
_STATUSES: Final = ("ok", "warn", "fail", "skip")

#: The checks whose failure makes the report not ``ok``: what ``list``, ``mirror`` and
#: ``upload`` need (``write`` is run only when asked for).
NEEDED: Final = frozenset(("connect", "auth", "scope", "methods", "read", "batch", "write"))


def _hint(text: str | None) -> str | None:
    return None if text is None else one_line(text)


@attrs.frozen
class Check:
    """
    One check of a portal: its ``name``, ``status`` and what it found.

    ``status`` is ``"ok"``, ``"warn"`` (works, with a consequence worth knowing), ``"fail"``
    or ``"skip"`` (not run, or not answerable on this portal). ``detail`` is one printable
    line; ``hint``, when there is one, says what to do about it. Neither ever holds a
    webhook code, a token or a signed link.
    """

    name: str
    status: Status = attrs.field(validator=attrs.validators.in_(_STATUSES))
    detail: str = attrs.field(converter=one_line)
    hint: str | None = attrs.field(default=None, converter=_hint)


@attrs.frozen
class PortalReport:
    """
    What ``client.doctor()`` found: ``checks`` in the order they ran, and the verdict.

    ``ok`` is false when a check that ``list``, ``mirror`` or ``upload`` needs failed
    (``connect``, ``auth``, ``scope``, ``methods``, ``read``, ``batch``, and ``write`` when
    asked for); a warning never makes it false.
    """

    ok: bool
    checks: tuple[Check, ...]

    @classmethod
    def of(cls, checks: tuple[Check, ...]) -> PortalReport:
        """The report of *checks*, its verdict drawn from them."""
        failed = any(c.status == "fail" and c.name in NEEDED for c in checks)
        return cls(ok=not failed, checks=checks)

    def check(self, name: str) -> Check:
        """The check called *name*; ``KeyError`` if it did not run."""
        for found in self.checks:
            if found.name == name:
                return found
        raise KeyError(name)
