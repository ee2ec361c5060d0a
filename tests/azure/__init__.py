"""Azure SignalR Service: connection strings, tokens, REST, the service double, the app server
through it."""
