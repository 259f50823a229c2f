"""Portal text printed on a terminal: control characters are shown, never obeyed (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitrix_images.sync.terminal import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("photo-1.png", "photo-1.png"),
        ("фото №1 — 😀.png", "фото №1 — 😀.png"),
        ("\x1b]0;PWNED-TITLE\x07\x1b[2J", "\\x1b]0;PWNED-TITLE\\x07\\x1b[2J"),
        ("a\nb\rc\td\x00e", "a\\x0ab\\x0dc\\x09d\\x00e"),
        ("del\x7f c1\x9b31m nbsp\xa0", "del\\x7f c1\\x9b31m nbsp\xa0"),
        ("\u202egnp.exe", "\\u202egnp.exe"),
        ("\u2066iso\u2069 \u200f \u2028", "\\u2066iso\\u2069 \\u200f \\u2028"),
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


@given(st.text())
def test_printable_leaves_no_control_character(text: str) -> None:
    shown = printable(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\u202e" not in shown
    if text.isprintable():
        assert shown == text
