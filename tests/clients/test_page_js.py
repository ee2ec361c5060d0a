"""The page's pure modules under Node's test runner, no browser and no server:
`tests/js/page/*.test.mjs` (the reply follower and the attachment module that the page and the
Angular client share).

Each file is a test here, as in test_chat_js.py; a run that reports no test counts as a failure,
so a file whose tests stopped being found does not pass silently.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support.node_runner import JS_DIR, FileRun, run_node_suite

PAGE_JS_FILES = sorted((JS_DIR / "page").glob("*.test.mjs"))
NODE_TIMEOUT = 60


def test_page_js_suite_exists() -> None:
    assert PAGE_JS_FILES, f"no *.test.mjs files in {JS_DIR / 'page'}"


@pytest.fixture(scope="module")
def page_js_suite() -> dict[Path, FileRun]:
    return run_node_suite(PAGE_JS_FILES, dict(os.environ), NODE_TIMEOUT)


@pytest.mark.parametrize("js_file", PAGE_JS_FILES, ids=[p.name.removesuffix(".test.mjs") for p in PAGE_JS_FILES])
def test_page_js(js_file: Path, page_js_suite: dict[Path, FileRun]) -> None:
    run = page_js_suite[js_file]
    run.check(NODE_TIMEOUT)
    ran = re.search(r"^\u2139 tests (\d+)$", run.output, re.MULTILINE)
    assert ran is not None and int(ran.group(1)) > 0, f"{js_file.name} ran no test\n{run.output}"
