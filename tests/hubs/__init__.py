"""The hub layer in process: hub methods, the lifetime manager, the hub connection, authentication
expiry."""
