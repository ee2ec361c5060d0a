"""Runs one `*.test.mjs` file under Node's built-in test runner and fails the pytest with its output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parent / "js"


def run_node_test(js_file: Path, env: dict[str, str], timeout: float) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed")
    if not (JS_DIR / "node_modules" / "@microsoft" / "signalr").is_dir():
        pytest.fail(f"run `npm install` in {JS_DIR}")
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
        pytest.fail(f"{js_file.name} did not finish in {timeout} s\n{exc.stdout}\n{exc.stderr}")
    output = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 0, f"{js_file.name} failed (exit {result.returncode})\n{output}"
