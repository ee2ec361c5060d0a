"""The project itself: the Makefile's setup, lockfiles and repo hygiene, the benchmark's report."""
