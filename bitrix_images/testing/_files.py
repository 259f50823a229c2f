"""The portal's files: signed ``downloadUrl`` links (REST) and public ``detailUrl`` files.

``downloadUrl`` is the REST method ``download`` with a signed token (CRestUtil::getDownloadUrl,
protocol notes §6). ``detailUrl`` is CFile::GetFileSRC, a ``/upload/iblock/...`` path that
the web server serves as a static file, outside REST and its limits (protocol notes §10.1):
public by default, closed with nginx's 403 page when ``public_files`` is off, or served
from a second origin (``files_origin``, a stand-in for the cloud's storage host; the
``detailUrl`` is then absolute). Both serve the same bytes.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Mapping
from urllib.parse import quote

from aiohttp import web

from ._catalog import ImageRecord, image_mime, make_png
from ._errors import RestError
from ._faults import FileFault
from ._http import Answer, html_answer, send, send_cut
from ._phpquery import parse_str, php_intval
from ._state import Auth, PortalState

__all__ = ["FileRoutes", "content_disposition", "download_token"]

# What a portal behind a login answers for a file it will not show: a 200 HTML page.
_LOGIN_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Authorization</title></head>\n<body>"
    b'<form name="form_auth" method="post" action="/auth/">'
    b'<input type="text" name="USER_LOGIN"><input type="password" name="USER_PASSWORD">'
    b"</form></body></html>\n"
)


def _quote_token(token: str) -> str:
    # Percent-encodes the only reserved characters a download token holds (base64 and "|");
    # much faster than urllib.parse.quote on the hot path of a million links.
    return token.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D").replace("|", "%7C")


def content_disposition(name: str) -> str:
    """
    ``attachment`` with *name*, safe in a header whatever the name holds (RFC 6266).

    The quoted ``filename`` is an ASCII fallback: controls, quotes, backslashes and
    non-ASCII characters become ``_`` (RFC 6266 section 4.3 and RFC 9110's quoted-string);
    ``filename*`` (RFC 8187) carries the real name, percent-encoded, when the two differ. A
    name with a newline or NUL would otherwise break the header, and aiohttp refuses it.
    """
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)
    disposition = f'attachment; filename="{fallback}"'
    if fallback != name:
        disposition += f"; filename*=UTF-8''{quote(name, safe='')}"
    return disposition


def download_token(state: PortalState, image_id: int, auth: Auth) -> str:
    """CRestUtil::getDownloadUrl: scope|base64(query&_=rand)|signature, the signature
    covering the method, the scope, the query and the caller's auth."""
    query = f"id={image_id}&_={state.mac(f'nonce:{image_id}', 16)}"
    encoded = base64.b64encode(query.encode()).decode()
    return f"catalog|{encoded}|{state.mac(f'download|catalog|{encoded}|{auth.signed}')}"


class FileRoutes:
    """``download`` (a REST method) and the static ``/upload/`` files of one portal.

    *sign* spells a download token (:func:`download_token`; passed in so a test can watch
    every token the portal hands out).
    """

    def __init__(self, state: PortalState, sign: Callable[[int, Auth], str]) -> None:
        self._state = state
        self._sign = sign

    # -- downloadUrl ------------------------------------------------------------------------

    def download_url(self, auth: Auth) -> Callable[[ImageRecord], str]:
        """How this caller's ``downloadUrl`` links are spelled."""
        if auth.kind == "webhook":
            prefix = f"{self._state.webhook_url()}download/?"
        else:
            query = "".join(f"{k}={quote(v, safe='')}&" for k, v in auth.query)
            prefix = f"{self._state.client_endpoint()}download.json?{query}"
        return lambda record: prefix + "token=" + _quote_token(self._sign(record.id, auth))

    def download(self, auth: Auth, params: Mapping[str, object]) -> Answer:
        token = params.get("token")
        parts = token.split("|") if isinstance(token, str) else []
        if len(parts) != 3 or not hmac.compare_digest(
            parts[2], self._state.mac(f"download|{parts[0]}|{parts[1]}|{auth.signed}")
        ):
            # CRestServer::processTokenCheckCall -> AccessException (403).
            raise RestError(403, "ACCESS_DENIED", "Link check failed")
        query = parse_str(base64.b64decode(parts[1]).decode())
        record = self._state.catalog.find(php_intval(query.get("id")))
        if record is None:
            raise RestError(404, "ERROR_NOT_FOUND", "File not found")  # [UNCONFIRMED] text
        content = self._state.catalog.content(record)
        return Answer(
            200,
            content,
            image_mime(content) or "application/octet-stream",
            {"Content-Disposition": content_disposition(record.name)},
        )

    # -- detailUrl --------------------------------------------------------------------------

    def _dirs(self, image_id: int) -> tuple[str, str]:
        mac = self._state.mac(f"detail:{image_id}", 10)
        return mac[:3], f"{mac[3:19]}{image_id:016x}"

    def detail_url(self, record: ImageRecord) -> str:
        # CFile::GetFileSRC: a portal-relative /upload/iblock/<3>/<32>/<name> path, or an
        # absolute link on the storage host when the files live there.
        outer, inner = self._dirs(record.id)
        path = f"/upload/iblock/{outer}/{inner}/{quote(record.name)}"
        files = self._state.files_origin
        return path if files is None else f"{files}{path}"

    def _find(self, path: str) -> ImageRecord | None:
        parts = path.split("/")  # "", "upload", "iblock", dir, key, name
        if len(parts) != 6 or parts[:3] != ["", "upload", "iblock"] or len(parts[4]) != 32:
            return None
        try:
            image_id = int(parts[4][16:], 16)
        except ValueError:
            return None
        record = self._state.catalog.find(image_id)
        if record is None or self._dirs(image_id) != (parts[3], parts[4]):
            return None
        return record if record.name == parts[5] else None

    async def serve(self, request: web.Request, *, storage: bool) -> web.StreamResponse:
        """A GET of ``/upload/...`` on the portal's origin, or on the storage origin if
        *storage*: the file as nginx serves it, or its error page."""
        state = self._state
        counters = state.counters
        counters.files += 1
        if (state.files_origin is not None) != storage:
            return send(html_answer(404), counters.files_by_status)
        if not state.options.public_files:
            # An nginx location closing /upload/ (protocol notes §10.1).
            return send(html_answer(403), counters.files_by_status)
        record = self._find(request.path)
        if record is None:
            return send(html_answer(404), counters.files_by_status)
        content = state.catalog.content(record)
        answer = Answer(200, content, image_mime(content) or "application/octet-stream")
        fault = state.faults.take_file(record.id)
        if fault is not None:
            return await self._spoil(request, answer, fault, record.id)
        return send(answer, counters.files_by_status)

    async def _spoil(
        self, request: web.Request, answer: Answer, fault: FileFault, image_id: int
    ) -> web.StreamResponse:
        by_status = self._state.counters.files_by_status
        if fault.kind == "forbidden":
            return send(html_answer(403), by_status)
        if fault.kind == "not_found":
            return send(html_answer(404), by_status)
        if fault.kind == "busy":
            busy = html_answer(503)
            return send(Answer(503, busy.body, busy.content_type, {"Retry-After": "1"}), by_status)
        if fault.kind == "login_page":
            return send(Answer(200, _LOGIN_PAGE, "text/html; charset=UTF-8"), by_status)
        if fault.kind == "other_bytes":
            # Another valid image of about the same size: only a comparison catches it.
            other = make_png(image_id, -1, len(answer.body))
            return send(Answer(200, other, "image/png"), by_status)
        by_status[answer.status] += 1
        return await send_cut(request, answer)
