"""What the benchmarks share about the processes they run: CPU time and memory read from
/proc, the load average to print beside every number, a child process spoken to in JSON
lines, and the database URL of the run's own test database. Linux only (/proc)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), 0 if it is gone."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[1]) == pid:
                out.append(int(entry))
    return out


def family(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/<pid>/task/*/children (read now: a process
    started later, e.g. a restarted replica process, is counted from then on)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
            except OSError:
                pass
    return out


def family_cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants (serve_xds --processes N: the
    parent and its replica processes)."""
    return sum(cpu_seconds(p) for p in family(pid))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def family_rss_bytes(pid: int) -> int:
    """RSS summed over `pid` and its descendants (pages they share are counted in each)."""
    total = 0
    for p in family(pid):
        try:
            total += rss_bytes(p)
        except OSError:
            pass  # exited meanwhile
    return total


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Child:
    """A subprocess spoken to in JSON lines; every question has a time limit."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log_path = (
            Path(tempfile.gettempdir()) / f"bench-{Path(sys.argv[0]).stem}-{os.getpid()}-{name}.log"
        )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"{self.name}: no answer within {timeout:.0f} s\n{self.log()}"
            ) from None
        if line is None:
            raise RuntimeError(f"{self.name} exited ({self.proc.poll()})\n{self.log()}")
        return line

    def ask(self, command: dict, timeout: float) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.read(timeout))

    def log(self) -> str:
        if not self._log.closed:  # still running; after stop() the file is complete
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def settle(
    pid: int, quiet: float = 0.05, limit: float = 60.0, cpu: Callable[[int], float] = cpu_seconds
) -> float:
    """Wait (at most `limit` s) until a process uses under `quiet` of a core over 1 s, its
    CPU read by `cpu` (family_cpu_seconds: with its descendants)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = cpu(pid)
        time.sleep(1.0)
        if cpu(pid) - before < quiet:
            break
    return time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 20 samples is the largest: no interpolation)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def database_url(settings_dict: dict) -> str:
    host, port = settings_dict["HOST"] or "127.0.0.1", settings_dict["PORT"] or 5432
    user = settings_dict["USER"] or "postgres"
    return f"postgres://{user}@{host}:{port}/{settings_dict['NAME']}"
