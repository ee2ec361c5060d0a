"""The stock @microsoft/signalr JavaScript client against our server.

Each `tests/js/*.test.mjs` file runs under Node's built-in test runner, with the hub
server's address in SIGNALR_BASE_URL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .node_runner import JS_DIR, run_node_test

if TYPE_CHECKING:
    from .conftest import HubServer

JS_FILES = sorted(JS_DIR.glob("*.test.mjs"))
NODE_TIMEOUT = 180


def test_js_suite_exists() -> None:
    assert JS_FILES, f"no *.test.mjs files in {JS_DIR}"


@pytest.mark.parametrize("js_file", JS_FILES, ids=[path.name.removesuffix(".test.mjs") for path in JS_FILES])
def test_js_client(js_file: Path, hub_server: HubServer) -> None:
    run_node_test(js_file, {**os.environ, "SIGNALR_BASE_URL": hub_server.base}, NODE_TIMEOUT)
