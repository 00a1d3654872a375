"""CPU time a server spends per request: its gunicorn worker plus its PostgreSQL backend.

Requests per second on a shared 2-core machine move with whatever else runs there; the CPU
seconds the server side burns per request move far less, so the benchmark reports both.
Linux only (/proc); PostgreSQL must run on this machine for its backend to be measured.
"""

from dataclasses import dataclass

import psycopg

from bench.procs import children, cpu_seconds


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
