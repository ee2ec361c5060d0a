"""Runs a suite of `*.test.mjs` files under Node's test runner, files in parallel, and
reports each file's outcome on its own.

Each file runs as its own `node --test FILE` process, up to CONCURRENCY at once: a suite
takes about its slowest files' time rather than the sum. (One `node --test` over all the
files runs them just as concurrently, but Node 20 attributes each result to the file that
called `test()`, which for `matrixTest` is harness.mjs, so its report cannot be split by
file.) Each file's pytest test then passes or fails on that file's run alone, with its own
output and the command that reruns it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from .paths import JS_DIR

#: Files at once: one per core (each file is a Node process; the servers under test share the cores).
CONCURRENCY = os.cpu_count() or 2


@dataclass(frozen=True)
class FileRun:
    """One file's `node --test` run."""

    file: Path
    returncode: int | None  # None: cut off at the timeout
    output: str
    seconds: float

    def check(self, timeout: float) -> None:
        rerun = f"cd {JS_DIR} && node --test {self.file.relative_to(JS_DIR)}"
        if self.returncode is None:
            pytest.fail(f"{self.file.name} did not finish in {timeout} s\n{self.output}\n--- rerun it alone\n{rerun}")
        assert self.returncode == 0, (
            f"{self.file.name} failed (exit {self.returncode}, {self.seconds:.1f} s)\n{self.output}\n"
            f"--- rerun it alone\n{rerun}"
        )


def run_node_suite(js_files: Sequence[Path], env: dict[str, str], timeout: float) -> dict[Path, FileRun]:
    """Runs every file of `js_files` (under JS_DIR), CONCURRENCY at a time; never raises for a failing file."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed")
    if not (JS_DIR / "node_modules" / "@microsoft" / "signalr").is_dir():
        pytest.fail(f"run `npm install` in {JS_DIR}")

    def run(js_file: Path) -> FileRun:
        started = time.monotonic()
        try:
            result = subprocess.run(
                [node, "--test", "--test-reporter=spec", str(js_file.relative_to(JS_DIR))],
                cwd=JS_DIR,  # packages resolve from tests/js/node_modules
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            output = _text(exc.stdout) + _text(exc.stderr)
            return FileRun(js_file, None, output, time.monotonic() - started)
        output = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        return FileRun(js_file, result.returncode, output, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        return {run.file: run for run in pool.map(run, js_files)}


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""
