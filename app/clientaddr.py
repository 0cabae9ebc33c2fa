"""The client's address, for per-address limits.

The address is the TCP peer's, except when that peer is a reverse proxy listed in
``CNNLAB_TRUSTED_PROXIES`` (addresses or networks, comma-separated; none by default): then the
``X-Forwarded-For`` header is read from its right end, skipping the trusted proxies, and the
first address that is not one of them is the client. A header sent by anyone else is ignored,
so a client cannot pick its own address.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from starlette.requests import HTTPConnection
from starlette.types import Scope

UNKNOWN = "unknown"

Networks = tuple[IPv4Network | IPv6Network, ...]


@lru_cache(maxsize=16)
def parse_networks(text: str) -> Networks:
    """``"10.0.0.1, 10.1.0.0/16"`` → the networks it names. Raises ValueError on a bad entry."""
    return tuple(ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _trusted(address: str, networks: Networks) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def is_trusted(address: str, trusted_proxies: str) -> bool:
    """Whether ``address`` is one of the proxies in ``trusted_proxies`` (the setting's text)."""
    return _trusted(address, parse_networks(trusted_proxies))


def client_address(scope: Scope, trusted_proxies: str = "") -> str:
    """The address of the client behind ``scope`` (an ASGI http or websocket scope)."""
    client = scope.get("client")
    peer = client[0] if client else UNKNOWN
    networks = parse_networks(trusted_proxies)
    if not networks or not _trusted(peer, networks):
        return peer
    forwarded = HTTPConnection(scope).headers.getlist("x-forwarded-for")
    hops = [hop.strip() for header in forwarded for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            try:
                return str(ip_address(hop))
            except ValueError:  # a proxy passed on garbage: the proxy is all we know
                return peer
    return peer
