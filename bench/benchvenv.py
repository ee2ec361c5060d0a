"""The second virtualenv, for aiosignalr: it pins `websockets<17`, the main venv holds 17.x.

Created on first use at `.venv-bench/` (repo root), with aiohttp, msgpack, orjson and uvloop
pinned to the main venv's versions, so both SignalR servers stand on the same stack.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-bench"
PYTHON = VENV / "bin" / "python"
AIOSIGNALR = "aiosignalr==0.1.1"
SHARED = ("aiohttp", "msgpack", "orjson", "uvloop")


def requirements() -> list[str]:
    return [AIOSIGNALR, *(f"{name}=={metadata.version(name)}" for name in SHARED)]


def ensure() -> Path:
    """The venv's python, after creating or completing the venv if needed."""
    stamp = VENV / ".bench-installed"
    wanted = "\n".join(requirements())
    if stamp.is_file() and stamp.read_text() == wanted:
        return PYTHON
    if not PYTHON.exists():
        print(f"creating {VENV} for aiosignalr", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        (VENV / ".gitignore").write_text("*\n")  # as `python -m venv` does from 3.13 on
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements()], check=True
    )
    stamp.write_text(wanted)
    return PYTHON


def installed() -> dict[str, str]:
    """Package versions in the bench venv, for the report."""
    names = ["aiosignalr", *SHARED, "websockets"]
    code = f"from importlib import metadata as m;print(' '.join(m.version(n) for n in {names!r}))"
    out = subprocess.run([str(PYTHON), "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return dict(zip(names, out, strict=True))
