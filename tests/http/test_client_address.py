"""The client's address behind trusted proxies (hosting/client_address.py): the rightmost
`X-Forwarded-For` hop that is not a trusted proxy, and only when the peer is one."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from signalr_chat.hosting.client_address import TrustedProxies, client_address, forwarded_middleware, parse_address

PROXIES = TrustedProxies.parse("10.0.0.0/8, 127.0.0.1 ::1,2001:db8:ffff::/48")


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_address("203.0.113.7", ["198.51.100.1"], PROXIES) == "203.0.113.7"
    assert client_address("203.0.113.7", [], TrustedProxies()) == "203.0.113.7"
    assert client_address("10.0.0.2", ["198.51.100.1"], TrustedProxies()) == "10.0.0.2", "nothing trusted"


def test_a_trusted_peer_forwards_the_rightmost_untrusted_hop() -> None:
    assert client_address("10.0.0.2", ["198.51.100.1"], PROXIES) == "198.51.100.1"
    # the client sent its own header: only what the proxies appended counts
    assert client_address("10.0.0.2", ["6.6.6.6, 198.51.100.1"], PROXIES) == "198.51.100.1"
    # several proxies: every trusted hop is walked past
    assert client_address("127.0.0.1", ["6.6.6.6, 198.51.100.1, 10.1.2.3, 10.4.5.6"], PROXIES) == "198.51.100.1"
    # several headers are one list, in order
    assert client_address("10.0.0.2", ["6.6.6.6", "198.51.100.1, 10.9.9.9"], PROXIES) == "198.51.100.1"
    # every hop trusted: the leftmost is as far as anyone knows
    assert client_address("10.0.0.2", ["10.0.0.9, 10.0.0.8"], PROXIES) == "10.0.0.9"
    # a trusted peer that forwards nothing is the client
    assert client_address("10.0.0.2", [], PROXIES) == "10.0.0.2"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        (["unknown"], "10.0.0.2"),
        (["6.6.6.6, garbage"], "10.0.0.2"),
        (["198.51.100.1, _hidden, 10.0.0.5"], "10.0.0.5"),
        ([""], "10.0.0.2"),
        ([" , "], "10.0.0.2"),
        (["1.2.3.4.5"], "10.0.0.2"),
        (["198.51.100.1:"], "10.0.0.2"),
        (["[2001:db8::1"], "10.0.0.2"),
        (["[2001:db8::1]x"], "10.0.0.2"),
        (["\x00\xff"], "10.0.0.2"),
    ],
)
def test_a_hop_that_is_no_address_stops_at_the_proxy_that_passed_it(forwarded: list[str], expected: str) -> None:
    assert client_address("10.0.0.2", forwarded, PROXIES) == expected


def test_ipv6_ports_and_mapped_addresses() -> None:
    assert client_address("::1", ["2001:db8::7"], PROXIES) == "2001:db8::7"
    assert client_address("::1", ["[2001:db8::7]:443"], PROXIES) == "2001:db8::7"
    assert client_address("::1", ["198.51.100.1:5678"], PROXIES) == "198.51.100.1"
    assert client_address("2001:db8:ffff::9", ["2001:0db8:0000::0007, 2001:db8:ffff:1::1"], PROXIES) == "2001:db8::7"
    # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: trusted as their IPv4 address
    assert client_address("::ffff:10.0.0.2", ["198.51.100.1"], PROXIES) == "198.51.100.1"
    assert client_address("::ffff:203.0.113.7", [], PROXIES) == "203.0.113.7"
    assert client_address("10.0.0.2", ["::ffff:198.51.100.1"], PROXIES) == "198.51.100.1"
    assert client_address("10.0.0.2", ["[::ffff:10.0.0.3]:80, 10.0.0.4"], PROXIES) == "10.0.0.3"


def test_no_address_at_all() -> None:
    assert client_address(None, ["198.51.100.1"], PROXIES) is None
    assert client_address("/run/app.sock", ["198.51.100.1"], PROXIES) == "/run/app.sock"
    assert parse_address("localhost") is None


def test_the_setting_is_checked() -> None:
    assert not TrustedProxies.parse("")
    assert PROXIES.trusts(parse_address("10.200.0.1"))
    assert not PROXIES.trusts(parse_address("11.0.0.1"))
    assert not PROXIES.trusts(None)
    with pytest.raises(ValueError, match="not an address"):
        TrustedProxies.parse("10.0.0.0/8, nginx")


async def _remote_seen(aiohttp_client: Any, trusted: TrustedProxies, headers: dict[str, str]) -> str:
    async def show(request: web.Request) -> web.Response:
        return web.Response(text=str(request.remote))

    app = web.Application(middlewares=[forwarded_middleware(trusted)])
    app.router.add_get("/", show)
    client = await aiohttp_client(app)
    response = await client.get("/", headers=headers)
    return str(await response.text())


async def test_the_middleware_gives_the_app_the_clients_address(aiohttp_client: Any) -> None:
    loopback = TrustedProxies.parse("127.0.0.1, ::1")
    assert await _remote_seen(aiohttp_client, loopback, {"X-Forwarded-For": "6.6.6.6, 198.51.100.1"}) == "198.51.100.1"
    assert await _remote_seen(aiohttp_client, loopback, {}) == "127.0.0.1"
    elsewhere = TrustedProxies.parse("10.0.0.0/8")
    assert await _remote_seen(aiohttp_client, elsewhere, {"X-Forwarded-For": "198.51.100.1"}) == "127.0.0.1"


def test_behind_azure_signalr_service_the_service_is_the_proxy() -> None:
    """The service appends the address its client connected from: the rightmost hop, unless
    that is a proxy the operator put in front of the service (TRUSTED_PROXIES)."""
    nothing = TrustedProxies()
    assert client_address(None, ["6.6.6.6, 198.51.100.1"], nothing, via_proxy=True) == "198.51.100.1"
    assert client_address(None, ["198.51.100.1, 10.0.0.5"], PROXIES, via_proxy=True) == "198.51.100.1"
    assert client_address("10.9.9.9", ["198.51.100.1"], nothing, via_proxy=True) == "198.51.100.1"
    assert client_address(None, [], nothing, via_proxy=True) is None
    assert client_address(None, ["garbage"], nothing, via_proxy=True) is None
    assert client_address(None, ["198.51.100.1, garbage, 10.0.0.5"], PROXIES, via_proxy=True) == "10.0.0.5"
