"""One memory budget for the engine's caches (`engine.cache_mb`, issue 12).

Every cache the renderers keep — the still assets of each frame size, each renderer's drawn
feature tiles — is a `BudgetedCache` on the process's one `BUDGET`. Entries carry their size in
bytes and a stamp of their last use; when an insert takes the caches together past the budget,
the least recently used entry of any cache goes first (never the one being inserted). A cache
that is garbage collected (its renderer let go) leaves the budget with it.

Safe from several render threads: every operation holds the budget's lock. Pure Python; the
values may be anything with a size (`size_of`).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_CACHE_MB = 512


class CacheBudget:
    def __init__(self, limit_mb: float = DEFAULT_CACHE_MB) -> None:
        self.limit_bytes = int(limit_mb * 2**20)
        self.lock = threading.RLock()
        self.evictions = 0
        self._caches: weakref.WeakSet[BudgetedCache] = weakref.WeakSet()
        self._stamps = itertools.count()

    def set_limit_mb(self, limit_mb: float) -> None:
        """The budget from `engine.cache_mb`; shrinking it evicts at once."""
        with self.lock:
            self.limit_bytes = int(limit_mb * 2**20)
            self._evict(None)

    @property
    def used_bytes(self) -> int:
        with self.lock:
            return sum(c.nbytes for c in list(self._caches))

    def _register(self, cache: BudgetedCache) -> None:
        with self.lock:
            self._caches.add(cache)

    def _stamp(self) -> int:
        return next(self._stamps)

    def _evict(self, keep: tuple[BudgetedCache, Hashable] | None) -> None:
        """Least recently used entries out, across every cache, until within the limit."""
        while True:
            caches = list(self._caches)
            if sum(c.nbytes for c in caches) <= self.limit_bytes:
                return
            oldest: BudgetedCache | None = None
            oldest_stamp = 0
            for cache in caches:
                stamp = cache._oldest_stamp(keep)
                if stamp is not None and (oldest is None or stamp < oldest_stamp):
                    oldest, oldest_stamp = cache, stamp
            if oldest is None:
                return  # only the entry being inserted is left: it stays, over budget
            oldest._pop_oldest(keep)
            self.evictions += 1


BUDGET = CacheBudget()


class BudgetedCache(Generic[K, V]):
    """A least-recently-used map whose entries count against a `CacheBudget`."""

    def __init__(
        self,
        name: str,
        size_of: Callable[[V], int],
        *,
        budget: CacheBudget | None = None,
        max_entries: int | None = None,
    ) -> None:
        self.name = name
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._size_of = size_of
        self._budget = budget or BUDGET
        self._max_entries = max_entries
        # key → (last-use stamp, value, bytes), oldest use first.
        self._entries: OrderedDict[K, tuple[int, V, int]] = OrderedDict()
        self._budget._register(self)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._budget.lock:
            return key in self._entries

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None."""
        with self._budget.lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries[key] = (self._budget._stamp(), entry[1], entry[2])
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: K, value: V) -> None:
        nbytes = int(self._size_of(value))
        with self._budget.lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[2]
            self._entries[key] = (self._budget._stamp(), value, nbytes)
            self.nbytes += nbytes
            while self._max_entries is not None and len(self._entries) > self._max_entries:
                self._pop_oldest((self, key))
            self._budget._evict((self, key))

    def clear(self) -> None:
        with self._budget.lock:
            self._entries.clear()
            self.nbytes = 0

    def _oldest_stamp(self, keep: tuple[BudgetedCache, Hashable] | None) -> int | None:
        for key, (stamp, _, _) in self._entries.items():
            if keep is None or keep[0] is not self or keep[1] != key:
                return stamp
        return None

    def _pop_oldest(self, keep: tuple[BudgetedCache, Hashable] | None) -> None:
        for key in self._entries:
            if keep is None or keep[0] is not self or keep[1] != key:
                _, _, nbytes = self._entries.pop(key)
                self.nbytes -= nbytes
                return


def tensor_bytes(*tensors: object) -> int:
    """Bytes held by torch tensors (anything with `element_size` and `nelement`)."""
    total = 0
    for t in tensors:
        total += t.element_size() * t.nelement()  # type: ignore[attr-defined]
    return total
