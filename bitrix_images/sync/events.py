"""
What a job did to one file, and its one line.

``mirror`` and ``upload`` report each file they handle as a ``FileEvent`` to their
``on_event`` callback: a dry run's plan, ``-v`` and ``--log-file`` are all made of them,
and ``line`` is the one place their text is written (``rsync --itemize-changes`` in
spirit: a sign, then the file):

=====  ==========================================  =========================================
sign   ``mirror``                                  ``upload``
=====  ==========================================  =========================================
``+``  a file downloaded (``add``)                 an image added (``add``)
``~``  a file fetched again: it had changed        a card picture added in place of the
       (``replace``)                               product's previous one (``replace``)
``-``  a file pruned (``remove``)                  an image deleted by prune (``remove``)
``=``  a file already in place (``keep``)          a file the product has already (``keep``)
``!``  an image that failed (``fail``), or a       the same, for files and images
       product that could not be listed
       (``unlisted``)
=====  ==========================================  =========================================

Names come from the portal or the folder: the line is made printable (terminal escapes
shown, not run). No event ever carries a ``download_url``: it embeds the credential.
"""

from __future__ import annotations

from typing import Final

import attrs

from .._wire.text import printable

__all__ = ["ADD", "FAIL", "KEEP", "KINDS", "REMOVE", "REPLACE", "UNLISTED", "FileEvent"]

ADD: Final = "add"
REPLACE: Final = "replace"
REMOVE: Final = "remove"
KEEP: Final = "keep"
FAIL: Final = "fail"
UNLISTED: Final = "unlisted"

_SIGNS: Final = {ADD: "+", REPLACE: "~", REMOVE: "-", KEEP: "=", FAIL: "!", UNLISTED: "!"}
KINDS: Final = tuple(_SIGNS)


@attrs.frozen
class FileEvent:
    """
    One file handled by a job: its *kind* (``add``, ``replace``, ``remove``, ``keep``,
    ``fail`` or ``unlisted``), the product, the file's *name* (``None``: the event is the
    product's, or the image has no name), the portal's *image_id* when known, the *size* in
    bytes moved, the name and id of the image it *replaces*, and the *reason* of a failure.
    """

    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    product_id: int
    name: str | None = None
    image_id: int | None = None
    size: int = 0
    replaces: str | None = None
    replaces_id: int | None = None
    reason: str | None = None

    @property
    def line(self) -> str:
        """
        The event as one printable line: ``+ 3/front.png``, ``~ 3/front.png replaces
        'photo-1.png' (id 31)``, ``- 3/old.png (id 40)``, ``= 3/kept.png``,
        ``! 3/x.png (id 41): reason``.
        """
        line = f"{_SIGNS[self.kind]} {self.product_id}"
        if self.name is not None:
            line += f"/{self.name}"
        if self.kind == REPLACE and self.replaces_id is not None:
            old = repr(self.replaces) if self.replaces is not None else "a nameless image"
            line += f" replaces {old} (id {self.replaces_id})"
        elif self.kind in (REMOVE, FAIL) and self.image_id is not None:
            line += f" (id {self.image_id})"
        if self.reason is not None:
            line += f": {self.reason}"
        return printable(line)

    def as_json(self) -> dict[str, object]:
        """The event as a JSON-ready dict (what ``--log-file`` writes, with a time)."""
        return {
            "event": self.kind,
            "product": self.product_id,
            "name": self.name,
            "image_id": self.image_id,
            "bytes": self.size,
            "replaces": self.replaces,
            "replaces_id": self.replaces_id,
            "reason": self.reason,
        }
