"""The stock JS client on two instances of one hub sharing a real redis-server.

`tests/js/scale_out/*.test.mjs` run under Node (see node_runner.py) with the instances'
addresses in SIGNALR_INSTANCES; each file is a test here. `tests/js/redis_faults/` runs apart,
on a Redis of its own that it kills, restarts and pauses through REDIS_CONTROL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.listening import free_port, wait_for_port
from tests.support.node_runner import JS_DIR, FileRun, run_node_suite
from tests.support.paths import ROOT
from tests.support.redis_server import RedisServer

SUITE = sorted((JS_DIR / "scale_out").glob("*.test.mjs"))
FAULTS = sorted((JS_DIR / "redis_faults").glob("*.test.mjs"))
NODE_TIMEOUT = 180


class Instance:
    def __init__(self, name: str, redis_url: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "tests.support.scale_out_app", "--port", str(self.port), "--redis", redis_url]
        self.process = subprocess.Popen(
            [*argv, "--name", name],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_port(self.port, self.process)  # type: ignore[arg-type]

    def stop(self) -> str:
        """Stops it; returns what it logged."""
        self.process.terminate()
        try:
            _, stderr = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        return stderr


@pytest.fixture(scope="module")
def suite() -> Iterator[dict[Path, FileRun]]:
    redis = RedisServer()
    redis.start()
    instances = [Instance(name, redis.url) for name in ("A", "B", "C")]
    logs: list[str] = []
    try:
        env = {
            **os.environ,
            "SIGNALR_BASE_URL": instances[0].base,
            "SIGNALR_INSTANCES": f"{instances[0].base},{instances[1].base}",
            "SIGNALR_KILLABLE": f"{instances[2].base},{instances[2].process.pid}",
        }
        yield run_node_suite(SUITE, env, NODE_TIMEOUT)
    finally:
        logs = [instance.stop() for instance in instances]
        redis.close()
        for log in logs[:2]:
            assert "Traceback" not in log, log


def test_suite_exists() -> None:
    assert SUITE, "no tests/js/scale_out/*.test.mjs"


@pytest.mark.parametrize("js_file", SUITE, ids=[path.name.removesuffix(".test.mjs") for path in SUITE])
def test_scale_out_js(js_file: Path, suite: dict[Path, FileRun]) -> None:
    suite[js_file].check(NODE_TIMEOUT)


class RedisControl:
    """POST /kill, /start, /pause, /resume: the Node test's hands on redis-server."""

    def __init__(self, redis: RedisServer) -> None:
        actions = {"/kill": redis.kill, "/start": redis.start, "/pause": redis.pause, "/resume": redis.resume}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                action = actions.get(self.path)
                if action is not None:
                    action()
                self.send_response(200 if action is not None else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("js_file", FAULTS, ids=[path.name.removesuffix(".test.mjs") for path in FAULTS])
def test_redis_faults_js(js_file: Path) -> None:
    redis = RedisServer()
    redis.start()
    control = RedisControl(redis)
    instances = [Instance(name, redis.url) for name in ("A", "B")]
    try:
        env = {
            **os.environ,
            "SIGNALR_BASE_URL": instances[0].base,
            "SIGNALR_INSTANCES": f"{instances[0].base},{instances[1].base}",
            "REDIS_CONTROL": control.url,
        }
        run = run_node_suite([js_file], env, NODE_TIMEOUT)[js_file]
    finally:
        logs = [instance.stop() for instance in instances]
        control.close()
        redis.close()
    print(run.output)  # the figures (t.diagnostic), shown with pytest -s
    run.check(NODE_TIMEOUT)
    for log in logs:
        assert "Traceback" not in log, log
