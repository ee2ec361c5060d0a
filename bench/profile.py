"""`--profile`: py-spy samples the server while the load runs, and the hot spots are summed up.

py-spy attaches from outside (no change to the server, little overhead) and writes
collapsed stacks; `hot_spots` turns them into inclusive and self percentages per function.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import servers


def py_spy() -> str | None:
    venv = servers.ROOT / ".venv" / "bin" / "py-spy"
    return str(venv) if venv.exists() else shutil.which("py-spy")


@contextmanager
def sampling(pid: int, seconds: float, out: Path, delay: float = 0.5) -> Iterator[None]:
    """Sample `pid` for `seconds`, starting `delay` s in (after the connections are set up)."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    argv = [binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250"]
    argv += ["--format", "raw", "--output", str(out), "--nonblocking"]
    process: subprocess.Popen[bytes] | None = None

    def start() -> None:
        nonlocal process
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    timer = threading.Timer(delay, start)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        deadline = time.monotonic() + seconds + 10
        while process is None and time.monotonic() < deadline and timer.is_alive():
            time.sleep(0.05)
        if process is not None:
            try:
                process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


def hot_spots(raw: Path, top: int = 25) -> list[str]:
    """Functions by share of samples: inclusive (anywhere on the stack) and self (on top)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return ["no samples"]
    lines = [f"{total} samples; inclusive % / self %"]
    for frame, n in inclusive.most_common(top):
        lines.append(f"{100 * n / total:5.1f} / {100 * own[frame] / total:5.1f}  {frame}")
    lines.append("-- by self time --")
    for frame, n in own.most_common(top):
        lines.append(f"{100 * inclusive[frame] / total:5.1f} / {100 * n / total:5.1f}  {frame}")
    return lines


LINE = re.compile(r":\d+\)$")


def _short(frame: str) -> str:
    """`function (path/to/module.py)`: line numbers dropped, the site-packages prefix cut."""
    frame = LINE.sub(")", frame)
    for marker in ("site-packages/", "lib/python3.11/", str(servers.ROOT) + "/"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            return f"{head}({tail.split(marker, 1)[-1]}"
    return frame
