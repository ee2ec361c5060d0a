"""The stock @microsoft/signalr JavaScript client against our server.

Each `tests/js/*.test.mjs` file runs under Node's built-in test runner, with the hub
server's address in SIGNALR_BASE_URL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .conftest import HubServer

JS_DIR = Path(__file__).resolve().parent / "js"
JS_FILES = sorted(JS_DIR.glob("*.test.mjs"))
NODE_TIMEOUT = 180


def test_js_suite_exists() -> None:
    assert JS_FILES, f"no *.test.mjs files in {JS_DIR}"


@pytest.mark.parametrize("js_file", JS_FILES, ids=[path.name.removesuffix(".test.mjs") for path in JS_FILES])
def test_js_client(js_file: Path, hub_server: HubServer) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed")
    if not (JS_DIR / "node_modules" / "@microsoft" / "signalr").is_dir():
        pytest.fail(f"run `npm ci` in {JS_DIR}")
    env = {**os.environ, "SIGNALR_BASE_URL": hub_server.base}
    try:
        result = subprocess.run(
            [node, "--test", "--test-reporter=spec", js_file.name],
            cwd=JS_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{js_file.name} did not finish in {NODE_TIMEOUT} s\n{exc.stdout}\n{exc.stderr}")
    output = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 0, f"{js_file.name} failed (exit {result.returncode})\n{output}"
