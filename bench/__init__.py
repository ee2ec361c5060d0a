"""Benchmark harness: the project's SignalR server against a raw-aiohttp floor and aiosignalr.

Run `python -m bench --help`. No module here is named `test_*`: pytest never collects it.
"""
