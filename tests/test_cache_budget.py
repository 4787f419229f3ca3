"""engine.cache_mb: one memory budget for the per-size assets and every renderer's tiles."""

from __future__ import annotations

import gc

import torch

from agenthuman_local.engine import procedural, procedural_assets
from agenthuman_local.engine.base import N_PARAMS, FrameSize
from agenthuman_local.engine.cache import BudgetedCache, CacheBudget

MB = 2**20


def test_the_least_recently_used_entry_of_any_cache_goes_first() -> None:
    budget = CacheBudget(limit_mb=3)
    a = BudgetedCache("a", len, budget=budget)
    b = BudgetedCache("b", len, budget=budget)
    a.put("x", b"1" * MB)
    b.put("y", b"2" * MB)
    a.put("z", b"3" * MB)
    assert a.get("x") is not None  # x is now newer than y
    b.put("w", b"4" * MB)  # 4 MB > 3: y, the least recently used anywhere, goes
    assert "y" not in b and "x" in a and "z" in a and "w" in b
    assert budget.used_bytes == 3 * MB and budget.evictions == 1


def test_an_entry_bigger_than_the_budget_stays_alone_and_a_dead_cache_leaves() -> None:
    budget = CacheBudget(limit_mb=1)
    a = BudgetedCache("a", len, budget=budget)
    a.put("small", b"1" * 1000)
    a.put("big", b"2" * (2 * MB))
    assert "big" in a and "small" not in a
    b = BudgetedCache("b", len, budget=budget)
    del a
    gc.collect()
    b.put("k", b"3" * 1000)
    assert "k" in b and budget.used_bytes == 1000
    budget.set_limit_mb(0)  # a shrink evicts at once
    assert "k" not in b and budget.used_bytes == 0


def test_assets_of_many_sizes_stay_within_the_budget(monkeypatch) -> None:
    budget = CacheBudget(limit_mb=16)
    monkeypatch.setattr(
        procedural_assets,
        "_ASSETS",
        BudgetedCache("procedural assets", procedural_assets._asset_bytes, budget=budget),
    )
    for width in (256, 320, 384, 448, 512):  # each 4:3 size's assets: ~2.5-10 MB
        r = procedural.ProceduralRenderer("avat_local_ada", FrameSize(width, width * 3 // 4))
        r.render(torch.zeros(1, N_PARAMS))
        del r
        gc.collect()
        assert budget.used_bytes <= 16 * MB
    assert budget.evictions > 0
    # The newest size is still cached: a renderer of it paints nothing again.
    style = procedural.STYLES["avat_local_ada"]
    assert procedural_assets._ASSETS.get((style, 512, 384, "cpu")) is not None
