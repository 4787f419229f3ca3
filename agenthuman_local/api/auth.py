"""Who is calling and how often: the `x-api-key` check and the per-key rate limit (SPEC §2).

Every `/v1` route needs a key unless its handler is marked `@public` (routes whose callers
cannot send headers: avatar images, the viewer, the session WebSocket, which authenticates with
its first message). The limit is a fixed one-minute window per key; its state is reported in
`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (unix seconds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from agenthuman_local import ids, keys
from agenthuman_local.errors import RateLimited, Unauthorized

API_KEY_HEADER = "x-api-key"
INVALID_KEYS = "invalid-keys"  # the rate-limit identity every unknown or revoked key shares
_PUBLIC_ATTR = "__agenthuman_public__"

F = TypeVar("F", bound=Callable[..., object])


def public(handler: F) -> F:
    """Mark a /v1 handler as reachable without an API key."""
    setattr(handler, _PUBLIC_ATTR, True)
    return handler


def _needs_key(request: web.Request) -> bool:
    if request.path != "/v1" and not request.path.startswith("/v1/"):
        return False
    return not getattr(request.match_info.handler, _PUBLIC_ATTR, False)


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset_at: int  # unix seconds when the window ends
    retry_after_s: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


class RateLimiter:
    """A fixed one-minute window per identity (a key's hash). `per_minute` 0 turns it off."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._windows: dict[str, tuple[int, int]] = {}  # identity -> (window number, count)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def hit(self, identity: str) -> RateState:
        now = self._clock()
        window = int(now // 60)
        start, count = self._windows.get(identity, (window, 0))
        count = (count if start == window else 0) + 1
        # Only valid keys (and the one identity of all invalid ones) get here, so the table
        # stays as small as the key list.
        self._windows[identity] = (window, min(count, self.per_minute + 1))
        reset_at = (window + 1) * 60
        return RateState(
            limit=self.per_minute,
            remaining=max(0, self.per_minute - count),
            reset_at=reset_at,
            retry_after_s=max(1, math.ceil(reset_at - now)),
            allowed=count <= self.per_minute,
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _needs_key(request):
        return await handler(request)
    key = request.headers.get(API_KEY_HEADER, "").strip()
    if not key:
        raise Unauthorized("API key required")
    account_id = await request.app[keys.store_key].account_for_key(key)
    limiter = request.app[keys.rate_limiter_key]
    if account_id is None:
        # Wrong keys share one window (one identity, so the table stays small): past the limit
        # a guesser gets 429s, and a valid key is never held back by them.
        if limiter.enabled:
            _check(limiter.hit(INVALID_KEYS), request)
        raise Unauthorized("Invalid API key")
    request[keys.account_key] = account_id
    if limiter.enabled:
        _check(limiter.hit(ids.secret_hash(key)), request)
    return await handler(request)


def _check(state: RateState, request: web.Request) -> None:
    request[keys.rate_headers_key] = state.headers()
    if not state.allowed:
        raise RateLimited(
            f"Rate limit of {state.limit} requests per minute exceeded",
            headers={"Retry-After": str(state.retry_after_s)},
            details={"limit": state.limit, "reset": state.reset_at},
        )
