"""
The Bitrix24 REST wire protocol as pure functions: data in, data or an exception out.

Nothing here does I/O or needs an event loop. ``_net.transport`` is the only module that talks to
the network; it feeds these functions the status and body it received.

References (the official docs, github.com/bitrix24/b24restdocs):
- settings/how-to-call-rest-api/general-principles.md: JSON POST, envelopes, redirects.
- settings/how-to-call-rest-api/batch.md: ``cmd``/``halt`` and the nested ``result_*`` keys.
- _includes/system-errors.md and limits.md: error codes and their HTTP statuses.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import quote_plus

import attrs
import orjson

from ..exceptions import (
    AccessDenied,
    AuthError,
    BitrixError,
    InvalidRequest,
    MalformedResponse,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
)

# Bitrix puts at most 50 commands in one batch (CRestUtil::BATCH_MAX_LENGTH, batch.md).
BATCH_MAX_COMMANDS: Final = 50

# The largest answer read into memory by default. Bitrix answers are small (a batch of 50
# products with 20 images each is about 1 MiB); a hostile or broken portal could send
# gigabytes, and decoding JSON takes about three times its size in memory.
MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024
# error_description and other portal text kept in an exception message, in characters.
MAX_TEXT: Final = 1000
# PHP's PHP_INT_MAX: no offset or count a portal sends is larger (and orjson cannot encode
# an int of 2**64 or more back into the next request's start).
_PHP_INT_MAX: Final = 2**63 - 1


def dumps(obj: object) -> bytes:
    """Encode a request body: compact UTF-8 JSON."""
    return orjson.dumps(obj)


# orjson decodes a batch answer about three times faster than json (benchmarks/RESULTS.md).
loads = orjson.loads


# --- envelopes ---------------------------------------------------------------------------


@attrs.frozen
class TimeInfo:
    """
    The ``time`` block of a success answer (api-reference/data-types.md, "time").

    ``operating`` is the seconds this method has used in the portal's 10-minute window;
    ``operating_reset_at`` the Unix time the oldest one-minute basket leaves it (limits.md).
    Both appear only while the portal's limiter is on.
    """

    duration: float | None = None
    processing: float | None = None
    operating: float | None = None
    operating_reset_at: float | None = None
    finish: float | None = None  # the portal's clock: orders answers that overtook others


@attrs.frozen
class Envelope:
    """A decoded success answer: ``result`` with the top-level ``next``/``total``/``time``."""

    result: Any
    next: int | None = None
    total: int | None = None
    time: TimeInfo | None = None


def _number(value: object) -> float | None:
    kind = type(value)
    if kind is float or kind is int:
        return float(value)  # type: ignore[arg-type]  # checked just above
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _int_or_none(value: object) -> int | None:
    if type(value) is int and -_PHP_INT_MAX <= value <= _PHP_INT_MAX:
        return value  # the common case, exact
    number = _number(value)
    # NaN, infinities (a "nan" text, 1e999) and numbers beyond PHP's int are not offsets:
    # treat them as absent, as any other unreadable value.
    if number is None or not math.isfinite(number) or abs(number) > _PHP_INT_MAX:
        return None
    return int(number)


def shorten(text: str, limit: int = MAX_TEXT) -> str:
    """*text* cut to *limit* characters, saying so: portal text in messages stays readable."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (cut to {limit} of {len(text)} characters)"


def check_answer_size(size: int | None, limit: int, *, method: str, status: int | None) -> None:
    """
    Raise ``MalformedResponse`` when an answer of *size* bytes exceeds *limit*.

    Called with the ``Content-Length`` before reading, and with the bytes read so far while
    reading (a chunked answer says no length), so that no more than *limit* is ever held.
    """
    if size is not None and size > limit:
        raise MalformedResponse(
            f"the portal's answer is larger than {limit} bytes; refusing to read it "
            "(raise max_answer_bytes if this portal's answers are that large)",
            status=status,
            method=method,
        )


def parse_time(block: object) -> TimeInfo | None:
    """Read a ``time`` block; anything unreadable is ``None`` rather than an error."""
    if not isinstance(block, Mapping):
        return None
    return TimeInfo(
        duration=_number(block.get("duration")),
        processing=_number(block.get("processing")),
        operating=_number(block.get("operating")),
        operating_reset_at=_number(block.get("operating_reset_at")),
        finish=_number(block.get("finish")),
    )


def decode(status: int, body: bytes, *, method: str) -> Envelope:
    """
    Decode an answer to a REST call, or raise the classified error.

    An error exists when the body has the key ``"error"``: its value may be ``0``, so it is
    never tested for truth (catalog-product-image-list.md answers ``{"error": 200040300010}``).
    A body that is not JSON (an nginx 502 page) is a retryable ``TransportError`` keeping the
    status (general-principles.md warns that proxies answer HTML).
    """
    try:
        data = loads(body)
    except orjson.JSONDecodeError:
        # from None: the decoder's error quotes the body, which may echo a secret.
        raise TransportError(
            "the portal's answer is not JSON" if body else "the portal sent an empty answer",
            status=status,
            method=method,
        ) from None
    if isinstance(data, dict):
        if "error" in data:
            raise classify(data["error"], data.get("error_description"), status, method)
        if status < 300 and "result" in data:
            return Envelope(
                result=data["result"],
                next=_int_or_none(data.get("next")),
                total=_int_or_none(data.get("total")),
                time=parse_time(data.get("time")),
            )
    if status >= 300:
        # The body says nothing we understand: fall back on the HTTP status.
        raise classify(None, None, status, method)
    raise MalformedResponse(
        "the portal's answer has neither 'result' nor 'error'", status=status, method=method
    )


# --- error classification ----------------------------------------------------------------

_BY_CODE: Final[Mapping[str, type[BitrixError]]] = {
    # limits.md and system-errors.md
    "QUERY_LIMIT_EXCEEDED": RateLimited,
    "OVERLOAD_LIMIT": RateLimited,
    "OPERATION_TIME_LIMIT": RateLimited,
    # oauth/auth.php, apauth/auth.php, settings/oauth/error-codes.md
    "EXPIRED_TOKEN": AuthError,
    "INVALID_TOKEN": AuthError,
    "NO_AUTH_FOUND": AuthError,
    "INVALID_CREDENTIALS": AuthError,
    "INSUFFICIENT_SCOPE": AuthError,
    "INVALID_SCOPE": AuthError,
    "AUTHORIZATION_ERROR": AuthError,
    "WRONG_AUTH_TYPE": AuthError,
    "INVALID_GRANT": AuthError,
    "INVALID_CLIENT": AuthError,
    "WRONG_CLIENT": AuthError,
    "APPLICATION_NOT_FOUND": AuthError,
    "ERROR_OAUTH": AuthError,
    "INVALID_REQUEST": AuthError,  # "Https required": the credentials were refused
    "METHOD_CONFIRM_WAITING": AuthError,
    # catalog/lib/controller/errorcode.php and system-errors.md
    "200040300010": AccessDenied,
    "200040300020": AccessDenied,
    "ACCESS_DENIED": AccessDenied,
    "USER_ACCESS_ERROR": AccessDenied,
    "METHOD_CONFIRM_DENIED": AccessDenied,
    "PORTAL_DELETED": AccessDenied,
    # engine binder and rest.php
    "100": InvalidRequest,
    "ERROR_ARGUMENT": InvalidRequest,
    "ERROR_CORE": InvalidRequest,
    "ERROR_METHOD_NOT_FOUND": InvalidRequest,
    "ERROR_BATCH_LENGTH_EXCEEDED": InvalidRequest,
    "ERROR_BATCH_METHOD_NOT_ALLOWED": InvalidRequest,
    "WRONG_ENCODING": InvalidRequest,
    "NOT_FOUND": NotFound,
    # system-errors.md: "retry the call"
    "INTERNAL_SERVER_ERROR": ServerError,
    "ERROR_UNEXPECTED_ANSWER": ServerError,
    "INTERNAL_WRONG_TRANSPORT": ServerError,
}

# Code 0 is "other errors" for every catalog.productImage.* method; only the text tells a
# missing product or image apart (catalog/lib/controller/productimage.php).
_NOT_FOUND_WORDS: Final = ("not found", "does not exist", "not exist")

_BY_STATUS: Final[Mapping[int, type[BitrixError]]] = {
    400: InvalidRequest,
    401: AuthError,
    403: AccessDenied,
    404: NotFound,
    429: RateLimited,
    503: RateLimited,
}


def normalize_code(code: object) -> str:
    """The comparable form of an ``error`` value: upper-case text (codes arrive in both cases)."""
    return str(code).upper()


def classify(
    code: object, description: object, status: int | None, method: str | None
) -> BitrixError:
    """Build the exception for an ``error``/``error_description`` pair (pure, never raises)."""
    text = shorten(description) if isinstance(description, str) and description else None
    kept_code = code if code is None or isinstance(code, int) else shorten(str(code), 100)
    cls: type[BitrixError] | None = None
    if code is not None:
        cls = _BY_CODE.get(normalize_code(code))
        if cls is None and text is not None and any(w in text.lower() for w in _NOT_FOUND_WORDS):
            cls = NotFound
        if cls is None:
            cls = BitrixError
    elif status is not None:
        cls = _BY_STATUS.get(status)
        if cls is None:
            cls = ServerError if status >= 500 else BitrixError
    else:
        cls = BitrixError
    if text is None:
        text = f"the portal answered HTTP {status}" if code is None else "the portal refused"
    return cls(text, code=kept_code, status=status, method=method)


class Retry(enum.Enum):
    """What an error allows the caller to do next."""

    BACKOFF = "backoff"  # refused before processing: retry any method after a backoff
    WAIT_RESET = "wait_reset"  # the method's operating time is spent: wait for the reset
    REFRESH = "refresh"  # the OAuth access token expired: refresh once, then replay
    TRANSIENT = "transient"  # a failure that a replay may cure: retry idempotent calls only
    NEVER = "never"


_REFRESH_CODES: Final = frozenset({"EXPIRED_TOKEN", "INVALID_TOKEN"})
_BACKOFF_CODES: Final = frozenset({"QUERY_LIMIT_EXCEEDED", "OVERLOAD_LIMIT"})
_TRANSIENT_STATUSES: Final = frozenset({500, 502, 503, 504})


def retry_kind(error: BitrixError) -> Retry:
    """Classify an error by what may safely follow it (limits.md, system-errors.md)."""
    code = None if error.code is None else normalize_code(error.code)
    if code in _BACKOFF_CODES:
        return Retry.BACKOFF
    if code == "OPERATION_TIME_LIMIT":
        return Retry.WAIT_RESET
    if code in _REFRESH_CODES:
        return Retry.REFRESH
    if isinstance(error, TransportError):
        return Retry.TRANSIENT
    if isinstance(error, ServerError) and (code is not None or error.status in _TRANSIENT_STATUSES):
        return Retry.TRANSIENT
    if code is None and error.status in _TRANSIENT_STATUSES:
        return Retry.TRANSIENT
    return Retry.NEVER


# --- idempotency ---------------------------------------------------------------------------

_READ_VERBS: Final = ("list", "get", "getfields", "fields", "getlist")


def is_idempotent(method: str) -> bool:
    """Whether a method only reads, so that replaying it after a lost answer is harmless."""
    verb = method.rsplit(".", 1)[-1].lower()
    return verb in _READ_VERBS or verb.startswith(("get", "list"))


# --- PHP query strings and batch ------------------------------------------------------------


def _flatten(prefix: str, value: object) -> Iterator[tuple[str, str]]:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(f"{prefix}[{key}]", item)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _flatten(f"{prefix}[{index}]", item)
    elif isinstance(value, bool):
        yield prefix, "1" if value else "0"
    else:
        yield prefix, str(value)


def http_build_query(params: Mapping[str, object]) -> str:
    """
    Encode parameters as PHP's ``http_build_query`` does: ``fields[productId]=1&select[0]=id``.

    Batch commands are ``method?query`` strings parsed with PHP's ``parse_str``
    (batch.md, data-encoding.md), so nested values need PHP's bracket syntax.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        pairs.extend(_flatten(str(key), value))
    return "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs)


Command = tuple[str, "Mapping[str, object] | str"]


def encode_command(method: str, params: Mapping[str, object] | str) -> str:
    """One ``cmd`` value: ``method?query``; *params* may be a query string built already."""
    query = params if isinstance(params, str) else http_build_query(params)
    return f"{method}?{query}" if query else method


def encode_batch(commands: Mapping[str, Command], *, halt: bool = False) -> dict[str, object]:
    """The parameters of a ``batch`` call for ``{key: (method, params or query)}``."""
    if len(commands) > BATCH_MAX_COMMANDS:
        raise ValueError(f"a batch holds at most {BATCH_MAX_COMMANDS} commands")
    cmd = {key: encode_command(method, params) for key, (method, params) in commands.items()}
    return {"halt": 1 if halt else 0, "cmd": cmd}


@attrs.frozen
class BatchResult:
    """The nested ``result_*`` maps of a batch answer, each keyed by command key."""

    results: Mapping[str, Any]
    errors: Mapping[str, BitrixError]
    totals: Mapping[str, int]
    nexts: Mapping[str, int]
    times: Mapping[str, TimeInfo]  # by method: its last command's ``result_time``


def _as_map(value: object, name: str) -> dict[str, Any]:
    # PHP's json_encode sends an empty map as [] and a map keyed 0..n-1 as a list (batch.md).
    if value is None:
        return {}
    if type(value) is dict:
        return value  # decoded JSON: its keys are str already, and nobody else holds it
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    raise MalformedResponse(f"batch field {name!r} is not a map", method="batch")


def decode_batch(result: object, *, methods: Mapping[str, str]) -> BatchResult:
    """
    Split a batch ``result`` into per-command parts.

    *methods* maps command keys to the method each one called, so that per-command errors
    carry it and ``result_time`` is read per method. A failed command is in
    ``result_error`` and absent from ``result`` (batch.md).
    """
    if not isinstance(result, Mapping):
        raise MalformedResponse("the batch result is not a map", method="batch")
    errors = {}
    for key, body in _as_map(result.get("result_error"), "result_error").items():
        method = methods.get(key)
        if isinstance(body, Mapping) and "error" in body:
            errors[key] = classify(body["error"], body.get("error_description"), None, method)
        else:
            errors[key] = classify(None, None, None, method)
    totals = {
        k: n
        for k, v in _as_map(result.get("result_total"), "result_total").items()
        if (n := _int_or_none(v)) is not None
    }
    nexts = {
        k: n
        for k, v in _as_map(result.get("result_next"), "result_next").items()
        if (n := _int_or_none(v)) is not None
    }
    # Each command's result_time is booked under its method, once per batch: the last one
    # holds the method's running figure (limits.md), or, where the portal bills the batch,
    # the batch-wide figure that all fifty carry (b24jssdk PR #539). Only it is parsed.
    last: dict[str, object] = {}
    for k, v in _as_map(result.get("result_time"), "result_time").items():
        method = methods.get(k)
        if method is not None:
            last[method] = v
    times = {m: t for m, v in last.items() if (t := parse_time(v)) is not None}
    return BatchResult(
        results=_as_map(result.get("result"), "result"),
        errors=errors,
        totals=totals,
        nexts=nexts,
        times=times,
    )


def items_of(result: object, key: str, *, method: str) -> list[Any]:
    """
    The list under *key* in a list method's ``result`` (``{"productImages": [...]}``).

    A ``result`` that is itself a list is accepted too, as some methods answer that way.
    """
    if type(result) is dict and type(items := result.get(key)) is list:
        return items  # decoded JSON: no ABC checks (this runs once per product listed)
    if isinstance(result, Mapping):
        items = result.get(key)
        if isinstance(items, list):
            return items
        if isinstance(items, Mapping):  # PHP's json_encode of a 0..n-1 map
            return list(items.values())
    elif isinstance(result, list):
        return result
    raise MalformedResponse(f"the answer has no list {key!r}", method=method)
