"""The Procfile's Celery worker as a subprocess for tests, on the test database and Redis."""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection

from chatsite.celery import app
from chatsite.processes import die_with_parent
from tests.support.procfile import procfile_command


def test_database_url() -> str:
    """DATABASE_URL naming the database the tests are using right now."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    return (
        f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or 'localhost'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


_running: set["CeleryWorker"] = set()


def stop_all_workers() -> None:
    """Stop every worker still running (the test runner calls this at teardown)."""
    for worker in list(_running):
        worker.stop()


class CeleryWorker:
    """Start, await, stop or kill one worker process (with its pool children)."""

    def __init__(self, *, env: dict[str, str] | None = None, name: str = "test") -> None:
        self.hostname = f"{name}-{uuid.uuid4().hex[:8]}@localhost"
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        # Kept open for the worker's whole life; closed and removed in stop().
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="celery-test-", suffix=".log", delete=False
        )

    def start(self, *, timeout: float = 90.0) -> "CeleryWorker":
        """Start the Procfile's `worker:` command line; wait until it answers a ping."""
        env = {
            **self.env,
            "WORKER_OPTIONS": f"-n {self.hostname} --without-heartbeat",
            # as `manage.py serve` runs it: this interpreter's bin first on PATH
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
        }
        self.process = subprocess.Popen(
            ["sh", "-c", "exec " + procfile_command("worker")],
            cwd=settings.BASE_DIR, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip
        _running.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()}")
            if app.control.ping(destination=[self.hostname], timeout=0.5):
                return self
        self.stop()
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        """What the worker has logged so far."""
        return Path(self.log.name).read_text(errors="replace")[-8000:]

    def kill(self) -> None:
        """SIGKILL the worker and its children at once, as a crash would."""
        self._signal_group(signal.SIGKILL)
        self._reap(timeout=30)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), SIGKILL if it lingers; always frees the log file."""
        try:
            self._signal_group(signal.SIGTERM)
            if not self._reap(timeout=30):
                self._signal_group(signal.SIGKILL)
                self._reap(timeout=30)
        finally:
            _running.discard(self)
            self.log.close()
            Path(self.log.name).unlink(missing_ok=True)

    def _signal_group(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def _reap(self, *, timeout: float) -> bool:
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
