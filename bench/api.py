"""Requests per second of the App Mesh API on one gunicorn worker, against a stock DRF view.

    make bench                      # or: DATABASE_URL=postgres://… .venv/bin/python bench/api.py

In one run, on a database of its own (created, migrated, seeded and dropped here):

* Meshplane (`meshapi.wsgi`, real settings) on one gunicorn sync worker, measured on signed
  DescribeVirtualNode, ListVirtualNodes (100 nodes, limit 100) and UpdateRoute;
* the baseline: a stock DRF view (TokenAuthentication + RetrieveAPIView + ModelSerializer over
  the same VirtualNode row) on one gunicorn sync worker (`bench.stock_settings`).

Every measurement sends the same number of pre-built requests (SigV4-signed with botocore
before the clock starts) from several client processes over loopback, after a warm-up, and
stops at a request count or a time limit, whichever comes first; all operations run for a
few interleaved rounds. It prints requests/s, server CPU per request (worker + PostgreSQL
backend), the ratios to the stock view measured in the same round, and queries per request
(`X-Meshplane-Queries`). It never asserts on timing: a benchmark reports, tests judge.
Method and recorded numbers: docs/benchmarks.md.
"""

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if __package__ in (None, ""):  # run as a script (`python bench/api.py`): import as a package
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import psycopg  # noqa: E402
import redis  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from psycopg import sql  # noqa: E402

from bench import cpu, load, specs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/meshplane"
READ_GOAL = 1.5


# ---------------------------------------------------------------- database


class BenchDatabase:
    """A throwaway PostgreSQL database next to the one DATABASE_URL names."""

    def __init__(self, base_url: str, name: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("postgres", "postgresql", "pgsql"):
            raise SystemExit(
                f"DATABASE_URL: the benchmark needs PostgreSQL, got '{parts.scheme}://…'; "
                "set DATABASE_URL=postgres://postgres@127.0.0.1:5432/meshplane."
            )
        self.name = name
        self._parts = parts._replace(path="/" + name)
        self.admin_url = urlunsplit(parts._replace(path="/postgres"))

    def url(self, application_name: str = "") -> str:
        """The database's URL; the name tells this client's backends apart in pg_stat_activity."""
        query = dict(parse_qsl(self._parts.query))
        if application_name:
            query["application_name"] = application_name
        return urlunsplit(self._parts._replace(query=urlencode(query)))

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def create(self) -> None:
        self.drop()
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))

    def drop(self) -> None:
        self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
        )

    def server_version(self) -> str:
        with psycopg.connect(self.admin_url) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One gunicorn sync worker serving `settings_module` on a free loopback port."""

    def __init__(
        self, label: str, settings_module: str, env: dict[str, str], db: BenchDatabase, logdir: Path
    ) -> None:
        self.label = label
        app_name = f"meshplane-bench-{label}"
        env = {**env, "DATABASE_URL": db.url(app_name), "DJANGO_SETTINGS_MODULE": settings_module}
        self.addr = ("127.0.0.1", free_port())
        self.log_path = logdir / f"{label}.log"
        cmd = [
            sys.executable, "-m", "gunicorn", "meshapi.wsgi",
            "-w", "1", "-b", f"{self.addr[0]}:{self.addr[1]}", "--chdir", str(ROOT),
            "--timeout", "60", "--graceful-timeout", "2", "--error-logfile", str(self.log_path),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        self.cpu = cpu.ServerCPU(self.proc.pid, db.admin_url, app_name)
        self._wait()

    def _wait(self) -> None:
        # Connect only: a probe request would be answered 404/403 and logged by Django.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} server exited:\n{self.log_tail()}")
            try:
                socket.create_connection(self.addr, timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.label} server did not answer within 30 s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- setup


def prepare(env: dict[str, str]) -> dict:
    """Migrate (Meshplane's apps and DRF's authtoken) and seed; returns the seed's output."""
    stock_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.stock_settings"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=stock_env,
        check=True,
    )
    out = subprocess.run(
        [sys.executable, "-m", "bench.seed"],
        cwd=ROOT,
        env=stock_env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


class TaskQueue:
    """The Celery queue the servers' writes enqueue compiles on: one of the bench's own, since
    no worker consumes it here, emptied at exit so nothing is left in a shared Redis."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.name = f"meshplane-bench-{os.getpid()}"

    def pending(self) -> int:
        if not self.redis_url:
            return 0
        return redis.Redis.from_url(self.redis_url).llen(self.name)

    def discard(self) -> None:
        if self.redis_url:
            redis.Redis.from_url(self.redis_url).delete(
                self.name,  # the messages; then kombu's binding tables for the queue
                f"_kombu.binding.{self.name}",
                f"_kombu.binding_permanent.{self.name}",
            )


# ---------------------------------------------------------------- operations


STOCK_RETRIEVE = "stock DRF view (token, RetrieveAPIView)"
STOCK_LIST = "stock DRF list (token, ListAPIView, 100)"


@dataclass(frozen=True)
class Operation:
    label: str
    server: str  # "meshplane" or "stock"
    read: bool
    build: Callable[[load.Address, dict, int], bytes]  # (server, seed, i) -> raw request
    baseline: str = STOCK_RETRIEVE  # label of the stock operation it is compared with


def _describe(addr, seed, i):
    path = f"/v20190125/meshes/{specs.MESH}/virtualNodes/{seed['nodeName']}"
    return load.sigv4_request(addr, _creds(seed), seed["region"], "GET", path)


def _list(mesh: str):
    def build(addr, seed, i):
        path = f"/v20190125/meshes/{mesh}/virtualNodes?limit=100"
        return load.sigv4_request(addr, _creds(seed), seed["region"], "GET", path)

    return build


def _update_route(addr, seed, i):
    # A fresh clientToken on every call, as boto3 and Terraform send; the weight changes too.
    path = f"/v20190125/meshes/{specs.MESH}/virtualRouter/{specs.ROUTER}/routes/{specs.ROUTE}"
    body = {"spec": specs.route_spec(i % 51), "clientToken": str(uuid.uuid4())}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return load.sigv4_request(addr, _creds(seed), seed["region"], "PUT", path, raw)


def _stock(addr, seed, i):
    return load.token_request(addr, seed["token"], f"/stock/virtual-nodes/{seed['nodePk']}")


def _stock_list(addr, seed, i):
    return load.token_request(addr, seed["token"], f"/stock/meshes/{seed['meshPk']}/virtual-nodes")


def _creds(seed) -> Credentials:
    return Credentials(seed["keyId"], seed["secret"])


OPERATIONS = [
    Operation(STOCK_RETRIEVE, "stock", True, _stock),
    Operation(STOCK_LIST, "stock", True, _stock_list, baseline=STOCK_LIST),
    Operation("DescribeVirtualNode", "meshplane", True, _describe),
    Operation(
        "ListVirtualNodes (100 nodes, limit 100)",
        "meshplane",
        True,
        _list(specs.MESH),
        baseline=STOCK_LIST,
    ),
    Operation("UpdateRoute", "meshplane", False, _update_route),
]


@dataclass
class Result:
    op: Operation
    rounds: list[load.Measurement]

    @property
    def median(self) -> load.Measurement:
        return sorted(self.rounds, key=lambda m: m.rate)[len(self.rounds) // 2]

    @property
    def median_cpu(self) -> float:
        return sorted(m.cpu_per_request for m in self.rounds)[len(self.rounds) // 2]

    def ratio(self, stock: "Result") -> float:
        """Median over rounds of this rate / the stock rate measured in the same round, so
        that load from other processes drifting between rounds cancels out."""
        pairs = zip(self.rounds, stock.rounds, strict=True)
        return _median(m.rate / s.rate if s.rate else 0.0 for m, s in pairs)

    def cpu_ratio(self, stock: "Result") -> float:
        """Like ratio(), from server CPU per request: stock CPU / this CPU (higher is better)."""
        pairs = zip(self.rounds, stock.rounds, strict=True)
        return _median(
            s.cpu_per_request / m.cpu_per_request if m.cpu_per_request else 0.0 for m, s in pairs
        )

    @property
    def queries(self) -> Counter:
        return sum((m.queries for m in self.rounds), Counter())

    @property
    def errors(self) -> Counter:
        return sum((m.errors for m in self.rounds), Counter())


def measure(op: Operation, server: Server, seed: dict, args, warm: bool) -> load.Measurement:
    # Signed just before use, so every signature is well inside the 15-minute window.
    if warm and args.warmup:
        warmup = [op.build(server.addr, seed, i) for i in range(args.warmup)]
        load.fire(server.addr, warmup, args.clients, args.seconds)
    requests = [op.build(server.addr, seed, i) for i in range(args.requests)]
    before = server.cpu.snapshot()
    measured = load.fire(server.addr, requests, args.clients, args.seconds)
    measured.server_cpu = cpu.ServerCPU.spent(before, server.cpu.snapshot())
    return measured


def list_queries(server: Server, seed: dict, mesh: str, samples: int = 20) -> Counter:
    build = _list(mesh)
    counts: Counter = Counter()
    for i in range(samples):
        reply = load.send(server.addr, build(server.addr, seed, i))
        if reply.status != 200:
            raise RuntimeError(f"ListVirtualNodes {mesh}: HTTP {reply.status} {reply.body[:300]}")
        counts[reply.queries] += 1
    return counts


def smoke(servers: dict[str, Server], seed: dict) -> None:
    """One request of each kind must succeed before anything is timed."""
    for op in OPERATIONS:
        server = servers[op.server]
        reply = load.send(server.addr, op.build(server.addr, seed, 0))
        if reply.status != 200:
            raise RuntimeError(f"{op.label}: HTTP {reply.status} {reply.body[:300]!r}")
        if reply.queries is None:
            raise RuntimeError(f"{op.label}: no X-Meshplane-Queries header in the response")
    addr = servers["meshplane"].addr
    listed = json.loads(load.send(addr, _list(specs.MESH)(addr, seed, 0)).body)["virtualNodes"]
    if len(listed) != 100:
        raise RuntimeError(f"ListVirtualNodes returned {len(listed)} nodes, expected 100")


# ---------------------------------------------------------------- report


def _median(values) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def fmt_queries(counts: Counter) -> str:
    if not counts:
        return "-"
    mode = counts.most_common(1)[0][0]
    low, high = min(counts), max(counts)
    if low == high:
        return str(mode)
    return f"{mode} ({low}-{high})"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    return head + (" + uncommitted changes" if dirty else "")


def report(
    results: list[Result], small: Counter, large: Counter, queue: TaskQueue, args, env: str
) -> None:
    baselines = {r.op.label: r for r in results if r.op.server == "stock"}
    load1, load5, _ = os.getloadavg()
    print()
    print(env)
    print(f"machine: {machine()}; load average {load1:.2f} {load5:.2f} after the run")
    print(
        f"1 gunicorn sync worker per server; {args.clients} client processes on loopback; "
        f"{args.warmup} warm-up requests, then {args.requests} requests or {args.seconds:g} s "
        f"per operation; {args.rounds} round(s)"
    )
    print(
        "req/s and CPU ms/request (gunicorn worker + its PostgreSQL backend) are medians over "
        "rounds; 'vs stock' is the median of the per-round ratios (higher is better)"
    )
    print()
    header = (
        f"{'operation':40} {'requests':>8} {'req/s':>7} {'(min-max)':>11} {'vs stock':>8}  "
        f"{'CPU ms/req':>10} {'vs stock':>8}  {'queries/req':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        stock = baselines[r.op.baseline]
        rates = [m.rate for m in r.rounds]
        spread = f"({min(rates):.0f}-{max(rates):.0f})"
        errors = f"  [{sum(r.errors.values())} errors: {dict(r.errors)}]" if r.errors else ""
        print(
            f"{r.op.label:40} {r.median.ok:8d} {r.median.rate:7.1f} {spread:>11} "
            f"{r.ratio(stock):7.2f}x  {1000 * r.median_cpu:10.2f} {r.cpu_ratio(stock):7.2f}x  "
            f"{fmt_queries(r.queries):>11}{errors}"
        )
    if queue.redis_url:
        print(
            f"compiles the writes enqueued: {queue.pending()} (no Celery worker runs here; "
            "discarded at exit)"
        )
    else:
        print("REDIS_URL is unset: writes compile in-process (embedded mode), inside UpdateRoute")
    same = small.most_common(1)[0][0] == large.most_common(1)[0][0]
    verdict = "constant" if same else "NOT constant"
    print()
    print(
        f"ListVirtualNodes queries/request: 10 nodes -> {fmt_queries(small)}, "
        f"100 nodes -> {fmt_queries(large)} ({verdict} in the number of rows)"
    )
    for r in results:
        if r.op.read and r.op.server == "meshplane":
            stock = baselines[r.op.baseline]
            ratio = r.ratio(stock)
            state = "meets" if ratio >= READ_GOAL else "is below"
            print(
                f"{r.op.label}: {ratio:.2f}x the req/s of '{stock.op.label}' "
                f"({r.cpu_ratio(stock):.2f}x by CPU per request), {state} the {READ_GOAL}x goal"
            )


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per operation (default 2000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per operation")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per operation")
    parser.add_argument("--clients", type=int, default=3, help="client processes (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all operations (1-5)")
    parser.add_argument("--db-name", default="meshplane_bench", help="database to (re)create")
    args = parser.parse_args(argv)
    if not (
        0 < args.requests <= 100_000
        and 0 < args.seconds <= 120
        and 0 < args.clients <= 32
        and 0 < args.rounds <= 5
        and 0 <= args.warmup <= 10_000
    ):
        parser.error(
            "bounds: --requests 1..100000, --seconds 0..120, --clients 1..32, "
            "--rounds 1..5, --warmup 0..10000"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    db = BenchDatabase(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL, args.db_name)
    queue = TaskQueue(os.environ.get("REDIS_URL", ""))
    env = {
        **os.environ,
        "DATABASE_URL": db.url(),
        "MESHPLANE_QUERY_COUNT_HEADER": "1",
        "MESHPLANE_LOG_LEVEL": "ERROR",
        "MESHPLANE_TASK_QUEUE": queue.name,
    }
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="meshplane-bench-") as logdir:
        try:
            print(f"bench: creating database {db.name}, migrating and seeding", flush=True)
            started = (
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  commit {commit()}  "
                f"Python {platform.python_version()}  PostgreSQL {db.server_version()}"
            )
            db.create()
            seed = prepare(env)
            servers["meshplane"] = Server("meshplane", "meshapi.settings", env, db, Path(logdir))
            servers["stock"] = Server("stock", "bench.stock_settings", env, db, Path(logdir))
            smoke(servers, seed)
            results = [Result(op, []) for op in OPERATIONS]
            for n in range(args.rounds):
                for r in results:
                    print(f"bench: round {n + 1}/{args.rounds}: {r.op.label}", flush=True)
                    r.rounds.append(measure(r.op, servers[r.op.server], seed, args, n == 0))
            small = list_queries(servers["meshplane"], seed, specs.SMALL_MESH)
            large = list_queries(servers["meshplane"], seed, specs.MESH)
            report(results, small, large, queue, args, started)
        except Exception:
            for server in servers.values():
                print(f"--- {server.label} server log ---\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            for server in servers.values():
                server.stop()
            db.drop()
            queue.discard()
    return 0


if __name__ == "__main__":
    sys.exit(main())
