"""Helpers shared by the tests: fixtures, servers run as processes, doubles, waiting."""
