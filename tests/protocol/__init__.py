"""The sans-I/O protocol: JSON and MessagePack hub protocols, handshake, negotiate document,
property tests, the Redis and Azure wire formats."""
