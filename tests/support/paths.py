"""Where things are: the repository's root and the Node test suites."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
JS_DIR = ROOT / "tests" / "js"
