"""Error answers of the portal: canned bodies and the exception that carries them.

Texts come from the server source where it was read (CORE ``restexception.php``,
``oauth/auth.php``, ``apauth/auth.php``) and from DOCS ``_includes/system-errors.md``.
"""

from __future__ import annotations

__all__ = [
    "BATCH_LENGTH_EXCEEDED",
    "BATCH_METHOD_NOT_ALLOWED",
    "EXPIRED_TOKEN",
    "INTERNAL_SERVER_ERROR",
    "INVALID_CREDENTIALS",
    "INVALID_TOKEN",
    "METHOD_NOT_FOUND",
    "NO_AUTH_FOUND",
    "OPERATION_TIME_LIMIT",
    "OVERLOAD_LIMIT",
    "QUERY_LIMIT_EXCEEDED",
    "RestError",
]

# DOCS limits.md; body confirmed in b24-rest-docs issue #193 (HTTP 503).
QUERY_LIMIT_EXCEEDED: dict[str, object] = {
    "error": "QUERY_LIMIT_EXCEEDED",
    "error_description": "Too many requests",
}
# Source text has the trailing dot (CORE apauth/auth.php); HTTP 503 per the docs.
OVERLOAD_LIMIT: dict[str, object] = {
    "error": "OVERLOAD_LIMIT",
    "error_description": "REST API is blocked due to overload.",
}
# CORE-NEW CRestServer: RestException(..., ERROR_OPERATION_TIME_LIMIT, 429).
OPERATION_TIME_LIMIT: dict[str, object] = {
    "error": "OPERATION_TIME_LIMIT",
    "error_description": "Method is blocked due to operation time limit.",
}
INTERNAL_SERVER_ERROR: dict[str, object] = {
    "error": "INTERNAL_SERVER_ERROR",
    "error_description": "Internal server error",
}
# CORE oauth/auth.php, HTTP 401 via OAuthException.
EXPIRED_TOKEN: dict[str, object] = {
    "error": "expired_token",
    "error_description": "The access token provided has expired",
}
INVALID_TOKEN: dict[str, object] = {
    "error": "invalid_token",
    "error_description": "Unable to get application by token",
}
NO_AUTH_FOUND: dict[str, object] = {
    "error": "NO_AUTH_FOUND",
    "error_description": "Wrong authorization data",
}
# CORE apauth/auth.php (wrong webhook user or code).
INVALID_CREDENTIALS: dict[str, object] = {
    "error": "INVALID_CREDENTIALS",
    "error_description": "Invalid request credentials",
}
METHOD_NOT_FOUND: dict[str, object] = {
    "error": "ERROR_METHOD_NOT_FOUND",
    "error_description": "Method not found!",
}
# CORE rest_provider.php methodsBatch: per-command errors inside a 200 batch.
BATCH_LENGTH_EXCEEDED: dict[str, object] = {
    "error": "ERROR_BATCH_LENGTH_EXCEEDED",
    "error_description": "Max batch length exceeded",
}
BATCH_METHOD_NOT_ALLOWED: dict[str, object] = {
    "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
    "error_description": "Method is not allowed for batch usage",
}


class RestError(Exception):
    """An error answer: HTTP ``status`` and the ``{"error", "error_description"}`` body."""

    def __init__(self, status: int, code: int | str, description: str) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description

    @classmethod
    def from_body(cls, status: int, body: dict[str, object]) -> RestError:
        code = body.get("error", "")
        return cls(
            status,
            code if isinstance(code, int | str) else str(code),
            str(body.get("error_description", "")),
        )

    def body(self) -> dict[str, object]:
        return {"error": self.code, "error_description": self.description}
