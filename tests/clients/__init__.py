"""Real SignalR clients against server processes: the stock JS client suites (tests/js) and the
Python clients."""
