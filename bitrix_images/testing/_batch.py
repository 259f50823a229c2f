"""``batch``: up to 50 commands in one request, later ones reading earlier results.

CRestProvider::methodsBatch (CORE-NEW ``rest_provider.php``) and DOCS
``settings/how-to-call-rest-api/batch.md``. A command's query may hold references such as
``$result[cmd][products][49][id]``; CRestUtil::ParseBatchQuery / processBatchElement (CORE
``rest_util.php``) substitute them before the command runs, and :func:`resolve` does what
they do, including for a path that is not there (see there).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ._errors import (
    BATCH_LENGTH_EXCEEDED,
    BATCH_METHOD_NOT_ALLOWED,
    INTERNAL_SERVER_ERROR,
    RestError,
)
from ._methods import MethodResult
from ._phpquery import parse_str, php_array
from ._state import PortalState

__all__ = ["BATCH_MAX_LENGTH", "Batch", "Execute", "resolve", "resolve_value"]

# CRestUtil::BATCH_MAX_LENGTH (CORE rest_util.php).
BATCH_MAX_LENGTH = 50
# methodsBatch keeps these five maps; the regular expression is built from their keys.
_REFERENCE = re.compile(r"\$(result|next|total|time|error)(\S*)", re.IGNORECASE)
_PATH_KEY = re.compile(r"\[([^\]]+)\]")
_LIST_INDEX = re.compile(r"^(0|[1-9][0-9]*)$")
# A write is refused inside a batch on portals that forbid it (batch_writes=False).
_WRITES = ("add", "delete", "update", "set")

#: Runs one command: (method, params, billed, tally) -> (result, time block).
Execute = Callable[
    [str, Mapping[str, object], str | None, list[float]],
    tuple[MethodResult, dict[str, object]],
]


def _index(node: object, key: str) -> object:
    """PHP ``isset($node[$key]) ? $node[$key] : null`` over decoded JSON."""
    if isinstance(node, dict):
        value = node.get(key)
        if value is None and _LIST_INDEX.match(key):
            value = node.get(int(key))
        return value
    if isinstance(node, list | str) and _LIST_INDEX.match(key) and int(key) < len(node):
        return node[int(key)]
    return None


def _php_string(value: object) -> str | None:
    # is_numeric($r) ? (string)$r : $r, then only a string is spliced into a longer text.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value if isinstance(value, str) else None


def resolve_value(text: str, store: Mapping[str, object]) -> object:
    """CRestUtil::processBatchElement for one value.

    The path is walked key by key while the key is set; at the first missing key the walk
    stops **where it is**, so a reference past the end of a short page gives the deepest
    value that exists (``$result[a][products][49][id]`` after a page of 10 products gives
    the list of those 10, after a failed command the whole result map). A value that is the
    whole reference becomes that value, whatever its type; a reference inside a longer text
    is replaced only by a string or a number, and otherwise left as written.
    """
    query = text
    for match in _REFERENCE.finditer(text):
        keys = _PATH_KEY.findall(match.group(2))
        if not keys:
            continue
        node = store.get(match.group(1))  # $arResult[$name]: the name's case as written
        for key in keys:
            child = _index(node, key)
            if child is None:
                break
            node = child
        if match.group(0) == text:
            return node  # the only reference: it runs to the end of the text
        spliced = _php_string(node)
        if spliced is not None:
            query = query.replace(match.group(0), spliced)
    return query


def resolve(params: Mapping[str, object], store: Mapping[str, object]) -> dict[str, object]:
    """CRestUtil::processBatchStructure: every string value of *params*, at any depth."""
    resolved: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            resolved[key] = resolve(value, store)
        elif isinstance(value, str) and "$" in value:
            resolved[key] = resolve_value(value, store)
        else:
            resolved[key] = value
    return resolved


def _php_bool(value: object) -> bool:
    """PHP truthiness of a request value ("0" and "" are false, "false" is true)."""
    if isinstance(value, str):
        return value not in ("", "0")
    return bool(value)


def _commands(raw: object) -> list[tuple[str, object]]:
    if isinstance(raw, dict):
        return [(str(k), v) for k, v in raw.items()]
    if isinstance(raw, list):
        return [(str(i), v) for i, v in enumerate(raw)]
    return []


class Batch:
    """One portal's ``batch`` method; *execute* runs a command as a REST call would."""

    def __init__(self, state: PortalState, method_name: Callable[[str], str]) -> None:
        self._state = state
        self._method_name = method_name

    def _check(self, method: str) -> None:
        if method in ("batch", "download"):
            raise RestError.from_body(405, BATCH_METHOD_NOT_ALLOWED)
        if not self._state.options.batch_writes and method.rsplit(".", 1)[-1] in _WRITES:
            # A portal that refuses writes inside batch answers as for download/upload.
            raise RestError.from_body(405, BATCH_METHOD_NOT_ALLOWED)
        fault = self._state.faults.take(method, commands=True)
        if fault is not None:
            raise RestError.from_body(500, fault.body or INTERNAL_SERVER_ERROR)

    def run(self, params: Mapping[str, object], execute: Execute) -> dict[str, object]:
        """The ``result`` of the batch answer (CRestProvider::methodsBatch)."""
        state = self._state
        halt = _php_bool(params.get("halt", False))
        billed = "batch" if state.options.operating_billing == "batch" else None
        spent: list[float] = []
        results: dict[str, object] = {}
        errors: dict[str, object] = {}
        totals: dict[str, object] = {}
        nexts: dict[str, object] = {}
        times: dict[str, object] = {}
        store = {"result": results, "next": nexts, "total": totals, "time": times}
        store["error"] = errors
        for count, (key, call) in enumerate(_commands(params.get("cmd")), start=1):
            # The counter grows before the string check: skipped entries count too.
            if count > BATCH_MAX_LENGTH:
                errors[key] = dict(BATCH_LENGTH_EXCEEDED)
                if halt:
                    break
                continue
            if not isinstance(call, str):
                continue
            path, _, query = call.partition("?")
            method = self._method_name(path)
            state.counters.commands[method] += 1
            try:
                self._check(method)
                arguments = resolve(parse_str(query), store)
                result, block = execute(method, arguments, billed, spent)
            except RestError as error:
                errors[key] = error.body()
                if halt:
                    break
                continue
            results[key] = result.result
            if result.total is not None:
                totals[key] = result.total
            if result.next is not None:
                nexts[key] = result.next
            times[key] = block
        if state.options.operating_billing != "inner" and state.operating is not None:
            # b24jssdk PR #539: the batch as a whole books the time of its commands.
            state.operating.book("batch", sum(spent))
        return {
            "result": php_array(results),
            "result_error": php_array(errors),
            "result_total": php_array(totals),
            "result_next": php_array(nexts),
            "result_time": php_array(times),
        }
