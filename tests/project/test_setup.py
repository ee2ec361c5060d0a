"""The setup an operator meets: `make run` asks only for what serving needs, a missing
Debian package is one printed command rather than a failure inside apt-get, and
`--help` reads like a manual."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

MAKE = shutil.which("make")


def fake_bin(tmp_path: Path, uid: int, present: tuple[str, ...]) -> Path:
    """A PATH holding only an `id` that reports `uid`, an `apt-get` that records its
    arguments, and stand-ins for the commands that count as installed."""
    folder = tmp_path / "bin"
    folder.mkdir()
    scripts = {
        "id": f"#!/bin/sh\necho {uid}\n",
        "apt-get": f'#!/bin/sh\necho "$@" >> {tmp_path / "apt.log"}\n',
        **{name: "#!/bin/sh\n" for name in present},
    }
    for name, text in scripts.items():
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)
    return folder


def make(target: str, path: Path) -> subprocess.CompletedProcess[str]:
    assert MAKE is not None, "make is not installed"
    env = {**os.environ, "PATH": str(path)}
    return subprocess.run([MAKE, "-s", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def apt_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


def test_serving_needs_no_test_packages(tmp_path: Path) -> None:
    path = fake_bin(tmp_path, uid=1000, present=("node", "npm", "g++", "cmake"))
    served = make("run-deps", path)
    assert served.returncode == 0, served.stderr
    tested = make("test-deps", path)
    assert tested.returncode != 0
    assert "apt-get install -y --no-install-recommends chromium redis-server nginx\n" in tested.stderr
    assert apt_calls(tmp_path) == []


def test_not_root_prints_the_one_command_and_stops(tmp_path: Path) -> None:
    result = make("run-deps", fake_bin(tmp_path, uid=1000, present=("npm",)))
    assert result.returncode != 0
    lines = [line.strip() for line in result.stderr.splitlines() if "apt-get" in line]
    assert lines == ["sudo apt-get install -y --no-install-recommends nodejs g++ cmake"], result.stderr
    assert apt_calls(tmp_path) == [], "apt-get is never run without root"


def test_root_installs_what_is_missing(tmp_path: Path) -> None:
    result = make("test-deps", fake_bin(tmp_path, uid=0, present=("node", "npm", "g++")))
    assert result.returncode == 0, result.stderr
    assert apt_calls(tmp_path) == ["update", "install -y --no-install-recommends cmake chromium redis-server nginx"]


@pytest.fixture(scope="module")
def help_text() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "signalr_chat", "--help"],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_placeholders_are_readable(help_text: str) -> None:
    assert "{SecretStr" not in help_text and "null}" not in help_text and "{Path" not in help_text, help_text
    assert "--azure-openai-api-key SECRET" in help_text
    assert "--history-db PATH" in help_text
    assert "--port INT" in help_text
    assert "--ai-provider {auto,azure,openai,local}" in help_text


def test_help_names_the_environment_and_ends_with_an_example(help_text: str) -> None:
    assert "environment variable" in help_text and ".env" in help_text
    assert "AZURE_OPENAI_ENDPOINT" in help_text
    last = [line for line in help_text.strip().splitlines() if line.strip()][-1]
    assert "python -m signalr_chat" in last or "AZURE_OPENAI" in last, last
    assert "example" in help_text.lower()
