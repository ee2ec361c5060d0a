"""The AI chat: a hub over the model providers, with per-user history.

It uses the SignalR hub layer like any application would and never touches framing.
"""

from .hub import ChatHub
from .service import ChatService

__all__ = ["ChatHub", "ChatService"]
