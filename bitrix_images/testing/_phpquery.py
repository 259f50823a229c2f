"""PHP's view of request data: ``parse_str``, ``intval`` and ``json_encode`` array quirks.

The real portal is PHP. Every request body that is not JSON goes through ``parse_str``
(CORE ``modules/rest/classes/general/rest_util.php::getRequestData``), and so does the query
of every batch command (CORE ``rest_provider.php::methodsBatch``). Answers go through
``json_encode``, which writes an empty array as ``[]`` and an array keyed ``0..n-1`` as a
JSON list. These pure functions reproduce those rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, unquote_plus

__all__ = [
    "PhpArray",
    "http_build_query",
    "insert_pair",
    "is_list_keys",
    "parse_str",
    "php_array",
    "php_intval",
    "php_values",
]

#: A PHP array as parsed from a query string: string keys, values are strings or arrays.
PhpArray = dict[str, object]

_INT_KEY = re.compile(r"^(0|-?[1-9][0-9]*)$")
_INTVAL = re.compile(r"^\s*([+-]?[0-9]+)")


def _split_key(raw: str) -> tuple[str, list[str]]:
    """Split ``a[b][]`` into ``("a", ["b", ""])`` the way ``php_register_variable_ex`` does."""
    raw = raw.lstrip(" ")
    bracket = raw.find("[")
    base = raw if bracket < 0 else raw[:bracket]
    segments: list[str] = []
    if bracket >= 0:
        rest = raw[bracket:]
        while rest.startswith("["):
            close = rest.find("]")
            if close < 0:
                if not segments:
                    # An unmatched "[" in the name is turned into "_" and the rest kept.
                    base = base + "_" + rest[1:]
                break
            segments.append(rest[1:close])
            rest = rest[close + 1 :]
    # PHP turns spaces and dots of the top-level name into underscores.
    base = base.replace(" ", "_").replace(".", "_")
    return base, segments


def _next_index(array: PhpArray) -> str:
    ints = [int(k) for k in array if _INT_KEY.match(k)]
    return str(max(max(ints) + 1, 0) if ints else 0)


def insert_pair(target: PhpArray, raw_key: str, value: object) -> None:
    """Store one ``key=value`` pair into ``target`` with PHP bracket semantics."""
    base, segments = _split_key(raw_key)
    if not base:
        return
    keys = [base, *segments]
    node = target
    for depth, raw in enumerate(keys):
        key = _next_index(node) if raw == "" and depth > 0 else raw
        if depth == len(keys) - 1:
            node[key] = value
            return
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child


def parse_str(query: str) -> PhpArray:
    """PHP ``parse_str``: ``select[]=id&fields[productId]=1`` becomes nested arrays."""
    result: PhpArray = {}
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        insert_pair(result, unquote_plus(key), unquote_plus(value))
    return result


def http_build_query(params: Mapping[str, object], prefix: str = "") -> str:
    """PHP ``http_build_query``: the inverse of :func:`parse_str` (lists use ``[0]``, ``[1]``)."""
    parts: list[str] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            nested = http_build_query(value, name)
            if nested:
                parts.append(nested)
        elif isinstance(value, list | tuple):
            nested = http_build_query({str(i): v for i, v in enumerate(value)}, name)
            if nested:
                parts.append(nested)
        else:
            text = str(int(value)) if isinstance(value, bool) else "" if value is None else value
            parts.append(f"{quote(name, safe='')}={quote(str(text), safe='')}")
    return "&".join(parts)


def php_intval(value: object) -> int:
    """PHP ``intval``: leading digits of a string, truncation of a float, 1 for a non-empty
    array and 0 for an empty one, 0 otherwise."""
    if isinstance(value, dict | list):
        return 1 if value else 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        match = _INTVAL.match(value)
        return int(match.group(1)) if match else 0
    return 0


def php_values(value: object) -> list[object]:
    """``array_values``: the values of a parsed array (dict or JSON list), in order."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    return []


def is_list_keys(keys: list[str]) -> bool:
    """True when the keys are exactly ``"0".."n-1"`` in order (a PHP packed array)."""
    return all(key == str(i) for i, key in enumerate(keys))


def php_array(mapping: Mapping[str, object]) -> object:
    """Shape a PHP array as ``json_encode`` writes it: ``[]`` when empty, a list for 0..n-1."""
    keys = list(mapping)
    if is_list_keys(keys):
        return [mapping[k] for k in keys]
    return dict(mapping)
