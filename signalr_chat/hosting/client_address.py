"""The client's address behind the proxies the operator trusts (TRUSTED_PROXIES).

The socket's peer is the client unless it is a trusted proxy. Only then is `X-Forwarded-For`
read, from the right: each proxy appends the address it received the request from, so the
rightmost hop that is not itself a trusted proxy is the client, as far as anyone trusted can
tell. Whatever is left of it was written by the client and is ignored (a client cannot pass
itself off as another address by sending its own `X-Forwarded-For`). A hop that is not an
address (`unknown`, an obfuscated name, garbage) ends the walk: the nearest trusted address
to its right is used, the proxy that passed it on, so such requests share that proxy's
address rather than spelling a new one each. Ports (`1.2.3.4:5678`, `[2001:db8::1]:443`) are
dropped, and an IPv4-mapped IPv6 address is its IPv4 address.

The same rule, `client_address`, serves a hosting that is not aiohttp's (Azure SignalR
Service passes the client's `X-Forwarded-For` in its OpenConnection headers: the service is
the trusted proxy there). `forwarded_middleware` applies it to aiohttp requests:
`request.remote` is then the client's address, for the app and for SignalR's hub context.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> Address | None:
    """An address as a header or a socket spells it (port and brackets dropped), or None."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("["):  # [v6] or [v6]:port
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
        text = host
    elif text.count(":") == 1:  # v4:port
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The proxies whose `X-Forwarded-For` is believed: addresses and networks (CIDR)."""

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[str | Network] = ()) -> None:
        parsed: list[Network] = []
        for item in networks:
            if isinstance(item, str):
                item = item.strip()
                if not item:
                    continue
                try:
                    network = ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"not an address or network (CIDR): {item!r}") from None
                if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
                    mapped = network.network_address.ipv4_mapped
                    network = ipaddress.ip_network(f"{mapped}/{max(0, network.prefixlen - 96)}")
                parsed.append(network)
            else:
                parsed.append(item)
        self._networks: Final = tuple(parsed)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """From a comma- or space-separated list: `10.0.0.0/8, 127.0.0.1, ::1`."""
        return cls(text.replace(",", " ").split())

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks]!r})"

    def trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self._networks)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: TrustedProxies, *, via_proxy: bool = False
) -> str | None:
    """The client's address: `peer` (the socket's) unless it is a trusted proxy; then the
    rightmost hop of the `X-Forwarded-For` values (in the order received) that is not a trusted
    proxy; or, when every hop is trusted, the leftmost one.

    `via_proxy`: the request came from a proxy trusted whatever its address (Azure SignalR
    Service, over the server connection the app opened to it): `peer` is not looked at, and
    without an address among the hops the client's is unknown (None)."""
    address: Address | None = None
    if not via_proxy:
        address = parse_address(peer) if peer is not None else None
        if address is None:
            return peer  # a Unix socket, or no peer at all: nothing to walk from
        if not trusted.trusts(address):
            return str(address)
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        previous = address
        address = parse_address(hop)
        if address is None:  # not an address: the proxy that passed it on is as far as we know
            return str(previous) if previous is not None else None
        if not trusted.trusts(address):
            return str(address)
    return str(address) if address is not None else None


def forwarded_middleware(trusted: TrustedProxies) -> Middleware:
    """An aiohttp middleware: `request.remote` is the client's address (`client_address`).
    A request straight from an untrusted peer goes through untouched (no copy)."""

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote
        if trusted.trusts(parse_address(peer) if peer is not None else None):
            remote = client_address(peer, request.headers.getall(hdrs.X_FORWARDED_FOR, ()), trusted)
            if remote is not None and remote != peer:
                request = request.clone(remote=remote)
        return await handler(request)

    return forwarded
