"""Decoding JSON a client sent, so that its shape cannot hurt the process (issue 12).

`json.loads` recurses in C: ~1 000 levels of `[` raise RecursionError, and a few hundred levels
that decode still break whatever walks the value later (the store's `json.dumps`). `loads` turns
both into a `JsonTooDeep` (a ValueError) past `max_depth` levels of arrays and objects. Pure: the
REST bodies (`api.parsing`) and the WebSocket messages (`protocol`) use the same rule.
"""

from __future__ import annotations

import json
from typing import Any


class JsonTooDeep(ValueError):
    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels")
        self.max_depth = max_depth


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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


def loads(text: str | bytes, *, max_depth: int, constants: bool = False) -> Any:
    """JSON at most `max_depth` deep, without NaN/Infinity unless `constants`; else ValueError
    (or its subclasses UnicodeDecodeError, JsonTooDeep)."""
    try:
        value = json.loads(text, parse_constant=None if constants else _reject_constant)
    except RecursionError as exc:
        raise JsonTooDeep(max_depth) from exc
    if deeper_than(value, max_depth):
        raise JsonTooDeep(max_depth)
    return value
