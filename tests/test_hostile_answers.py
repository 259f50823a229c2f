"""A hostile or broken portal cannot make the client hold unbounded memory or print
unbounded text: pure protocol parts here, the transport over loopback below."""

from __future__ import annotations

import pytest

import bitrix_images as bx
from bitrix_images._wire import protocol as p


def test_error_text_is_cut_and_says_so() -> None:
    description = "x" * 5_000_000
    body = b'{"error": "ERROR_CORE", "error_description": "' + description.encode() + b'"}'
    with pytest.raises(bx.BitrixError) as caught:
        p.decode(400, body, method="m")
    message = str(caught.value)
    assert len(message) < 1200
    assert "cut to 1000 of 5000000 characters" in message
    assert len(caught.value.description) < 1100


def test_a_huge_error_code_is_cut() -> None:
    error = p.classify(["x" * 10_000], None, 400, "m")
    assert isinstance(error.code, str)
    assert len(error.code) < 200


def test_short_text_is_kept_whole() -> None:
    assert p.shorten("abc") == "abc"
    assert p.shorten("abcdef", 3) == "abc... (cut to 3 of 6 characters)"


@pytest.mark.parametrize(
    "value",
    [
        b"18446744073709551616",  # 2**64: orjson gives a float, int() gives an unencodable int
        b"9223372036854775808",  # 2**63: beyond PHP_INT_MAX
        b"1e30",
        b"-1e30",
        b'"99999999999999999999999"',
    ],
)
def test_a_next_beyond_php_int_is_malformed(value: bytes) -> None:
    envelope = p.decode(200, b'{"result": [], "next": ' + value + b', "total": 1}', method="m")
    assert envelope.next is None
    batch = p.decode_batch({"result_next": {"a": p.loads(value)}}, methods={"a": "m"})
    assert batch.nexts == {}
    # What is kept can always be sent back.
    p.dumps({"start": envelope.next})


def test_the_largest_php_int_is_a_next() -> None:
    envelope = p.decode(200, b'{"result": [], "next": 9223372036854775807}', method="m")
    assert envelope.next == 2**63 - 1
    p.dumps({"start": envelope.next})


def test_answer_size_check() -> None:
    p.check_answer_size(None, 10, method="m", status=200)
    p.check_answer_size(10, 10, method="m", status=200)
    with pytest.raises(bx.MalformedResponse, match="larger than 10 bytes") as caught:
        p.check_answer_size(11, 10, method="m", status=200)
    assert (caught.value.method, caught.value.status) == ("m", 200)
    assert p.MAX_ANSWER_BYTES == 64 * 1024 * 1024
