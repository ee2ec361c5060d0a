"""What a process costs, read from /proc: the only numbers that stay honest on a shared box.

CPU comes from utime+stime (all threads), so a window's server CPU is a difference of two
reads; wake-ups come from the voluntary context switches of the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
#: Enough descriptors for 100,000 sockets on each side, with room for the negotiate leftovers.
NOFILE = 210_000


@dataclass(frozen=True, slots=True)
class Sample:
    cpu_s: float
    wakeups: int


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # after "pid (comm)": state is field 0, utime field 11, stime field 12
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def run_seconds(pid: int) -> float:
    """The process's time on a CPU in nanoseconds' precision: the scheduler's run time summed over
    its live threads (/proc/PID/task/*/schedstat), the figure utime+stime are scaled to but which
    /proc/PID/stat rounds to clock ticks (10 ms), too coarse for a server that is nearly idle."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as schedstat:
                total += int(schedstat.read().split(maxsplit=1)[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that just ended
    return total / 1e9


def core_ticks() -> dict[str, tuple[int, int]]:
    """Per CPU ("0", "1", ...): (busy, total) clock ticks since boot, every process counted
    (/proc/stat; idle and iowait are not busy). The box is shared: this tells a core that
    others kept busy from one our processes left free."""
    cores: dict[str, tuple[int, int]] = {}
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
                cores[name[3:]] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return cores


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as status:
        return {key: value.strip() for key, _, value in (line.partition(":") for line in status)}


def rss_kb(pid: int) -> int:
    return int(_status(pid)["VmRSS"].split()[0])


def tcp_ports(pid: int) -> dict[int, tuple[int, int]]:
    """TCP sockets seen from the process's network namespace: inode -> (local port, remote port)."""
    ports: dict[int, tuple[int, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as lines:
                next(lines)  # the header
                for line in lines:
                    fields = line.split()
                    local, remote, inode = fields[1], fields[2], int(fields[9])
                    ports[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def open_fds(pid: int, port: int, upstream_port: int | None = None) -> dict[str, int]:
    """The process's open descriptors (/proc/PID/fd), by kind: `clients` (TCP sockets on its
    own `port`, the listener excluded), `upstream` (TCP sockets to `upstream_port`), `other`
    (the listener, files, pipes, eventfds, epoll...); `total` is all of them."""
    ports = tcp_ports(pid)
    kinds = {"total": 0, "clients": 0, "upstream": 0, "other": 0}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        kinds["total"] += 1
        kind = "other"
        if target.startswith("socket:["):
            local, remote = ports.get(int(target[8:-1]), (0, 0))
            if local == port and remote != 0:
                kind = "clients"
            elif upstream_port is not None and remote == upstream_port:
                kind = "upstream"
        kinds[kind] += 1
    return kinds


def sample(pid: int) -> Sample:
    return Sample(cpu_seconds(pid), int(_status(pid)["voluntary_ctxt_switches"]))


def raise_nofile(limit: int = NOFILE) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (root may raise the hard limit too); returns the soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted_hard in (max(hard, limit), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, wanted_hard), wanted_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def install_uvloop() -> None:
    """Every process of the benchmark runs on uvloop, as the issue asks."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve_main(serve: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """The `main` of a bench server that takes only `--port`: descriptors raised, uvloop, serve."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    raise_nofile()
    install_uvloop()
    asyncio.run(serve(args.port))
