"""A redis-server of a test's own on a free port, so stopping it touches nothing shared."""

import shutil
import subprocess
import tempfile
import time

import pytest

from tests.support.live import free_port


class RedisServer:
    """A redis-server of the test's own on a free port, so stopping it touches nothing shared."""

    def __init__(self) -> None:
        if not shutil.which("redis-server"):
            pytest.fail("redis-server is not installed")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="meshplane-redis-")
        self.proc = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
