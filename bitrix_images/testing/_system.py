"""The portal's ``basic`` scope methods a client asks before a long job: ``scope``,
``method.get``, ``server.time`` and ``app.info`` (CORE-NEW ``rest_provider.php``:
``scopeList``, ``getMethod``, ``getServerTime``, ``appInfo``; answer shapes from DOCS
api-reference/common/system/{scope,method-get,server-time,app-info}.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from ._catalog import PORTAL_TZ
from ._methods import METHODS, Handler, MethodContext, MethodResult

__all__ = ["ALL_METHODS", "method_scope"]

#: Every scope a webhook can be given in the portal's UI (``scope`` with ``full=true``).
_FULL_SCOPE = ("basic", "catalog", "crm", "department", "disk", "entity", "task", "user")
# Plan name as CBitrix24 spells it; the portal is a cloud portal on the Professional plan.
_LICENSE = "en_pro100"


def method_scope(method: str) -> str:
    """The scope a method needs (``basic`` ones need none beyond a valid credential)."""
    return method.split(".", 1)[0] if method.startswith("catalog.") else "basic"


def _scope(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    # scopeList: `full` lists every scope of the portal, else the credential's own.
    # ($arQuery['FULL'] == true: PHP's loose truth, so the string "false" is true.)
    full = {str(k).lower(): v for k, v in params.items()}.get("full")
    if full not in (None, "", "0", 0, False):
        return MethodResult(list(_FULL_SCOPE))
    return MethodResult(list(ctx.scopes))


def _method_get(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    # getMethod: {isExisting, isAvailable}, both false without a name; a controller method
    # (catalog.*) is resolved whatever its case.
    name = params.get("name")
    existing = isinstance(name, str) and name.lower() in _KNOWN
    available = existing and method_scope(str(name).lower()) in (*ctx.scopes, "basic")
    return MethodResult({"isExisting": existing, "isAvailable": available})


def _server_time(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    # getServerTime: date('c', time()), the server's own clock.
    now = datetime.fromtimestamp(ctx.server_now(), PORTAL_TZ).replace(microsecond=0)
    return MethodResult(now.isoformat())


def _app_info(ctx: MethodContext, params: Mapping[str, object]) -> MethodResult:
    # appInfo: an application (OAuth) gets its record; a webhook (password) its scope.
    if ctx.caller == "webhook":
        return MethodResult({"SCOPE": list(ctx.scopes), "LICENSE": _LICENSE})
    return MethodResult(
        {
            "ID": 1,
            "CODE": ctx.client_id,
            "VERSION": 1,
            "STATUS": "L",  # a local application
            "INSTALLED": True,
            "PAYMENT_EXPIRED": "N",
            "DAYS": None,
            "LANGUAGE_ID": "en",
            "LICENSE": _LICENSE,
            "LICENSE_TYPE": "pro100",
            "LICENSE_FAMILY": "pro",
        }
    )


_SYSTEM: dict[str, Handler] = {
    "scope": _scope,
    "method.get": _method_get,
    "server.time": _server_time,
    "app.info": _app_info,
}
#: Lower-cased method name -> handler, every method the portal answers but ``batch``.
ALL_METHODS: dict[str, Handler] = METHODS | _SYSTEM
_KNOWN = frozenset(ALL_METHODS) | {"batch"}
