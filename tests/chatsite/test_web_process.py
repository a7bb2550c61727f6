"""The Procfile's web process (uvicorn), run as `manage.py serve` runs it.

The other live-server tests use daphne; these start the exact `web:` command line of the
Procfile on a free port, on the test database and Redis, and talk to it with the
`websockets` client a device or a browser script would use.
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets
from django.conf import settings

from chatsite.processes import die_with_parent
from sensors.services import sensor_create
from tests.support.cases import ORIGIN, TIMEOUT, RedisTransactionTestCase
from tests.support.procfile import procfile_command
from tests.support.worker import test_database_url

SLUG = "web-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebProcess:
    """The Procfile's `web:` command in a shell of its own, stopped with its whole group."""

    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="web-test-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            ["sh", "-c", procfile_command("web")],
            cwd=settings.BASE_DIR, stdout=self.log, stderr=subprocess.STDOUT,
            env={
                **os.environ, "HOST": "127.0.0.1", "PORT": str(self.port),
                "DATABASE_URL": test_database_url(), "REDIS_URL": settings.REDIS_URL,
                "PYTHONUNBUFFERED": "1", **env,
                # as `manage.py serve` runs it: this interpreter's bin first on PATH
                "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
            },
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip

    def wait_listening(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"web process exited early:\n{self.output()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"web process not listening after {timeout}s:\n{self.output()}")

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        try:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=30)
                    break
        finally:
            self.log.close()
            Path(self.log.name).unlink(missing_ok=True)


def readings(count: int, metrics: int = 1) -> list[dict[str, Any]]:
    return [{f"m{m}": float(n) for m in range(metrics)} for n in range(count)]


class WebProcessTests(RedisTransactionTestCase):
    def start_web(self, **env: str) -> WebProcess:
        web = WebProcess(**env)
        self.addCleanup(web.stop)
        web.wait_listening()
        return web

    def test_a_device_publishes_and_a_watcher_sees_it_live_without_the_key_in_the_log(
        self,
    ) -> None:
        _, key = sensor_create(slug=SLUG)
        web = self.start_web()

        async def scenario() -> tuple[list[str], list[dict[str, Any]]]:
            async with websockets.connect(
                web.url(f"/ws/sensors/{SLUG}"), origin=ORIGIN.decode()
            ) as watcher:
                history = json.loads(await asyncio.wait_for(watcher.recv(), TIMEOUT))
                self.assertEqual(history["type"], "history")
                async with websockets.connect(
                    web.url(f"/ws/sensors/{SLUG}/publish?key={key}")
                ) as device:
                    await device.send(json.dumps(readings(3)))
                    ack = json.loads(await asyncio.wait_for(device.recv(), TIMEOUT))
                live = [
                    json.loads(await asyncio.wait_for(watcher.recv(), TIMEOUT)) for _ in ack["ids"]
                ]
                return ack["ids"], live

        ids, live = asyncio.run(scenario())
        self.assertEqual(len(ids), 3)
        self.assertEqual([(f["type"], f["id"]) for f in live], [("reading", i) for i in ids])
        log = web.output()
        self.assertIn("[redacted]", log)  # the publish handshake line was logged, redacted
        self.assertNotIn(key, log)

    def test_a_watcher_that_stops_reading_is_closed_with_too_slow(self) -> None:
        _, key = sensor_create(slug=SLUG)
        web = self.start_web(SOCKET_LIVE_BACKLOG="50", SENSOR_RATE_LIMIT="100000000")

        async def scenario() -> tuple[int, dict[str, Any], int | None]:
            # A small receive buffer and a one-frame client queue: once they are full the
            # client stops reading and the server's writes start to wait.
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(("127.0.0.1", web.port))
            async with websockets.connect(
                web.url(f"/ws/sensors/{SLUG}"), origin=ORIGIN.decode(), sock=raw, max_queue=1
            ) as watcher:
                async with websockets.connect(
                    web.url(f"/ws/sensors/{SLUG}/publish"),
                    additional_headers={"Authorization": f"Bearer {key}"},
                ) as device:
                    for _ in range(40):  # ~40 x 500 readings of ~600 bytes each
                        await device.send(json.dumps(readings(500, metrics=24)))
                        ack = json.loads(await asyncio.wait_for(device.recv(), TIMEOUT))
                        self.assertEqual(len(ack["ids"]), 500)
                frames = []
                with contextlib.suppress(websockets.ConnectionClosed):
                    async with asyncio.timeout(TIMEOUT):
                        while True:
                            frames.append(json.loads(await watcher.recv()))
                received = sum(f["type"] == "reading" for f in frames)
                return received, frames[-1], watcher.close_code

        received, last, close_code = asyncio.run(scenario())
        self.assertEqual(close_code, 4408)
        self.assertEqual((last["type"], last["code"]), ("error", "too_slow"))
        self.assertLess(received, 40 * 500)  # it was cut off, not sent everything
