"""The build leaves the clone as it found it: lockfiles that npm never needs to rewrite, and
the CI check that fails when anything was rewritten anyway."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import ROOT

LOCKFILES = [ROOT / folder / "package-lock.json" for folder in ("wwwroot", "tests/js", "angular")]


@pytest.mark.parametrize("lockfile", LOCKFILES, ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_lockfile_names_every_optional_dependency(lockfile: Path) -> None:
    """`npm install` adds the optional (per-platform) packages a lockfile lacks, which dirties the
    tree; a complete lockfile has an entry for each optional dependency of every package in it."""
    packages: dict[str, dict[str, object]] = json.loads(lockfile.read_text())["packages"]
    missing = []
    for path, entry in packages.items():
        optional = entry.get("optionalDependencies") or {}
        assert isinstance(optional, dict)
        for name in optional:
            # node resolution: the nearest node_modules up from the package that needs it
            candidates = [f"{path}/node_modules/{name}"] if path else []
            parts = path.split("/node_modules/")
            while parts:
                parts.pop()
                prefix = "/node_modules/".join(parts)
                candidates.append(f"{prefix}/node_modules/{name}" if prefix else f"node_modules/{name}")
            if not any(candidate in packages for candidate in candidates):
                missing.append(f"{path or '(root)'} -> {name}")
    assert not missing, f"{lockfile.relative_to(ROOT)} lacks optional entries (npm install would add them): {missing}"


def test_makefile_installs_from_lockfiles_only() -> None:
    recipes = [line.strip() for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("\t")]
    assert not [line for line in recipes if "npm install" in line or "npm i " in line], "npm ci, never npm install"
    assert (ROOT / ".ci/run").read_text().rstrip().endswith(".ci/check-clean")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_check_clean_fails_on_a_rewritten_or_new_file(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "package-lock.json").write_text("{}\n")
    (tmp_path / ".gitignore").write_text("node_modules/\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    check = str(ROOT / ".ci/check-clean")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([check], cwd=tmp_path, capture_output=True, text=True)

    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "x").write_text("ignored")
    assert run().returncode == 0, "ignored files are fine"
    (tmp_path / "package-lock.json").write_text('{"rewritten": true}\n')
    result = run()
    assert result.returncode == 1 and "package-lock.json" in result.stderr
    _git(tmp_path, "checkout", "package-lock.json")
    (tmp_path / "left-behind.txt").write_text("x")
    result = run()
    assert result.returncode == 1 and "left-behind.txt" in result.stderr
