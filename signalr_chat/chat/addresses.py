"""Limits per client address, on anonymous callers: whoever mints guests (or opens connection
after connection) still counts against the address they come from.

Two counts, each a `RateLimits` (in this process, or in Redis for every instance):

- new guest identities per address per window (`GUEST_NEW_PER_ADDRESS` per
  `GUEST_NEW_WINDOW_SECONDS`): a guest id that is alive is kept at no cost; only a new one counts;
- anonymous messages per address, across every guest and connection from it
  (`RATE_LIMIT_MESSAGES_PER_ADDRESS` per `RATE_LIMIT_WINDOW_SECONDS`), counted after the
  caller's own limit allowed the message, so one visitor within their own limit never meets it.

Signed-in users are never counted here: their identity is the server's to give. The address is
the hosting's (`request.remote`: the socket's peer, or the client behind TRUSTED_PROXIES); an
IPv6 address counts by its /64, which one host is commonly handed whole. A caller with no
address (none reported) is not counted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .rate_limit import RateLimits

#: The prefix of an IPv6 network one subscriber is commonly given whole (RFC 6177).
IPV6_PREFIX = 64


def address_key(address: str | None) -> str | None:
    """Whom an address counts as: the address itself (IPv4), its /64 (IPv6), or None."""
    if not address:
        return None
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # a Unix socket's path, or whatever the hosting reported: as it is
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed)


@dataclass(frozen=True, slots=True)
class AddressLimits:
    """The per-address counts, chosen once by the composition root (memory or Redis)."""

    #: New guest identities per address.
    new_guests: RateLimits
    #: Anonymous messages per address, across guests and connections.
    messages: RateLimits

    async def new_guest(self, address: str | None) -> float:
        """Count one new guest from `address`; 0 when allowed, else the seconds to wait."""
        key = address_key(address)
        return 0.0 if key is None else await self.new_guests.hit(f"new-guests:{key}")

    async def message(self, address: str | None) -> float:
        """Count one anonymous message from `address`; 0 when allowed, else the seconds to wait."""
        key = address_key(address)
        return 0.0 if key is None else await self.messages.hit(f"address:{key}")

    async def close(self) -> None:
        await self.new_guests.close()
        if self.messages is not self.new_guests:
            await self.messages.close()
