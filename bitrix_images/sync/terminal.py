"""
Text from the portal made safe to print on a terminal, and the one warning line.

Image names and ``error_description`` come from whoever may edit the catalog. Printed raw,
``ESC ] 0 ; title BEL`` renames the window, ``ESC [ 2 J`` clears the screen, and a carriage
return or a bidirectional override makes a warning say something else than it holds
(ECMA-48 for C0/C1 and escape sequences; Unicode TR #9 for the bidi controls). Every such
character is shown as a visible escape instead, so the line keeps its meaning and stays one
line. JSON output needs none of this: ``json.dumps`` escapes C0 itself, and its readers are
programs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import IO, Final

# printable() lives in the wire layer, so that layers below this one (the doctor) use it too.
from .._wire.text import printable

__all__ = ["PROG", "printable", "warn"]

PROG: Final = "bitrix-images"

log = logging.getLogger("bitrix_images")


def warn(
    text: str, stream: IO[str] | None, *, write: Callable[[str], object] | None = None
) -> None:
    """
    One warning line, made printable: ``bitrix-images: warning: TEXT`` on *stream*.

    *stream* ``None`` sends it to the ``bitrix_images`` logger instead (a library's
    caller decides where warnings go); *write* puts the line out instead of ``print``
    (above a progress bar).
    """
    if stream is None:
        log.warning("%s", printable(text))
        return
    line = f"{PROG}: warning: {printable(text)}"
    if write is not None:
        write(line)
    else:
        print(line, file=stream)
