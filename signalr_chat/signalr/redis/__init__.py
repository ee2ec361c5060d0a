"""Scale-out through Redis, on the channels and bytes of ASP.NET Core's Redis backplane.

Needs the `redis` extra (`pip install 'signalr-chat[redis]'`). `wire` is the sans-I/O part:
channel names and the MessagePack layouts; `manager` runs them on redis-py's asyncio client.
"""

from ..hubs import BackplaneUnavailable
from .connect import client_from_url
from .manager import RedisHubLifetimeManager
from .wire import BackplaneProtocolError, RedisChannels

__all__ = [
    "BackplaneProtocolError",
    "BackplaneUnavailable",
    "RedisChannels",
    "RedisHubLifetimeManager",
    "client_from_url",
]
