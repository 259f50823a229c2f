"""
Text from the portal made safe to print on a terminal.

Image names and ``error_description`` come from whoever may edit the catalog. Printed raw,
``ESC ] 0 ; title BEL`` renames the window, ``ESC [ 2 J`` clears the screen, and a carriage
return or a bidirectional override makes a warning say something else than it holds
(ECMA-48 for C0/C1 and escape sequences; Unicode TR #9 for the bidi controls). Every such
character is shown as a visible escape instead, so the line keeps its meaning and stays one
line. JSON output needs none of this: ``json.dumps`` escapes C0 itself, and its readers are
programs.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["one_line", "plural", "printable"]

# C0 (0x00-0x1F, so ESC, BEL, CR and LF too), DEL, C1 (0x80-0x9F, where 0x9B is a one-byte
# CSI), the bidi embeddings, overrides and isolates, and the line/paragraph separators.
_UNPRINTABLE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """*text* with every control character written as ``\\xNN`` / ``\\uNNNN``; never raises."""
    return _UNPRINTABLE.sub(_escape, text)


def one_line(text: str, limit: int = 300) -> str:
    """*text* as one printable line of at most *limit* characters (runs of spaces as one)."""
    line = printable(" ".join(text.split()))  # newlines and tabs become spaces first
    return line if len(line) <= limit else line[: limit - 3] + "..."


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 product``, ``2 products`` (*nouns*: an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
