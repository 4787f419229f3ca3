"""Benchmarks for `make bench` (`python -m bench`): sections of measured figures with goals.

A section is a function returning a list of `Figure`s; `bench/__main__.py` lists the sections,
runs them, writes `bench/results.json`, prints a table and exits non-zero on a missed goal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    section: str
    name: str
    value: float
    unit: str
    goal: str | None = None  # e.g. "<= 10", ">= 100"; None = reported only
    conditions: str = ""

    @property
    def ok(self) -> bool | None:
        if self.goal is None:
            return None
        op, _, bound = self.goal.partition(" ")
        limit = float(bound)
        return self.value <= limit if op == "<=" else self.value >= limit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}
