"""CPU time a server spends per request: its gunicorn worker plus its PostgreSQL backend.

Requests per second on a shared 2-core machine move with whatever else runs there; the CPU
seconds the server side burns per request move far less, so the benchmark reports both.
Linux only (/proc); PostgreSQL must run on this machine for its backend to be measured.
"""

import os
from dataclasses import dataclass

import psycopg

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, 0 if it is gone."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[1]) == pid:
                out.append(int(entry))
    return out


@dataclass
class ServerCPU:
    """Snapshot-able CPU counters of one server: worker processes + PostgreSQL backends."""

    master_pid: int
    admin_url: str
    application_name: str

    def _pids(self) -> list[int]:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (self.application_name,),
            ).fetchall()
        return children(self.master_pid) + [row[0] for row in rows]

    def snapshot(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in self._pids()}

    @staticmethod
    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds between two snapshots (a process that appeared counts from zero)."""
        return sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items())
