"""
Everything bitrix_images raises for a portal's answer, or for the lack of one.

The tree::

    BitrixError                 .code .description .status .method .attempts
    ├── AuthError               bad webhook, a token one refresh could not cure, insufficient scope
    ├── AccessDenied            200040300010 / 200040300020 / ACCESS_DENIED / user_access_error
    ├── NotFound                the product or image does not exist
    ├── InvalidRequest          the portal refused the parameters (code 100, ERROR_ARGUMENT, ...)
    ├── RateLimited             QUERY_LIMIT_EXCEEDED / OVERLOAD_LIMIT / OPERATION_TIME_LIMIT
    │                           still failing when the retry budget is spent
    ├── ServerError             5xx answers (INTERNAL_SERVER_ERROR, ERROR_UNEXPECTED_ANSWER, ...)
    ├── TransportError          no usable answer: connection refused or reset, timeout,
    │   │                       an HTML page or truncated JSON from a proxy
    │   ├── OutcomeUnknown      a non-idempotent call (add, delete) whose answer was lost after
    │   │                       it was sent: the portal may have applied it, so it is not replayed
    │   └── CoordinatorUnavailable  an OAuth refresh was due but the coordinator's Redis
    │                           could not be reached (retryable: nothing was sent)
    ├── PortalMoved             the portal answered with a redirect to another address
    ├── MalformedResponse       the answer does not have the documented shape
    └── BatchError              a command inside a batch failed and could not be retried

Argument errors are plain ``ValueError`` / ``TypeError``, raised before any request;
``PortalMismatch`` (a ``ValueError``) is one of them: a mirror's folder that belongs to
another portal.

No message or ``repr()`` of these exceptions contains the webhook code, a token or a
signed download URL: they are built from the method name, the ``error`` value, the
``error_description`` and the HTTP status only.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "AccessDenied",
    "AuthError",
    "BatchError",
    "BitrixError",
    "CoordinatorUnavailable",
    "InvalidRequest",
    "MalformedResponse",
    "NotFound",
    "OutcomeUnknown",
    "PortalMismatch",
    "PortalMoved",
    "RateLimited",
    "ServerError",
    "TransportError",
]


class BitrixError(Exception):
    """
    The root of every error the SDK raises for a portal's answer.

    Attributes:
        code: the ``error`` value as the portal sent it: a string, or an integer
            (``0`` included), or ``None`` when the portal sent no body we could read.
        description: ``error_description``, or our own text when there was none.
        status: the HTTP status, or ``None`` when no answer arrived.
        method: the REST method called (``"catalog.productImage.list"``).
        attempts: how many requests were made before giving up.
    """

    def __init__(
        self,
        description: str,
        *,
        code: str | int | None = None,
        status: int | None = None,
        method: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.status = status
        self.method = method
        self.attempts = attempts

    def __str__(self) -> str:
        parts = [self.description]
        details = []
        if self.method is not None:
            details.append(f"method {self.method}")
        if self.code is not None:
            details.append(f"error {self.code!r}")
        if self.status is not None:
            details.append(f"HTTP {self.status}")
        if self.attempts > 1:
            details.append(f"after {self.attempts} attempts")
        if details:
            parts.append(f"({', '.join(details)})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.description!r}, code={self.code!r}, "
            f"status={self.status!r}, method={self.method!r}, attempts={self.attempts!r})"
        )


class AuthError(BitrixError):
    """The portal refused the credentials, and one token refresh (if any) did not help."""


class AccessDenied(BitrixError):
    """The credentials are valid but lack the rights for this catalog or product."""


class NotFound(BitrixError):
    """The product or the image does not exist."""


class InvalidRequest(BitrixError):
    """The portal refused the parameters (a missing or ill-typed value)."""


class RateLimited(BitrixError):
    """The portal kept refusing for load, and the retry budget is spent."""


class ServerError(BitrixError):
    """The portal failed (HTTP 5xx) and the call could not be retried to success."""


class TransportError(BitrixError):
    """No usable answer arrived: a network failure, a timeout, or a body that is not JSON."""


class OutcomeUnknown(TransportError):
    """
    A non-idempotent call was sent but its answer was lost.

    The portal may or may not have applied it; the SDK never replays such a call,
    because a replay could duplicate an image. Check the portal's state before retrying.
    """


class NotSent(TransportError):
    """
    Internal: the connection failed before the request left, so any method may be resent.

    Never raised to users (the retry driver turns it into ``TransportError``); not exported.
    """


class CoordinatorUnavailable(NotSent):
    """
    The access token must be refreshed, but the coordinator's Redis cannot be reached.

    A refresh rotates the refresh token, so one made outside the shared lock could lock
    the other processes out; none is made. Nothing was sent to the portal: the call may be
    retried once Redis answers.
    """


class PortalMoved(BitrixError):
    """
    The portal answered with a redirect (the portal's domain changed).

    Attributes:
        new_host: the host the portal now lives at. Credentials were not sent there.
    """

    def __init__(
        self,
        description: str,
        *,
        new_host: str | None,
        status: int | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(description, status=status, method=method)
        self.new_host = new_host


class MalformedResponse(BitrixError):
    """The portal's answer does not have the documented shape (a missing or ill-typed field)."""


class BatchError(BitrixError):
    """
    One or more commands inside a ``batch`` failed and could not be retried.

    Attributes:
        errors: the per-command errors, keyed by command key; for ``list_many`` the failed
            product's own error, keyed by its product id, and ``code`` and ``status`` are its.
        product_id: for ``list_many``, the product that could not be listed.
    """

    def __init__(
        self,
        description: str,
        *,
        errors: Mapping[str, BitrixError],
        method: str | None = "batch",
        attempts: int = 1,
        product_id: int | None = None,
    ) -> None:
        first = next(iter(errors.values()), None)
        super().__init__(
            description,
            code=None if first is None else first.code,
            status=None if first is None else first.status,
            method=method,
            attempts=attempts,
        )
        self.errors = dict(errors)
        self.product_id = product_id


class PortalMismatch(ValueError):
    """
    ``mirror``'s folder belongs to another portal: its manifest was written for another host.

    Raised before any download; the message names both hosts. ``mirror(..., rebind=True)``
    (``mirror --rebind``) binds the folder to the new portal and checks every file again.

    Attributes:
        bound: the host the folder's manifest is bound to.
        host: the host of the client's portal.
    """

    def __init__(self, message: str, *, bound: str, host: str) -> None:
        super().__init__(message)
        self.bound = bound
        self.host = host
