"""Decoding JSON a client sent, so that its shape cannot hurt the process (issue 12).

`json.loads` recurses in C: ~1 000 levels of `[` raise RecursionError, and a few hundred levels
that decode still break whatever walks the value later (the store's `json.dumps`). `loads` turns
both into a `JsonTooDeep` (a ValueError) past `max_depth` levels of arrays and objects.

Decoding costs by the value, not the byte: 10 MB of `{"a":1},` take 1-4 s, and since the C
decoder never releases the GIL, a worker thread would stall the event loop just the same. So
`loads` first counts the separators (`,` `[` `{`: a C scan, ~1 ms per MB) and refuses more than
`max_items` (`JsonTooBig`) before decoding; a string's length costs next to nothing, so a
base64 image in a JSON body passes. Pure: the REST bodies (`api.parsing`) and the WebSocket
messages (`protocol`) use the same rules.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int = 32  # `http.max_json_depth`
    max_items: int = 10_000  # `http.max_json_items`


DEFAULT_LIMITS = JsonLimits()


class JsonTooBig(ValueError):
    def __init__(self, max_items: int) -> None:
        super().__init__(f"JSON with more than {max_items} values")
        self.max_items = max_items


def item_count(text: str | bytes) -> int:
    """An upper bound on the number of values in `text` (separators inside strings count)."""
    if isinstance(text, bytes):
        return text.count(b",") + text.count(b"[") + text.count(b"{")
    return text.count(",") + text.count("[") + text.count("{")


class JsonTooDeep(ValueError):
    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels")
        self.max_depth = max_depth


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A JSON number as a float, refusing one that overflows to infinity (`1e999`): nothing
    downstream can store or send it (`json.dumps(allow_nan=False)`)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def deeper_than(value: Any, max_depth: int) -> bool:
    """Whether `value` nests arrays/objects more than `max_depth` levels (a scalar is 0)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads(
    text: str | bytes, limits: JsonLimits, *, constants: bool = False, counted: bool = False
) -> Any:
    """JSON within `limits` (JsonTooBig, checked before decoding unless the caller `counted`
    already; JsonTooDeep), without NaN/Infinity (spelled out, or a number too large for a
    float such as `1e999`) unless `constants`; else ValueError (or its subclass
    UnicodeDecodeError)."""
    if not counted and item_count(text) > limits.max_items:
        raise JsonTooBig(limits.max_items)
    try:
        if constants:
            value = json.loads(text)
        else:
            value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise JsonTooDeep(limits.max_depth) from exc
    if deeper_than(value, limits.max_depth):
        raise JsonTooDeep(limits.max_depth)
    return value
