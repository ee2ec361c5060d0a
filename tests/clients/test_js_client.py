"""The stock @microsoft/signalr JavaScript client against our server.

The `tests/js/*.test.mjs` files run under `node --test`, in parallel (see
node_runner.py), with the hub server's address in SIGNALR_BASE_URL; each file is a test
here, passing or failing on its own results.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.node_runner import JS_DIR, FileRun, run_node_suite

if TYPE_CHECKING:
    from tests.support.hub_server import HubServer

JS_FILES = sorted(JS_DIR.glob("*.test.mjs"))
NODE_TIMEOUT = 180


def test_js_suite_exists() -> None:
    assert JS_FILES, f"no *.test.mjs files in {JS_DIR}"


@pytest.fixture(scope="module")
def js_suite(hub_server: HubServer) -> dict[Path, FileRun]:
    return run_node_suite(JS_FILES, {**os.environ, "SIGNALR_BASE_URL": hub_server.base}, NODE_TIMEOUT)


@pytest.mark.parametrize("js_file", JS_FILES, ids=[path.name.removesuffix(".test.mjs") for path in JS_FILES])
def test_js_client(js_file: Path, js_suite: dict[Path, FileRun]) -> None:
    js_suite[js_file].check(NODE_TIMEOUT)
