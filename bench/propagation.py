"""xDS propagation: how long an UpdateRoute takes to reach 1, 100 and 1,000 connected proxies,
what the push costs the replica per client, and what a connected client costs it in memory.

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/propagation.py \
        [--sizes 1 100 1000] [--changes 20] [--streams-per-channel 100] [--xds-processes 1]

One run, four processes besides this one, all on loopback:

* this process (the orchestrator): a database of its own (Django's test database machinery:
  created, migrated and dropped here), seeded through the service functions the API calls:
  per size N a mesh `propN` with N client virtual nodes whose one backend is the virtual
  service `svc.prop.local`, provided by a router whose weighted route `split` sends to `v1`
  and `v2`. A change is `resources.update(ROUTE, …)` (what UpdateRoute calls) with new
  weights, then `workers.pipeline.run_compile` (what the compile_mesh task runs; no Celery
  worker), which stores the N new route configurations and publishes them on Redis;
* `manage.py serve_xds --insecure` (a real replica, restarted for every size so its memory
  starts from the same idle state; plaintext on loopback, the tenant taken from the App Mesh
  ARN in node.metadata: mTLS for 1,000 clients would put 1,000 handshakes and certificates
  into the setup, not into the push path measured here);
* a bare fan-out server (`--bare`): grpc.aio with the same method and the same request
  parsing, which on command writes the route response serve_xds sent (the same bytes,
  with a fresh version and nonce appended) to every stream. It is the baseline for the
  replica's push CPU;
* two load processes (`--load`), one per server, each holding N delta-xDS streams
  (`DeltaAggregatedResources`, one grpc.aio channel per 100 streams, or per
  `--streams-per-channel` streams: 1 gives every proxy its own connection, as deployed;
  every stream a distinct node id, wildcard subscriptions to CDS/EDS/LDS/RDS) that ACK
  every response and record when they ACKed each route version.

Per size: RSS of serve_xds idle and with N clients connected; then ≥ 20 changes, each timed
from the UpdateRoute to the moment the last client ACKed the new version (also split at
the end of run_compile, i.e. from publish), each followed by the bare server's pushes to
its own N streams (≥ 2,000 stream writes in all), so serve_xds and the baseline run at the
same cadence in the same minutes; serve_xds CPU (/proc, all threads; with
`--xds-processes N` the parent and its N replica processes, RSS summed likewise) over the
changes, per client per change, beside the bare server's per client per push; and the
serve_xds load process's own CPU per change (is the client the limit?).
Every phase has a count and a time limit; children are stopped and the
database dropped in `finally` and on SIGTERM. Reports, never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    import grpc

    from meshapi.models import Mesh
    from tenants.models import Tenant

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: import the project as a package
    sys.path[0] = str(ROOT)

from bench.procs import (  # noqa: E402 - after the path is set
    Child,
    cpu_seconds,
    database_url,
    family,
    family_cpu_seconds,
    family_rss_bytes,
    loadavg,
    percentile,
    rss_bytes,
    settle,
)

DELTA_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SUBSCRIBED = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
STREAMS_PER_CHANNEL = 100
OPENING_AT_ONCE = 50
SERVICE = "svc.prop.local"
GOALS = {"p99_ms_at_1000": 250.0, "cpu_ratio": 1.3, "mb_per_client": 0.5}


# ================================================================== load process


class Client:
    __slots__ = ("acked", "call", "error", "node_id", "responses")

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.acked: dict[str, float] = {}  # route version → when its ACK was written
        self.call = None
        self.error = ""
        self.responses = 0


class Load:
    """N delta-xDS streams that ACK everything, and the waits the orchestrator asks for."""

    def __init__(self) -> None:
        from envoy.service.discovery.v3 import discovery_pb2

        self.pb = discovery_pb2
        self.clients: dict[str, Client] = {}
        self.channels: list = []
        self.tasks: list[asyncio.Task] = []
        self.sample = b""
        self.waiter: tuple[dict[str, str], set[str], list[float], asyncio.Event] | None = None
        self.answered = 0

    async def connect(self, target: str, nodes: list[dict], limit: float, per_channel: int) -> dict:
        import grpc

        await self.close()  # whatever a failed phase left behind
        start = time.monotonic()
        count = (len(nodes) + per_channel - 1) // per_channel
        # A local subchannel pool: each channel is its own HTTP/2 connection.
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0)]
        self.channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(count)]
        opening = asyncio.Semaphore(OPENING_AT_ONCE)
        self.answered = 0
        everyone = asyncio.Event()
        total = len(nodes)

        def answered() -> None:
            self.answered += 1
            if self.answered == total:
                everyone.set()

        for i, node in enumerate(nodes):
            client = Client(node["id"])
            self.clients[client.node_id] = client
            channel = self.channels[i // per_channel]
            self.tasks.append(
                asyncio.create_task(self._stream(channel, client, node, opening, answered))
            )
        try:
            await asyncio.wait_for(everyone.wait(), limit)
        except TimeoutError:
            pass
        errors = [c.error for c in self.clients.values() if c.error]
        return {
            "streams": total,
            "answered": self.answered,
            "failed": len(errors),
            "errors": sorted(set(errors))[:5],
            "seconds": round(time.monotonic() - start, 2),
        }

    async def _stream(
        self,
        channel: grpc.aio.Channel,
        client: Client,
        node: dict,
        opening: asyncio.Semaphore,
        answered: Callable[[], None],
    ) -> None:
        import grpc
        from google.protobuf import struct_pb2

        pb = self.pb
        method = channel.stream_stream(
            DELTA_METHOD,
            request_serializer=pb.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=None,  # raw bytes: kept as the bare server's payload
        )
        first_answer = True
        try:
            async with opening:
                metadata = struct_pb2.Struct()
                metadata.update(node["metadata"])
                call = client.call = method()
                for i, type_url in enumerate(SUBSCRIBED):
                    request = pb.DeltaDiscoveryRequest(
                        type_url=type_url, resource_names_subscribe=["*"]
                    )
                    if i == 0:
                        request.node.id = node["id"]
                        request.node.cluster = node["id"]
                        request.node.metadata.CopyFrom(metadata)
                    await call.write(request)
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    client.error = "closed before any response"
                    return
                first_answer = False
                answered()
                await self._handle(client, call, raw)
            while True:
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    return
                await self._handle(client, call, raw)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            client.error = f"{exc.code().name}: {exc.details()}"
        except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
            client.error = f"{type(exc).__name__}: {exc}"
        finally:
            if first_answer:
                answered()

    async def _handle(self, client: Client, call, raw: bytes) -> None:
        response = self.pb.DeltaDiscoveryResponse.FromString(raw)
        client.responses += 1
        await call.write(
            self.pb.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)
        )
        if response.type_url != ROUTE:
            return
        now = time.monotonic()
        version = response.system_version_info
        if len(client.acked) > 8:
            client.acked.pop(next(iter(client.acked)))
        client.acked[version] = now
        if response.resources:
            self.sample = raw
        waiter = self.waiter
        if waiter is not None:
            expected, pending, times, done = waiter
            if client.node_id in pending and expected[client.node_id] == version:
                pending.discard(client.node_id)
                times.append(now)
                if not pending:
                    done.set()

    async def wait(self, versions: dict[str, str], limit: float) -> dict:
        """Until every client has ACKed its expected route version (or the limit)."""
        pending: set[str] = set()
        times: list[float] = []
        for node_id, version in versions.items():
            client = self.clients.get(node_id)
            at = client.acked.get(version) if client is not None else None
            if at is None:
                pending.add(node_id)
            else:
                times.append(at)
        done = asyncio.Event()
        if not pending:
            done.set()
        self.waiter = (versions, pending, times, done)
        try:
            await asyncio.wait_for(done.wait(), limit)
        except TimeoutError:
            pass
        finally:
            self.waiter = None
        return {
            "done": not pending,
            "missing": len(pending),
            "first": min(times) if times else None,
            "last": max(times) if times else None,
            "median": statistics.median(times) if times else None,
        }

    async def close(self) -> dict:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels:
            await channel.close()
        closed = len(self.clients)
        self.clients, self.channels, self.tasks = {}, [], []
        return {"closed": closed}


async def _commands(handle) -> None:
    """JSON lines on stdin → one JSON line each on stdout; EOF (orchestrator gone) ends."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        answer = await handle(command)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if command["cmd"] == "quit":
            return


async def run_load(deadline: float) -> None:
    load = Load()

    async def handle(command: dict) -> dict:
        cmd = command["cmd"]
        if cmd == "connect":
            return await load.connect(
                command["target"], command["nodes"], command["limit"], command["per_channel"]
            )
        if cmd == "wait":
            return await load.wait(command["versions"], command["limit"])
        if cmd == "sample":
            return {"b64": base64.b64encode(load.sample).decode()}
        if cmd in ("close", "quit"):
            return await load.close()
        return {"error": f"unknown command {cmd!r}"}

    try:
        await asyncio.wait_for(_commands(handle), deadline)
    finally:
        await load.close()


# ================================================================== bare fan-out server


async def run_bare(deadline: float) -> None:
    """grpc.aio, the same method and request parsing as serve_xds, and nothing else: every
    stream waits on a queue; `push` puts the same prepared bytes into every queue."""
    import grpc
    from envoy.service.discovery.v3 import discovery_pb2

    from workers.xds.cache import field_bytes

    streams: set[asyncio.Queue] = set()
    payload = b""

    def stamped(version: str) -> bytes:
        # The last occurrence of a scalar field wins: same bytes, a new version and nonce.
        return payload + field_bytes(1, version.encode()) + field_bytes(5, version.encode())

    async def delta(request_iterator, context):
        events: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            try:
                async for _request in request_iterator:
                    pass  # parsed by the deserializer, as serve_xds's are; ACKs need nothing
            finally:
                events.put_nowait(None)

        streams.add(events)
        reader = asyncio.create_task(read())
        # A first answer at open, as serve_xds gives one: the same payload, version bare-0.
        events.put_nowait(stamped("bare-0"))
        try:
            while True:
                item = await events.get()
                if item is None:
                    return
                yield item
        finally:
            streams.discard(events)
            reader.cancel()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "envoy.service.discovery.v3.AggregatedDiscoveryService",
                {
                    "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                        delta,
                        request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                        response_serializer=lambda data: data,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    sys.stdout.write(json.dumps({"ready": f"127.0.0.1:{port}"}) + "\n")
    sys.stdout.flush()

    async def handle(command: dict) -> dict:
        nonlocal payload
        cmd = command["cmd"]
        if cmd == "payload":
            payload = base64.b64decode(command["b64"])
            return {"bytes": len(payload)}
        if cmd == "push":
            data = stamped(command["version"])
            for events in list(streams):
                events.put_nowait(data)
            return {"streams": len(streams)}
        if cmd == "quit":
            return {}
        return {"error": f"unknown command {cmd!r}"}

    try:
        await asyncio.wait_for(_commands(handle), deadline)
    finally:
        await server.stop(grace=None)


# ================================================================== orchestrator


class XdsReplica(Child):
    """`manage.py serve_xds --insecure` on a free loopback port; with `processes` > 1 a
    parent and its replica processes (`--processes`), whose CPU and RSS count together."""

    def __init__(self, name: str, env: dict[str, str], processes: int = 1) -> None:
        cmd = [sys.executable, "manage.py", "serve_xds", "--insecure", "--host", "127.0.0.1"]
        cmd += ["--port", "0", "--replica", f"bench-{os.getpid()}"]
        if processes != 1:
            cmd += ["--processes", str(processes)]
        super().__init__(name, cmd, env)
        line = ""
        deadline = time.monotonic() + 60
        while not line.startswith("serve_xds ready"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve_xds did not start\n{self.log()}")
            line = self.read(60)
        fields = dict(p.split("=", 1) for p in line.split()[2:])
        self.target = fields["ads"]


def client_name(i: int) -> str:
    return f"c{i:04d}"


def route_spec(weight: int) -> dict:
    return {
        "priority": 10,
        "httpRoute": {
            "match": {"prefix": "/"},
            "action": {
                "weightedTargets": [
                    {"virtualNode": "v1", "weight": weight},
                    {"virtualNode": "v2", "weight": 100 - weight},
                ]
            },
        },
    }


def seed(tenant: Tenant, size: int) -> Mesh:
    """Mesh `prop<size>`, through the service functions the API calls."""
    from meshapi.models import Mesh
    from meshapi.services import endpoints, resources
    from meshapi.services.kinds import MESH, ROUTE, VIRTUAL_NODE, VIRTUAL_ROUTER, VIRTUAL_SERVICE

    writer = resources.Writer(actor="bench")
    mesh = f"prop{size}"
    http = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}
    resources.create(tenant, MESH, writer, mesh_name=mesh, name=mesh, spec=None)
    for i, name in enumerate(("v1", "v2")):
        resources.create(tenant, VIRTUAL_NODE, writer, mesh_name=mesh, name=name, spec=http)
        endpoints.add_static(
            tenant, writer, mesh_name=mesh, node_name=name, port=8080, address=f"10.0.0.{i + 1}"
        )
    resources.create(tenant, VIRTUAL_ROUTER, writer, mesh_name=mesh, name="router", spec=http)
    resources.create(
        tenant,
        ROUTE,
        writer,
        mesh_name=mesh,
        name="split",
        parent_name="router",
        spec=route_spec(50),
    )
    provider = {"provider": {"virtualRouter": {"virtualRouterName": "router"}}}
    resources.create(tenant, VIRTUAL_SERVICE, writer, mesh_name=mesh, name=SERVICE, spec=provider)
    backends = {"backends": [{"virtualService": {"virtualServiceName": SERVICE}}]}
    for i in range(size):
        resources.create(
            tenant, VIRTUAL_NODE, writer, mesh_name=mesh, name=client_name(i), spec=backends
        )
    return Mesh.objects.get(tenant=tenant, name=mesh)


def expected_routes(mesh: Mesh, size: int) -> dict[str, str]:
    """node id → the route version each client's proxy must end up ACKing."""
    from meshapi.models import ProxyConfig

    names = {client_name(i) for i in range(size)}
    rows = ProxyConfig.objects.filter(
        mesh=mesh, kind="virtualNode", consumer="envoy", interception="redirect"
    ).select_related("current")
    return {
        f"mesh/{mesh.name}/virtualNode/{r.name}": r.current.type_versions.get(ROUTE, "")
        for r in rows
        if r.name in names and r.current is not None
    }


def node_specs(tenant: Tenant, mesh: Mesh, size: int) -> list[dict]:
    out = []
    for i in range(size):
        name = client_name(i)
        arn = (
            f"arn:aws:appmesh:{tenant.default_region}:{tenant.account_id}:"
            f"mesh/{mesh.name}/virtualNode/{name}"
        )
        out.append(
            {
                "id": f"mesh/{mesh.name}/virtualNode/{name}",
                "metadata": {
                    "APPMESH_RESOURCE_ARN": arn,
                    "consumer": "envoy",
                    "interception": "redirect",
                    "instance_id": f"bench-{name}",
                    "address": f"10.1.{i // 250}.{i % 250 + 1}",
                },
            }
        )
    return out


def start_py_spy(prefix: str | None, size: int, pids: dict[str, int]) -> list:
    """`--py-spy PREFIX`: sample each process over the changes only, as raw collapsed
    stacks in PREFIX-<N>-<role>.txt: serve_xds and the bare server while they hold the
    GIL (their CPU), this process idle included (where the compile's wall time goes: read
    run_compile's stacks). Sampling slows what it samples: a profiled run's times are not
    results."""
    if not prefix:
        return []
    import shutil
    import subprocess

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return [
        subprocess.Popen(
            [spy, "record", "-p", str(pid), "--idle" if role == "compile" else "--gil"]
            + ["-r", "200", "-f", "raw"]
            + ["--nonblocking", "-o", f"{prefix}-{size}-{role}.txt"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role, pid in pids.items()
    ]


def stop_py_spy(spies: list) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        spy.wait(30)


def measure_size(
    args: argparse.Namespace,
    tenant: Tenant,
    mesh: Mesh,
    size: int,
    env: dict[str, str],
    loads: tuple[Child, Child],
    results: dict[int, dict],
) -> None:
    """serve_xds and the bare server side by side, each with N streams held by a load
    process of its own; each change through serve_xds is followed by pushes of the bare
    server, so both CPU rates come from the same minutes (the machine's drift between two
    phases once moved the ratio by ±10 %)."""
    row = results.setdefault(size, {"size": size})
    load, bare_load = loads
    connect_limit = max(60.0, size * 0.3)
    nodes = node_specs(tenant, mesh, size)
    replica = XdsReplica(f"serve_xds-{size}", env, args.xds_processes)
    xds_pid = replica.proc.pid  # with --xds-processes N, CPU and RSS are its family's
    bare = Child(
        f"bare-{size}",
        [sys.executable, __file__, "--bare", "--deadline", str(args.phase_limit * 2)],
        env,
    )
    try:
        bare_target = json.loads(bare.read(60))["ready"]
        time.sleep(2.0)  # settle: the refresher subscribes, imports finish
        rss_idle, bare_idle = family_rss_bytes(xds_pid), rss_bytes(bare.proc.pid)
        if not connect(load, replica.target, nodes, args, connect_limit, row, "serve_xds"):
            return
        initial = load.ask(
            {"cmd": "wait", "versions": expected_routes(mesh, size), "limit": connect_limit},
            connect_limit + 30,
        )
        if not initial["done"]:
            row["error"] = f"{initial['missing']} clients never ACKed their first routes"
            print(f"  N={size}: {row['error']}", flush=True)
            return
        time.sleep(1.0)  # the status recorder's first flush of ACKs
        rss_connected = family_rss_bytes(xds_pid)
        row["rss_idle_mb"] = rss_idle / 2**20
        row["rss_mb"] = rss_connected / 2**20
        row["mb_per_client"] = (rss_connected - rss_idle) / size / 2**20

        # The bare server writes the route response serve_xds sent (the same bytes).
        sample = load.ask({"cmd": "sample"}, 30)["b64"]
        row["payload_bytes"] = bare.ask({"cmd": "payload", "b64": sample}, 30)["bytes"]
        if not connect(bare_load, bare_target, nodes, args, connect_limit, row, "bare"):
            return
        first = bare_load.ask(
            {
                "cmd": "wait",
                "versions": dict.fromkeys((n["id"] for n in nodes), "bare-0"),
                "limit": connect_limit,
            },
            connect_limit + 30,
        )
        if not first["done"]:
            row["error"] = f"bare: {first['missing']} streams never answered"
            return
        time.sleep(0.5)
        row["bare_mb_per_client"] = (rss_bytes(bare.proc.pid) - bare_idle) / size / 2**20

        # The streams' endpoint registrations run on after the first ACKs: wait for them,
        # so the idle rates subtracted below are idle, not their tail.
        row["settle_s"] = settle(xds_pid, quiet=0.05 * args.xds_processes, cpu=family_cpu_seconds)
        idle_start = time.monotonic()
        xds_idle_start, bare_idle_start = family_cpu_seconds(xds_pid), cpu_seconds(bare.proc.pid)
        time.sleep(2.0)
        idle_wall = time.monotonic() - idle_start
        idle_rate = (family_cpu_seconds(xds_pid) - xds_idle_start) / idle_wall
        bare_idle_rate = (cpu_seconds(bare.proc.pid) - bare_idle_start) / idle_wall
        with publish_times() as published_at:
            measure_changes(
                args, tenant, mesh, size, nodes, (load, bare_load), (xds_pid, bare), row,
                (idle_rate, bare_idle_rate), published_at,
            )  # fmt: skip
    finally:
        try:
            for each in (load, bare_load):
                each.ask({"cmd": "close"}, 120)
        finally:
            replica.stop()
            bare.stop()


def connect(
    load: Child,
    target: str,
    nodes: list[dict],
    args: argparse.Namespace,
    limit: float,
    row: dict,
    label: str,
) -> bool:
    answer = load.ask(
        {
            "cmd": "connect",
            "target": target,
            "nodes": nodes,
            "limit": limit,
            "per_channel": args.streams_per_channel,
        },
        limit + 30,
    )
    row.setdefault("connect_s", answer["seconds"])
    if answer["failed"] or answer["answered"] < len(nodes):
        row["error"] = f"connect to {label}: {answer}"
        print(f"  N={len(nodes)}: connecting to {label} failed: {answer}", flush=True)
        return False
    return True


@contextmanager
def publish_times() -> Iterator[list[float]]:
    """When each run_compile's publish returned, appended as it happens (run_compile
    trims history after its publish: its return is later than the push's start)."""
    from workers import publish

    times: list[float] = []
    original = publish.publish

    def timed(groups: list) -> None:
        original(groups)
        times.append(time.monotonic())

    publish.publish = timed
    try:
        yield times
    finally:
        publish.publish = original


def measure_changes(
    args: argparse.Namespace,
    tenant: Tenant,
    mesh: Mesh,
    size: int,
    nodes: list[dict],
    loads: tuple[Child, Child],
    servers: tuple[int, Child],
    row: dict,
    idle_rates: tuple[float, float],
    published_at: list[float],
) -> None:
    """Each change: an UpdateRoute through serve_xds, then the bare server's pushes."""
    from meshapi.services import resources
    from meshapi.services.kinds import ROUTE as ROUTE_KIND
    from workers.pipeline import run_compile

    load, bare_load = loads
    xds_pid, bare = servers
    writer = resources.Writer(actor="bench")
    # At least ~2,000 bare stream writes, so the CPU clock's 10 ms ticks resolve a small N.
    wanted = math.ceil(2000 / size)  # bare pushes in all
    bare_each = max(1, min(math.ceil(wanted / args.changes), 400 // args.changes))
    totals, from_publish, first_acks, writes, compiles, timeouts = [], [], [], [], [], 0
    bare_totals: list[float] = []
    done: list[int] = []  # the change each of `totals` measured
    phase_end = time.monotonic() + args.phase_limit
    wall_start = time.monotonic()
    cpu_start, bare_cpu_start = family_cpu_seconds(xds_pid), cpu_seconds(bare.proc.pid)
    # Each replica process's share of the push (how evenly connections spread).
    members = {pid: cpu_seconds(pid) for pid in family(xds_pid)}
    load_cpu_start = cpu_seconds(load.proc.pid)
    spies = start_py_spy(
        args.py_spy, size, {"xds": xds_pid, "compile": os.getpid(), "bare": bare.proc.pid}
    )
    bare_pushes = 0
    for change in range(args.changes):
        if time.monotonic() > phase_end or timeouts >= 3:
            break
        weight = change % 98 + 1  # 1..98, never the 50 seeded: every change is new
        t0 = time.monotonic()
        resources.update(
            tenant,
            ROUTE_KIND,
            writer,
            mesh_name=mesh.name,
            name="split",
            parent_name="router",
            spec=route_spec(weight),
        )
        t_written = time.monotonic()
        published_at.clear()
        result = run_compile(mesh.id)
        t_published = published_at[0] if published_at else time.monotonic()
        writes.append((t_written - t0) * 1000)
        compiles.append((t_published - t_written) * 1000)
        versions = expected_routes(mesh, size)
        if len(result.changed) < size:
            print(f"  N={size}: change {change} recompiled only {len(result.changed)}")
        answer = load.ask(
            {"cmd": "wait", "versions": versions, "limit": args.change_limit},
            args.change_limit + 30,
        )
        if not answer["done"]:
            timeouts += 1
            print(f"  N={size}: change {change}: {answer['missing']} clients not ACKed")
        else:
            totals.append((answer["last"] - t0) * 1000)
            done.append(change)
            from_publish.append((answer["last"] - t_published) * 1000)
            first_acks.append((answer["first"] - t_published) * 1000)
        time.sleep(0.3)  # the replica's status flush of those ACKs, before the bare pushes
        for _ in range(bare_each):
            bare_pushes += 1
            version = f"bare-{bare_pushes}"
            t0 = time.monotonic()
            bare.ask({"cmd": "push", "version": version}, 30)
            answer = bare_load.ask(
                {
                    "cmd": "wait",
                    "versions": dict.fromkeys((n["id"] for n in nodes), version),
                    "limit": args.change_limit,
                },
                args.change_limit + 30,
            )
            if answer["done"]:
                bare_totals.append((answer["last"] - t0) * 1000)
    time.sleep(0.5)
    stop_py_spy(spies)
    wall = time.monotonic() - wall_start
    idle_rate, bare_idle_rate = idle_rates
    cpu = family_cpu_seconds(xds_pid) - cpu_start - idle_rate * wall
    bare_cpu = cpu_seconds(bare.proc.pid) - bare_cpu_start - bare_idle_rate * wall
    shares = [cpu_seconds(pid) - before for pid, before in members.items()]
    load_cpu = cpu_seconds(load.proc.pid) - load_cpu_start
    row.update(
        changes=len(totals),
        timeouts=timeouts,
        p50_ms=statistics.median(totals) if totals else None,
        p99_ms=percentile(totals, 99) if totals else None,
        slowest=sorted(zip(totals, done, strict=True), reverse=True)[:3],
        publish_p50_ms=statistics.median(from_publish) if from_publish else None,
        publish_p99_ms=percentile(from_publish, 99) if from_publish else None,
        first_ack_p50_ms=statistics.median(first_acks) if first_acks else None,
        write_p50_ms=statistics.median(writes) if writes else None,
        compile_p50_ms=statistics.median(compiles) if compiles else None,
        idle_cpu_pct=idle_rate * 100,
        xds_cpu_shares=[round(100 * x / max(sum(shares), 1e-9)) for x in shares],
        xds_cpu_us=cpu / max(1, len(totals)) / size * 1e6,
        load_cpu_ms=load_cpu / max(1, len(totals)) * 1000,
        bare_p50_ms=statistics.median(bare_totals) if bare_totals else None,
        bare_p99_ms=percentile(bare_totals, 99) if bare_totals else None,
        bare_cpu_us=bare_cpu / max(1, bare_pushes) / size * 1e6,
    )


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(results: dict, load_before: str, load_after: str, processes: int = 1) -> None:
    print()
    print(
        f"load average before: {load_before}  after: {load_after}  cores: {os.cpu_count()}  "
        f"serve_xds processes: {processes}"
    )
    print(
        f"{'N':>5} {'changes':>7} {'p50 ms':>8} {'p99 ms':>8} {'pub 1st':>8} {'pub p50':>8} "
        f"{'pub p99':>8} "
        f"{'write':>6} {'compile':>8} {'bare p50':>8} {'bare p99':>9} {'xds us/cl':>9} "
        f"{'bare us/cl':>10} {'cpu x':>6} {'MB/cl':>6} {'bare MB/cl':>10} "
        f"{'RSS idle':>8} {'RSS N':>7} {'load ms/ch':>10}"
    )
    for size in sorted(results):
        r = results[size]
        ratio = None
        if r.get("xds_cpu_us") is not None and r.get("bare_cpu_us"):
            ratio = r["xds_cpu_us"] / r["bare_cpu_us"]
        print(
            f"{size:>5} {r.get('changes', 0):>7} {_fmt(r.get('p50_ms'), '8.1f')} "
            f"{_fmt(r.get('p99_ms'), '8.1f')} {_fmt(r.get('first_ack_p50_ms'), '8.1f')} "
            f"{_fmt(r.get('publish_p50_ms'), '8.1f')} "
            f"{_fmt(r.get('publish_p99_ms'), '8.1f')} {_fmt(r.get('write_p50_ms'), '6.1f')} "
            f"{_fmt(r.get('compile_p50_ms'), '8.1f')} "
            f"{_fmt(r.get('bare_p50_ms'), '8.1f')} {_fmt(r.get('bare_p99_ms'), '9.1f')} "
            f"{_fmt(r.get('xds_cpu_us'), '9.0f')} {_fmt(r.get('bare_cpu_us'), '10.0f')} "
            f"{_fmt(ratio, '6.2f')} {_fmt(r.get('mb_per_client'), '6.3f')} "
            f"{_fmt(r.get('bare_mb_per_client'), '10.3f')} {_fmt(r.get('rss_idle_mb'), '8.1f')} "
            f"{_fmt(r.get('rss_mb'), '7.1f')} {_fmt(r.get('load_cpu_ms'), '10.1f')}"
        )
        if r.get("idle_cpu_pct") is not None:
            print(
                f"      N={size}: serve_xds idle {r['idle_cpu_pct']:.1f} % of a core after "
                f"settling {r.get('settle_s', 0):.0f} s (subtracted from its push CPU)"
            )
        if r.get("slowest"):
            slow = ", ".join(f"{ms:.0f} ms (change {i})" for ms, i in r["slowest"])
            print(f"      N={size}: slowest changes end to end: {slow}")
        if len(r.get("xds_cpu_shares") or ()) > 1:
            shares = " / ".join(f"{x} %" for x in r["xds_cpu_shares"])
            print(f"      N={size}: serve_xds push CPU by process (parent first): {shares}")
        if r.get("error"):
            print(f"      N={size}: {r['error']}")
        if r.get("timeouts"):
            print(f"      N={size}: {r['timeouts']} changes not ACKed by every client in time")
    largest = max(results) if results else 0
    r = results.get(largest, {})
    ratio = (r.get("xds_cpu_us") or 0) / r["bare_cpu_us"] if r.get("bare_cpu_us") else None
    print(
        f"goals at N={largest}: p99 {_fmt(r.get('p99_ms'), '.0f')} ms "
        f"(goal ≤ {GOALS['p99_ms_at_1000']:.0f} ms at 1000), push CPU {_fmt(ratio, '.2f')}x bare "
        f"(goal ≤ {GOALS['cpu_ratio']}x), {_fmt(r.get('mb_per_client'), '.3f')} MB per client "
        f"(goal ≤ {GOALS['mb_per_client']} MB)"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--changes", type=int, default=20, help="UpdateRoutes per size")
    parser.add_argument(
        "--streams-per-channel",
        type=int,
        default=STREAMS_PER_CHANNEL,
        help="streams sharing one HTTP/2 connection (1: a connection per proxy, as deployed)",
    )
    parser.add_argument(
        "--xds-processes",
        type=int,
        default=1,
        help="serve_xds --processes N: replica processes on one port (CPU and RSS summed)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PREFIX",
        help="profile serve_xds and the compile over the changes (py-spy, raw stacks)",
    )
    parser.add_argument("--change-limit", type=float, default=60.0, help="s for one change")
    parser.add_argument("--phase-limit", type=float, default=600.0, help="s for one size")
    args = parser.parse_args(argv)
    if args.xds_processes < 1:
        parser.error("--xds-processes must be at least 1")
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("DATABASE_URL must name a PostgreSQL server (the benchmark makes its own db).")
    if not os.environ.get("REDIS_URL"):
        sys.exit("REDIS_URL must be set: the compile publishes to serve_xds through Redis.")
    queue_name = f"bench-propagation-{os.getpid()}"
    # Anything enqueued (nothing should be) goes to a queue no shared worker consumes.
    os.environ["MESHPLANE_TASK_QUEUE"] = queue_name
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshapi.settings")

    import django

    django.setup()

    from django.db import connection

    from meshapi.models import Mesh
    from meshapi.receivers import compile_on_change
    from meshapi.signals import mesh_changed
    from tenants.services import create_tenant, set_quota
    from workers.pipeline import run_compile

    # The benchmark compiles itself, in this process (run_compile), right after each write.
    mesh_changed.disconnect(
        compile_on_change, sender=Mesh, dispatch_uid="meshapi.compile_on_change"
    )

    def on_sigterm(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"bench_propagation_{os.getpid()}"
    children: list[Child] = []
    results: dict = {}
    load_before = loadavg()
    try:
        connection.creation.create_test_db(verbosity=0, autoclobber=True)
        env = {
            **os.environ,
            "DATABASE_URL": database_url(connection.settings_dict),
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(name, None)
        tenant, _ = create_tenant("Bench Propagation", "bench@example.com", slug="bench-prop")
        set_quota(tenant, "virtual_nodes_per_mesh", max(args.sizes) + 10, actor="bench")
        meshes = {}
        for size in args.sizes:
            start = time.monotonic()
            meshes[size] = seed(tenant, size)
            result = run_compile(meshes[size].id)
            print(
                f"seeded prop{size}: {size} clients, {len(result.changed)} proxies compiled "
                f"in {time.monotonic() - start:.1f} s",
                flush=True,
            )
        loads = tuple(
            Child(name, [sys.executable, __file__, "--load", "--deadline", "3600"], env)
            for name in ("load", "load-bare")
        )
        children.extend(loads)
        for size in args.sizes:
            print(f"N={size}: measuring (load average {loadavg()})", flush=True)
            measure_size(args, tenant, meshes[size], size, env, loads, results)
        for load in loads:
            load.ask({"cmd": "quit"}, 60)
    finally:
        load_after = loadavg()
        for child in children:
            child.stop()
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        try:
            import redis

            redis.Redis.from_url(os.environ["REDIS_URL"]).delete(queue_name)
        except Exception:  # noqa: BLE001, S110 - nothing was ever queued there
            pass
        # Also after a SIGTERM or a failure: what was measured until then.
        report(results, load_before, load_after, args.xds_processes)
        print(f"process logs: {tempfile.gettempdir()}/bench-propagation-{os.getpid()}-*.log")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--load", "--bare"):
        role = sys.argv[1]
        deadline = float(sys.argv[sys.argv.index("--deadline") + 1])
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        asyncio.run(run_load(deadline) if role == "--load" else run_bare(deadline))
    else:
        main(sys.argv[1:])
