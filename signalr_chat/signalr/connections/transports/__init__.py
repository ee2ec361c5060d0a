"""Thin aiohttp adapters that move bytes between HTTP and a Connection."""
