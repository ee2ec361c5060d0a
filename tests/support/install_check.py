"""The package as a user installs it: a plain wheel, in a fresh venv, outside the source tree.

`python -m tests.support.install_check` (run by `make check-install`, which `make test` runs):

- core: the wheel without extras in a fresh `.venv-core`. Nothing of the chat is installed
  (openai, azure-identity, pydantic-settings, ...), `signalr_chat.signalr` imports, the README's
  small hub serves on a free loopback port, and the stock JS client invokes, receives a broadcast
  and reads a stream on every transport and protocol (tests/js/install/small_hub.test.mjs).
  `python -m signalr_chat` names the extra it lacks.
- core at its lower bounds: the same small hub and JS client with the core dependencies at
  the lowest versions pyproject.toml allows (uv's lowest-direct resolution); `make
  check-lowest` covers the chat's, whose openai extra lifts aiohttp above its own bound.
- page: the `chat` extra added to the same venv, `python -m signalr_chat` (the OpenAI-compatible
  provider at a port where nothing listens: no model is needed to serve the page) serves `/`
  and every file the page links (its CSS, scripts and the /lib/ browser libraries) from the
  installed package, and the Angular client at `/angular/` when the wheel was built with it.

Each check prints `ok` or raises; the last line is `N passed, N failed`, and any failure
exits non-zero. Standard library only, so any Python 3.11 runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .paths import JS_DIR, ROOT

CORE_VENV = ROOT / ".venv-core"

#: What the core install must not bring: the chat's and the offline model's dependencies.
CHAT_ONLY_MODULES = (
    "openai",
    "httpx2",
    "azure.identity",
    "pydantic",
    "pydantic_settings",
    "dotenv",
    "aiosqlite",
    "jwt",
)
LOCAL_ONLY_MODULES = ("llama_cpp",)
#: The core install's own dependencies (pyproject.toml's `dependencies`).
CORE_DEPENDENCIES = ("aiohttp", "multidict", "orjson", "msgpack", "uvloop")

#: The last line of the README's small hub, replaced by the project's runner on a given port.
README_RUN_LINE = "web.run_app(app, port=5000)"
README_RUNNER = 'import sys\nfrom signalr_chat.server import run\nrun(app, "127.0.0.1", int(sys.argv[1]))\n'


class CheckFailed(Exception):
    """A check's clear reason for failing, with the output that shows it."""


def run(args: list[str | Path], *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise CheckFailed(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(args: list[str | Path], port: int, *, cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """A server process, until its port accepts connections; its output is shown if it dies."""
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen([str(a) for a in args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(process, port, log)
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log: IO[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise CheckFailed(f"the server exited with {process.returncode}\n{log.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                log.seek(0)
                raise CheckFailed(f"nothing listening on {port} after 30 s\n{log.read()}") from None
            time.sleep(0.05)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without Python path overrides, so only the venv's site-packages count."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def build_wheel(out: Path) -> Path:
    # setuptools builds in ./build and never empties it, and reads the file list of the last
    # build from *.egg-info: a file removed from the source or from setup.py's package_data
    # would still ride along in the wheel
    _remove_build_leftovers()
    try:
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, ROOT])
    finally:
        _remove_build_leftovers()
    wheels = list(out.glob("signalr_chat-*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"expected one wheel in {out}, found {wheels}")
    return wheels[0]


def _remove_build_leftovers() -> None:
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    for egg_info in ROOT.glob("*.egg-info"):
        shutil.rmtree(egg_info)


def fresh_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", "--clear", path])
    return path / "bin" / "python"


def pip_install(python: Path, *requirements: str | Path) -> None:
    # pip's cache stays on: the dependencies' wheels come from it after the first run
    run([python, "-m", "pip", "install", "--quiet", *requirements])


def readme_small_hub() -> str:
    """The code block under README.md's "A small hub", run on a given port by the project's runner."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## A small hub\n.*?^```python\n(.*?)^```", readme, re.S | re.M)
    if match is None:
        raise CheckFailed('README.md has no ```python block under "## A small hub"')
    code = match.group(1)
    if README_RUN_LINE not in code:
        raise CheckFailed(f"the README's small hub no longer ends with {README_RUN_LINE!r}: update {__file__}")
    return code.replace(README_RUN_LINE, README_RUNNER)


def node_test(test_file: Path, env: dict[str, str]) -> str:
    node = shutil.which("node")
    if node is None:
        raise CheckFailed("node is not installed")
    if not (JS_DIR / "node_modules" / "@microsoft" / "signalr").is_dir():
        raise CheckFailed(f"run `npm install` in {JS_DIR}")
    return run([node, "--test", "--test-reporter=spec", test_file.relative_to(JS_DIR)], cwd=JS_DIR, env=env)


def check_core(wheel: Path, scratch: Path) -> None:
    python = fresh_venv(CORE_VENV)
    pip_install(python, wheel)
    probe = (
        "import importlib.util, pathlib, signalr_chat.signalr as s; "
        "assert (pathlib.Path(s.__file__).parent.parent / 'py.typed').is_file(), 'py.typed is not installed'; "
        f"print(s.__file__); print(*[m for m in {CHAT_ONLY_MODULES + LOCAL_ONLY_MODULES!r} "
        "if importlib.util.find_spec(m.split('.')[0]) is not None])"
    )
    where, present = run([python, "-c", probe], cwd=scratch, env=clean_env()).splitlines()
    if not Path(where).is_relative_to(CORE_VENV):
        raise CheckFailed(f"signalr_chat.signalr came from {where}, not from the installed wheel")
    if present:
        raise CheckFailed(f"the core install brought chat-only packages: {present}")
    print(f"  ok  core install: signalr_chat.signalr imports from the wheel; none of {CHAT_ONLY_MODULES}")

    chat = subprocess.run(
        [python, "-m", "signalr_chat", "--help"], cwd=scratch, env=clean_env(), capture_output=True, text=True
    )
    if chat.returncode == 0 or "`chat` extra" not in chat.stderr:
        raise CheckFailed(f"python -m signalr_chat on a core install should name the `chat` extra\n{chat.stderr}")
    print("  ok  core install: python -m signalr_chat names the `chat` extra")

    serve_small_hub(python, scratch, "core install")


def check_core_lowest(wheel: Path, scratch: Path) -> None:
    """The core dependencies at the lowest versions pyproject.toml allows (uv's lowest-direct)."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.is_file():
        raise CheckFailed(f"uv is not installed beside {sys.executable} (the test extra brings it)")
    python = fresh_venv(CORE_VENV)
    # lowest-direct lowers only the requirements named on the command line: the wheel's own
    # dependencies would be transitive there, so they are resolved from pyproject.toml first
    lowest = scratch / "core-lowest.txt"
    resolve: list[str | Path] = ["--resolution", "lowest-direct", "--output-file", lowest, ROOT / "pyproject.toml"]
    run([uv, "pip", "compile", "--quiet", "--python", python, *resolve])
    run([uv, "pip", "install", "--quiet", "--python", python, "--constraint", lowest, wheel])
    installed = run([uv, "pip", "freeze", "--python", python]).split()
    direct = [line for line in installed if line.split("==")[0].lower() in CORE_DEPENDENCIES]
    print(f"  ok  core at its lower bounds: {' '.join(direct)}")
    serve_small_hub(python, scratch, "core at its lower bounds")


def serve_small_hub(python: Path, scratch: Path, what: str) -> None:
    hub = scratch / "small_hub.py"
    hub.write_text(readme_small_hub(), encoding="utf-8")
    port = free_port()
    with serving([python, hub, str(port)], port, cwd=scratch, env=clean_env()):
        output = node_test(
            JS_DIR / "install" / "small_hub.test.mjs", clean_env(SIGNALR_BASE_URL=f"http://127.0.0.1:{port}")
        )
    print(f"  ok  {what}: the README's small hub and the stock JS client ({_summary(output)})")


def _summary(spec_output: str) -> str:
    """The spec reporter's closing counts, e.g. `tests 15, pass 15, fail 0`."""
    counts = re.findall(r"^\u2139 (tests|pass|fail) (\d+)$", spec_output, re.M)
    return ", ".join(f"{name} {count}" for name, count in counts)


#: Settings the chat reads from the environment: none of the caller's may reach the server.
CHAT_ENV_PREFIXES = ("AZURE_", "OPENAI_", "IDENTITY_", "MSI_", "AI_", "LOCAL_", "AUTH_", "HISTORY_")


def get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
    except OSError as exc:  # urllib's HTTPError included
        raise CheckFailed(f"GET {url}: {exc}") from exc
    if not body:
        raise CheckFailed(f"GET {url}: empty body")
    return body


def check_page(wheel: Path, scratch: Path) -> None:
    python = CORE_VENV / "bin" / "python"
    pip_install(python, f"{wheel}[chat]")
    wwwroot = run(
        [python, "-c", "from signalr_chat.app.page import WWWROOT; print(WWWROOT)"], cwd=scratch, env=clean_env()
    )
    if not Path(wwwroot.strip()).is_relative_to(CORE_VENV):
        raise CheckFailed(f"the installed app serves the page from {wwwroot.strip()}, not from the package")
    port = free_port()
    env = {k: v for k, v in clean_env().items() if not k.startswith(CHAT_ENV_PREFIXES)}
    env |= {"OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1", "HISTORY_STORE": "memory"}
    args: list[str | Path] = [python, "-m", "signalr_chat", "--host", "127.0.0.1", "--port", str(port)]
    with serving(args, port, cwd=scratch, env=env):
        base = f"http://127.0.0.1:{port}"
        page = get(base + "/").decode()
        linked = re.findall(r'(?:src|href)="(/[^"]*)"', page)
        if not any(path.startswith("/lib/") for path in linked):
            raise CheckFailed(f"the page links no /lib/ library: {linked}")
        for path in linked:
            get(base + path)
        angular = wheel_has(wheel, "signalr_chat/wwwroot/angular/index.html")
        if angular:
            shell = get(base + "/angular/").decode()
            bundle = re.findall(r'(?:src|href)="([^"/:][^":]*\.(?:js|css))"', shell)
            if not bundle:
                raise CheckFailed(f"the Angular client's index.html links no script or stylesheet:\n{shell}")
            for name in bundle:
                get(f"{base}/angular/{name}")
    print(f"  ok  page: / and {', '.join(linked)} served from the installed package")
    angular_result = "and its bundle served" if angular else "not built, so not in the wheel"
    print(f"  ok  page: the Angular client at /angular/ {angular_result}")


def wheel_has(wheel: Path, name: str) -> bool:
    with zipfile.ZipFile(wheel) as archive:
        return name in archive.namelist()


def main() -> int:
    checks: list[Callable[[Path, Path], None]] = [check_core, check_page, check_core_lowest]
    passed = failed = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="signalr-chat-install-") as tmp:
        scratch = Path(tmp)
        try:
            wheel = build_wheel(scratch / "dist")
        except CheckFailed as exc:
            print(f"FAIL building the wheel\n{exc}", file=sys.stderr)
            return 1
        print(f"built {wheel.name}")
        for check in checks:
            try:
                check(wheel, scratch)
                passed += 1
            except (CheckFailed, subprocess.TimeoutExpired) as exc:
                failed += 1
                print(f"FAIL {check.__name__}\n{exc}", file=sys.stderr)
    print(f"install checks in {time.monotonic() - started:.0f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
