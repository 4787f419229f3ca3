"""Fetching an `image_url` (SPEC §5) without letting it reach what a client could not.

Refused unless `upload.allow_private_urls`: loopback, private, link-local, shared, reserved and
multicast addresses — the server's own routes, cloud metadata services, the LAN. The check
runs where the address is used: a literal IP in the URL is checked before anything is sent, a
host name is resolved by `PublicResolver`, the connector's resolver, which drops non-public
answers (so a name cannot resolve to a public address when checked and a private one when
connected), and redirects are followed here, at most `MAX_REDIRECTS`, each hop checked the
same way. Failures below HTTP share one wording, so the answers do not tell a closed port
from a filtered one or a slow one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from agenthuman_local.errors import ValidationError

FETCH_TIMEOUT_S = 20.0
MAX_REDIRECTS = 5
_CHUNK_BYTES = 64 * 1024
_UNREACHABLE_HINT = (
    "Check that the URL is public and reachable from the server, or upload the file itself."
)


class PrivateAddress(Exception):
    """The URL names, or its host resolves only to, an address that is not public."""


_NAT64_PREFIX = int(ipaddress.IPv6Address("64:ff9b::")) >> 32


def is_public(address: str) -> bool:
    """Whether `address` is a public unicast one; an IPv6 address that carries an IPv4 one
    (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, 6to4 `2002:…`, NAT64 `64:ff9b::a.b.c.d`)
    is judged by that IPv4 address, which is where a stack that routes it would connect."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and int(ip) >> 32 in (0, _NAT64_PREFIX):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast


class PublicResolver(AbstractResolver):
    """The default resolver, keeping only public addresses; none left → `PrivateAddress`."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = [r for r in await self._inner.resolve(host, port, family) if is_public(r["host"])]
        if not found:
            raise PrivateAddress(host)
        return found

    async def close(self) -> None:
        await self._inner.close()


def _literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _check_url(url: str, field: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, "must be an http(s) URL")
    literal = _literal_ip(parts.hostname)
    if not allow_private and literal is not None and not is_public(literal):
        raise PrivateAddress(parts.hostname)


def _private_refusal(field: str) -> ValidationError:
    return ValidationError(
        field,
        "points to a loopback, private or link-local address, which the server does not fetch",
        suggestion="Use a public URL, or upload the file itself (a server on a private network "
        "may set upload.allow_private_urls).",
    )


async def fetch_image(
    url: str,
    field: str,
    *,
    max_bytes: int,
    too_large: Callable[[], Exception],
    allow_private: bool = False,
) -> bytes:
    """GET an http(s) image: bounded in time (`FETCH_TIMEOUT_S`, one deadline for every hop
    together) and size (`max_bytes`, else `too_large()`), redirects followed here and checked,
    private addresses refused."""
    # The connector does not own a resolver it is given: closed here (an aiodns one holds a
    # channel).
    resolver = None if allow_private else PublicResolver()
    connector_args: dict[str, Any] = {} if resolver is None else {"resolver": resolver}
    try:
        async with (
            asyncio.timeout(FETCH_TIMEOUT_S),
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(**connector_args)) as http,
        ):
            for _ in range(MAX_REDIRECTS + 1):
                _check_url(url, field, allow_private)
                async with http.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise ValidationError(
                                field,
                                f"could not be fetched: the server answered HTTP"
                                f" {response.status} without a Location",
                            )
                        url = urljoin(url, location)
                        continue
                    if response.status != 200:
                        raise ValidationError(
                            field,
                            f"could not be fetched: the server answered HTTP {response.status}",
                        )
                    if (response.content_length or 0) > max_bytes:
                        raise too_large()
                    data = bytearray()
                    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
                        data += chunk
                        if len(data) > max_bytes:
                            raise too_large()
                    return bytes(data)
            raise ValidationError(
                field, f"could not be fetched: more than {MAX_REDIRECTS} redirects"
            )
    except PrivateAddress as exc:
        raise _private_refusal(field) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ValidationError(field, "is unreachable", suggestion=_UNREACHABLE_HINT) from exc
    finally:
        if resolver is not None:
            await resolver.close()
