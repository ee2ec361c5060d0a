"""`python -m tests.support.coverage_report`: line and branch coverage per package, after `make test`.

Reads the combined coverage data (`coverage json`) and sums each file's statements and branches
into its package (signalr_chat.signalr.protocol, .connections, .hubs, ... , chat, ai, hosting,
app), so the README can show where the tests reach and where they do not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from .paths import ROOT

REPORT = ROOT / "coverage.json"


def package_of(path: str) -> str:
    """signalr_chat/signalr/hubs/endpoint.py -> signalr_chat.signalr.hubs; top-level modules -> signalr_chat."""
    parts = Path(path).parts
    start = parts.index("signalr_chat")
    package = list(parts[start:-1])
    if package[:2] == ["signalr_chat", "signalr"] and len(package) > 3:
        package = package[:3]  # connections/transports count with connections
    return ".".join(package)


def main() -> None:
    subprocess.run([sys.executable, "-m", "coverage", "json", "-q", "-o", str(REPORT)], check=True, cwd=ROOT)
    files = json.loads(REPORT.read_text())["files"]
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for path, data in files.items():
        summary = data["summary"]
        row = sums[package_of(path)]
        row[0] += summary["num_statements"]
        row[1] += summary["covered_lines"]
        row[2] += summary["num_branches"]
        row[3] += summary["covered_branches"]
    print("| package | lines | branches |")
    print("| --- | ---: | ---: |")
    total = [0, 0, 0, 0]
    for package in sorted(sums):
        statements, covered, branches, taken = sums[package]
        total = [a + b for a, b in zip(total, sums[package], strict=True)]
        print(f"| `{package}` | {100 * covered / statements:.0f}% | {100 * taken / max(branches, 1):.0f}% |")
    print(f"| all | {100 * total[1] / total[0]:.1f}% | {100 * total[3] / max(total[2], 1):.1f}% |")


if __name__ == "__main__":
    main()
