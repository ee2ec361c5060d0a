"""`python -m signalr_chat` as processes: the chat end to end, bad HTTP, slow sockets, graceful
drain, crash consistency."""
