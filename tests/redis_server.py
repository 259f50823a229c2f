"""
A real ``redis-server`` for the coordinator's tests: on a free loopback port, with
persistence off, started and stopped by the tests (no fake Redis).

When ``redis-server`` is missing the tests that need it are skipped, with the command that
installs it; under CI (``CI`` set) they fail instead, so a CI machine cannot pass them by
accident.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Generous: a loaded two-core machine may take seconds to start a process.
READY_LIMIT = 60.0


def redis_server_path() -> str:
    """The ``redis-server`` binary, or skip (fail under CI) with how to install it."""
    path = shutil.which("redis-server")
    if path is None:
        message = (
            "redis-server is not installed; the coordinator's tests need a real one: "
            "apt-get install -y redis-server (Debian/Ubuntu) or make test as root"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; ``stop()`` and ``start()`` again keep its port."""

    def __init__(self) -> None:
        self.binary = redis_server_path()
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="bitrix-images-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (empty: nothing is saved) and wait until it answers PING."""
        for _ in range(5):
            self.process = subprocess.Popen(  # noqa: S603 -- our own argv, no shell
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", self._dir.name,
                    "--logfile", str(Path(self._dir.name) / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + READY_LIMIT
            while time.monotonic() < deadline and self.process.poll() is None:
                if _pong(self.port):
                    return
                time.sleep(0.02)
            self.stop()
            self.port = _free_port()  # another process may have taken the port meanwhile
        raise RuntimeError("redis-server did not start; see its log in " + self._dir.name)

    def stop(self) -> None:
        """Stop the server and wait for it to exit (its data is gone: persistence is off)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=READY_LIMIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        self._dir.cleanup()


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started ``RedisServer``, stopped and cleaned up after."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
