"""The API server for the demo: gunicorn (one worker, a few threads) as a child process.

One worker keeps SQLite to one writer process; threads serve concurrent callers. The
child is told to exit if the demo dies without cleaning up (Linux), so Ctrl-C, SIGTERM
or even SIGKILL of the demo leaves no orphan server behind.
"""

import ctypes
import ctypes.util
import errno
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings

PR_SET_PDEATHSIG = 1


class PortInUse(Exception):
    pass


class ServerFailed(Exception):
    pass


def check_port_free(host: str, port: int) -> None:
    """Raise PortInUse if something already listens on host:port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # Like gunicorn: a port in TIME_WAIT is free, a listening one is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(str(exc)) from exc
            raise


def _die_with_parent() -> None:
    libc_name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and libc_name:
        ctypes.CDLL(libc_name, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class DemoServer:
    def __init__(self, host: str, port: int, log_path: Path, threads: int = 8) -> None:
        self.host, self.port = host, port
        self.bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # Where a client on this machine reaches it (a wildcard bind is reached on loopback).
        client = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        self.url = f"http://[{client}]:{port}" if ":" in client else f"http://{client}:{port}"
        self.log_path = log_path
        self.threads = threads
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "gunicorn", "meshapi.wsgi",
            "--bind", self.bind,
            "--workers", "1", "--threads", str(self.threads),
            "--graceful-timeout", "5", "--timeout", "60",
            "--access-logfile", "-", "--no-control-socket",
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=settings.BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # the demo has no threads yet
            )

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30) -> None:
        """Block until the API answers HTTP (any status), or raise ServerFailed."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"the API server exited with code {self.proc.returncode}")
            try:
                urllib.request.urlopen(self.url + "/v20190125/meshes", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # 403 MissingAuthenticationToken: it is up
            except OSError:
                time.sleep(0.1)
        raise ServerFailed(f"the API server did not answer within {timeout:.0f} s")

    def wait(self, timeout: float) -> int | None:
        """The exit code if the server exited within timeout, else None."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10) -> None:
        """Graceful stop (SIGTERM: finish in-flight requests), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
