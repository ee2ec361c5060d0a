"""One instance of a scaled-out hub: the test hub's routing on a Redis lifetime manager, or
behind Azure SignalR Service (its double in the tests).

Run as `python -m tests.support.scale_out_app --port N (--redis URL | --azure-signalr CONNECTION_STRING)
[--name A]`. Several instances on one Redis, or behind one service, serve one hub together;
behind the service, clients stay on the instance that answered their negotiate (sticky mode
Required), so a test knows where each connection lives.
"""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

from signalr_chat.signalr import ClientProxy, Hub, HubEndpoint, HubException, HubOptions, map_hub
from signalr_chat.signalr.redis import RedisHubLifetimeManager

from .hub_app import drop_socket, validate

INSTANCE: dict[str, Any] = {"name": "?"}
ENDPOINTS: list[HubEndpoint] = []


class ScaleOutHub(Hub):
    async def whoami(self) -> list[str]:
        """This connection's id and the instance serving it."""
        return [self.context.connection_id, INSTANCE["name"]]

    async def echo(self, message: Any) -> Any:
        return message

    async def route(self, kind: str, target: Any, message: Any) -> None:
        """Sends `Routed(kind, message)` through one of the hub's routings."""
        clients = self.clients
        proxy: ClientProxy
        match kind:
            case "all":
                proxy = clients.all
            case "all_except":
                proxy = clients.all_except(target)
            case "others":
                proxy = clients.others
            case "connection":
                proxy = clients.client(target)
            case "connections":
                proxy = clients.clients(target)
            case "group":
                proxy = clients.group(target)
            case "groups":
                proxy = clients.groups(target)
            case "group_except":
                proxy = clients.group_except(target[0], target[1])
            case "others_in_group":
                proxy = clients.others_in_group(target)
            case "user":
                proxy = clients.user(target)
            case "users":
                proxy = clients.users(target)
            case _:
                raise HubException(f"no routing {kind}")
        await proxy.send("Routed", kind, message)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        try:
            await self.groups.add(connection_id, group)
        except ConnectionError as exc:
            raise HubException(str(exc)) from None

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        try:
            await self.groups.remove(connection_id, group)
        except ConnectionError as exc:
            raise HubException(str(exc)) from None

    async def ask(self, connection_id: str, method: str, argument: Any) -> Any:
        """A client result from any connection, wherever it is served."""
        try:
            return await self.clients.client(connection_id).invoke(method, argument)
        except ConnectionError as exc:
            raise HubException(str(exc)) from None

    async def drop_transport(self) -> None:
        drop_socket(ENDPOINTS, self.context.connection_id)

    async def backplane_connected(self) -> bool:
        lifetime = ENDPOINTS[0].lifetime
        if isinstance(lifetime, RedisHubLifetimeManager):
            return lifetime.connected
        return getattr(lifetime, "pool", None) is not None and lifetime.pool.problem is None  # type: ignore[attr-defined]


OPTIONS = HubOptions(allow_stateful_reconnect=True, max_parallel_invocations=4, client_result_timeout=20)


def create_app(redis_url: str | None = None, azure_signalr: str | None = None) -> web.Application:
    app = web.Application()
    if azure_signalr is not None:
        from signalr_chat.signalr.azure import AzureSignalR, ServiceOptions

        service = AzureSignalR(azure_signalr, ServiceOptions(connection_count=2, server_sticky_mode="Required"))
        ENDPOINTS.append(
            service.map_hub(app, "/scaled", ScaleOutHub, options=OPTIONS, validator=validate, hub_name="scaled")
        )
        return app
    assert redis_url is not None
    manager = RedisHubLifetimeManager(redis_url, timeout=2.0)
    ENDPOINTS.append(
        map_hub(
            app, "/scaled", ScaleOutHub, options=OPTIONS, lifetime=manager, validator=validate, hub_name="Tests.Scaled"
        )
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--redis")
    group.add_argument("--azure-signalr")
    parser.add_argument("--name", default="?")
    args = parser.parse_args()
    INSTANCE["name"] = args.name
    from signalr_chat.hosting.server import run

    run(create_app(args.redis, args.azure_signalr), "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
