"""Identifiers and secrets: prefixed ULIDs, API keys, per-session tokens and the hash we store.

Ids are ULIDs made monotonic within a millisecond, so sorting by id is sorting by creation time;
the session list pages on that order. Secrets are stored only as SHA-256 hex digests; viewer
tokens not at all (an HMAC of the session id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import string
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_KEY_ALPHABET = string.ascii_letters + string.digits
# How many leading characters of a key are kept in clear for listing and revoking: `ah_live_`
# and 8 random ones (62^8 ≈ 2·10^14), so a typed prefix names one key. Keys made before keep
# the 12 (4 random) they were stored with.
KEY_PREFIX_LEN = 16


class _MonotonicUlid:
    """ULIDs (48-bit ms time + 80 random bits) that strictly increase within one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def __call__(self) -> str:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms <= self._last_ms:
                now_ms = self._last_ms
                rand = (self._last_rand + 1) % (1 << 80)
            else:
                rand = int.from_bytes(os.urandom(10), "big")
            self._last_ms, self._last_rand = now_ms, rand
        value = (now_ms << 80) | rand
        return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


new_ulid = _MonotonicUlid()


def new_id(prefix: str) -> str:
    """`sess_01H…`, `avat_01H…`, `acct_01H…`."""
    return f"{prefix}_{new_ulid()}"


def is_ulid_id(value: str, prefix: str) -> bool:
    head, sep, tail = value.partition("_")
    return head == prefix and bool(sep) and len(tail) == 26 and all(c in _CROCKFORD for c in tail)


def new_api_key(kind: str = "live") -> str:
    """`ah_live_<32 letters and digits>` (SPEC §2)."""
    return f"ah_{kind}_" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(32))


def new_token() -> str:
    """A per-session secret (access/session token, viewer token): 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_viewer_secret() -> bytes:
    return secrets.token_bytes(32)


def viewer_token(secret: bytes, session_id: str) -> str:
    """A session's viewer token: HMAC-SHA256 of its id under the data folder's viewer secret,
    URL-safe base64 (43 characters). Derived on demand, never stored."""
    digest = hmac.new(secret, session_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(secret: str, digest: str) -> bool:
    """Constant-time comparison of a presented secret with a stored digest."""
    return secrets.compare_digest(secret_hash(secret), digest)
