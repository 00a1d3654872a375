"""Data plane: the latency and CPU an agent-managed Envoy pair with mTLS adds to a request,
next to an nginx pair (plain HTTP proxy), and what the agent and Envoy cost in memory.

    DATABASE_URL=postgres://… .venv/bin/python bench/dataplane.py \
        [--rounds 15] [--seconds 2] [--rate 1000] [--connections 16] [--mtls STRICT] \
        [--envoy-concurrency 0]

Four paths to one upstream server, measured in the same run:

1. direct: load generator → upstream;
2. nginx pair: generator → nginx (client side) → nginx (server side) → upstream. Debian's
   nginx (`apt-get install nginx-light`), two instances of our own (own config, prefix and
   free loopback ports, `daemon off`), 2 workers each (Envoy's default concurrency here is
   the number of cores: 2), `proxy_http_version 1.1` with upstream keepalive, no access log.
   Skipped with a message when `nginx` is not installed;
3. static Envoy pair: the same two hops through two Envoys started by hand from a minimal
   static bootstrap (one listener, the router filter, one cluster; no TLS, no agent), 2
   workers each (Envoy's default here; `--envoy-concurrency` sets both Envoy pairs'):
   what Envoy itself costs, apart from the mesh;
4. Envoy pair: generator → caller's Envoy egress listener → callee's Envoy ingress (automatic
   mTLS, mesh policy STRICT; the callee authorizes the caller's SPIFFE id) → upstream. Built
   as `make demo`'s scene builds it (meshapi/demo): the control plane in this process on
   embedded defaults (API thread, in-process compile, xDS server thread; REDIS_URL is ignored)
   on a PostgreSQL database of its own (created and dropped here), a mesh `shop` applied
   through boto3 (virtual node `server` listening on 8080, virtual service
   `server.shop.local`, virtual node `client` whose backend it is) and two `meshagent run`
   processes in explicit mode, each starting its Envoy (the server's agent registers its
   Envoy ingress as the endpoint of server:8080). No access logs on
   either proxy. Skipped with a message without DATABASE_URL or an Envoy binary
   (`--mtls DISABLED` runs it without TLS).

Each proxy (nginx, the static Envoys) runs in a session of its own, as the agent starts its
Envoy: where the kernel groups scheduling by session (autogroup), every proxy then gets the
same share, and none shares the benchmark's. The upstream (asyncio, raw HTTP/1.1 keep-alive,
answers every request with 1 KiB) and the load generator are processes of their own. The
generator (asyncio, raw HTTP/1.1) keeps 16 keep-alive connections and sends POSTs with a
1 KiB body on a fixed schedule (request i at t0 + i/rate, round robin over the connections; a
connection sends its next request when it is due or, if late, as soon as the previous answer
is in): latency is measured from the scheduled send time, so a stall is not hidden by the
sends it delays (coordinated omission). Each phase starts with a short unrecorded warm-up on
fresh connections. The generator's own CPU share of a core is reported: near 100 % it would
be the bottleneck.

Rounds are interleaved (every round runs each path once, the order rotating), and the
reported numbers are medians over rounds: added latency per round = the path's percentile
minus the direct path's in the same round; CPU µs per request of the proxies (utime + stime
from /proc of both nginx masters and their workers, of both Envoys of a pair; the two
meshagents apart) over every request of the phase; VmRSS of each agent and each Envoy after
each Envoy phase. Every phase has a time limit, all children are stopped in `finally` and on SIGTERM
(and get SIGTERM if this process dies: prctl). Reports, never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.procs import Child

SCRIPT = str(Path(__file__).resolve())
ROOT = Path(SCRIPT).parent.parent
if __package__ in (None, ""):  # run as a script: import the project as a package
    sys.path[0] = str(ROOT)

PATHS = ("direct", "nginx", "envoy-static", "envoy")
SERVICE = "server.shop.local"  # the callee's virtual service (mesh `shop`: meshapi.demo.scene)
SERVICE_PORT = 8080  # the callee's listener port in the mesh (its Envoy ingress is elsewhere)
GOALS = {"p99_ratio": 1.5, "agent_rss_mb": 60.0}
PHASE_SLACK = 30.0  # s a phase may overrun its schedule before it is abandoned


# ================================================================== upstream process


class _Upstream(asyncio.Protocol):
    """HTTP/1.1 keep-alive: reads each request (Content-Length body), answers `BODY` bytes."""

    answer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            self.transport.write(self.answer)


async def run_upstream(body: int) -> None:
    _Upstream.answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        + f"Content-Length: {body}\r\n\r\n".encode()
        + b"x" * body
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", 0)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the orchestrator closes our stdin
    server.close()


# ================================================================== load generator process


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    from bench.procs import percentile

    ordered = sorted(values)
    return {f"p{q}": round(percentile(ordered, q) * 1000, 3) for q in (50, 90, 99)} | {
        "max": round(ordered[-1] * 1000, 3)
    }


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError("chunked answer")
    body = await reader.readexactly(length)
    return int(head[9:12]), len(body)


async def run_phase(cmd: dict[str, Any]) -> dict[str, Any]:
    """One paced phase against 127.0.0.1:port; latencies from the scheduled send times."""
    port, host, rate = cmd["port"], cmd["host"], float(cmd["rate"])
    connections, body = int(cmd["connections"]), int(cmd["body"])
    warmup, seconds = float(cmd["warmup"]), float(cmd["seconds"])
    request = (
        f"POST /bench HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {body}\r\n\r\n"
    ).encode() + b"b" * body
    total = int(rate * (warmup + seconds))
    latency: list[float] = []  # scheduled send → answer read (recorded part only)
    service: list[float] = []  # actual send → answer read
    lag: list[float] = []  # scheduled → actual send
    errors: Counter = Counter()
    answered = 0
    loop = asyncio.get_running_loop()
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    cpu0, wall0 = time.process_time(), time.monotonic()
    t0 = loop.time() + 0.02
    recorded_from = t0 + warmup

    async def one_connection(k: int) -> None:
        nonlocal answered
        reader, writer = streams[k]
        for i in range(k, total, connections):
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = loop.time()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                status, size = await _read_answer(reader)
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
            ) as e:
                errors[type(e).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = None
                continue
            done = loop.time()
            answered += 1
            if status != 200 or size != body:
                errors[f"HTTP {status}, {size} bytes"] += 1
            elif due >= recorded_from:
                latency.append(done - due)
                service.append(done - sent)
                lag.append(sent - due)
        if writer is not None:
            writer.close()

    tasks = [asyncio.create_task(one_connection(k)) for k in range(connections)]
    done, pending = await asyncio.wait(tasks, timeout=warmup + seconds + PHASE_SLACK)
    for task in pending:
        task.cancel()
        errors["phase time limit"] += 1
    wall = time.monotonic() - wall0
    return {
        "answered": answered,
        "recorded": len(latency),
        "errors": dict(errors),
        "latency": _percentiles(latency),
        "service": _percentiles(service),
        "lag": _percentiles(lag),
        "rate": round(len(latency) / seconds, 1),
        "cpu_share": round((time.process_time() - cpu0) / wall, 3),
        "cpu_us": round((time.process_time() - cpu0) / max(answered, 1) * 1e6, 1),
    }


async def run_load() -> None:
    """Phases on command: one JSON line in, one JSON line out; ends when stdin closes."""
    while line := await asyncio.to_thread(sys.stdin.readline):
        result = await run_phase(json.loads(line))
        print(json.dumps(result), flush=True)


# ================================================================== orchestrator: processes


def guarded(cmd: list[str]) -> list[str]:
    """`cmd` started through the demo's launcher: SIGTERM when this process dies."""
    from meshapi.demo.scene import PARENT_GUARD

    return [sys.executable, "-c", PARENT_GUARD, str(os.getpid()), *cmd]


def clean_env() -> dict[str, str]:
    drop = {"http_proxy", "https_proxy", "grpc_proxy", "all_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items() if k.lower() not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pick_port(taken: set[int]) -> int:
    """A free loopback port below the ephemeral range (the demo scene's choice)."""
    from meshapi.demo.scene import pick_port

    return pick_port(taken)


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


NGINX_CONF = """\
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    upstream next_hop {{
        server 127.0.0.1:{upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://next_hop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def nginx_command(binary: str, prefix: Path, listen: int, next_hop: int) -> list[str]:
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, upstream=next_hop, listen=listen))
    return [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
            "-g", "daemon off;"]  # fmt: skip


def static_envoy_command(
    binary: str, prefix: Path, listen: int, next_hop: int, concurrency: int = 0
) -> list[str]:
    """A minimal Envoy: one HTTP listener, the router filter, one static cluster; no TLS,
    no agent, no xDS (what Envoy itself costs, apart from the mesh's configuration).
    `concurrency` as the agent's --envoy-concurrency (0: Envoy's default)."""

    def address(port: int) -> dict:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network"
        ".http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {
            "virtual_hosts": [
                {"name": "all", "domains": ["*"],
                 "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "next_hop"}}]}
            ]
        },
        "http_filters": [
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": "type.googleapis.com/"
                              "envoy.extensions.filters.http.router.v3.Router"}}
        ],
    }  # fmt: skip
    bootstrap = {
        "admin": {"address": address(0)},
        "static_resources": {
            "listeners": [
                {"name": "bench", "address": address(listen),
                 "filter_chains": [{"filters": [
                     {"name": "envoy.filters.network.http_connection_manager",
                      "typed_config": hcm}]}]}
            ],
            "clusters": [
                {"name": "next_hop", "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": "next_hop", "endpoints": [
                     {"lb_endpoints": [{"endpoint": {"address": address(next_hop)}}]}]}}
            ],
        },
    }  # fmt: skip
    conf = prefix / "bootstrap.json"
    conf.write_text(json.dumps(bootstrap, indent=1))
    workers = ["--concurrency", str(concurrency)] if concurrency > 0 else []
    return [binary, "-c", str(conf), "--disable-hot-restart", "--log-level", "warning", *workers]


class ProxyPair:
    """Client-side proxy → server-side proxy → upstream, each proxy a process of ours
    started by `command(binary, prefix, listen, next_hop)`."""

    def __init__(
        self,
        name: str,
        binary: str,
        command: Callable[[str, Path, int, int], list[str]],
        root: Path,
        upstream: int,
        taken: set[int],
    ) -> None:
        self.procs: list[subprocess.Popen] = []
        self.root = root
        server_port, self.port = pick_port(taken), pick_port(taken)
        try:
            for side, listen, next_hop in (
                ("server-side", server_port, upstream),
                ("client-side", self.port, server_port),
            ):
                prefix = root / side
                prefix.mkdir(parents=True)
                with open(prefix / "output.log", "wb") as log:
                    self.procs.append(
                        subprocess.Popen(
                            guarded(command(binary, prefix, listen, next_hop)),
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            # A session of its own, as the agent starts Envoy (autogroup).
                            start_new_session=True,
                        )
                    )
            for proc, listen in zip(self.procs, (server_port, self.port), strict=True):
                _wait_listening(listen, 15, lambda p=proc: p.poll() is None, name, root)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> list[int]:
        from bench.procs import children

        return [pid for proc in self.procs for pid in (proc.pid, *children(proc.pid))]

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)


def _wait_listening(
    port: int, timeout: float, alive: Callable[[], bool], what: str, logs: Path
) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if not alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{what} is not listening on {port}; logs in {logs}") from None
            time.sleep(0.1)


# ================================================================== orchestrator: Envoy pair


@dataclass
class EnvoyPair:
    """Control plane in this process + meshagent/Envoy for `client` and `server`."""

    root: Path
    api: Any = None
    xds: Any = None
    agents: dict[str, Any] = field(default_factory=dict)
    port: int = 0  # the client's egress listener for SERVICE

    def envoy_pid(self, name: str) -> int:
        return int((self.agents[name].data_dir / "envoy.pid").read_text().strip())

    def pids(self) -> dict[str, list[int]]:
        return {
            "proxies": [self.envoy_pid(n) for n in self.agents],
            "agents": [a.proc.pid for a in self.agents.values()],
        }

    def stop(self) -> None:
        agents = [a for a in self.agents.values() if a.proc is not None]
        for agent in agents:  # SIGTERM all first: they drain in parallel
            if agent.proc.poll() is None:
                agent.proc.terminate()
        for agent in agents:
            agent.stop()
        if self.xds is not None:
            self.xds.stop()
        if self.api is not None:
            self.api.stop()


def start_envoy_pair(
    root: Path, envoy: str, upstream: int, taken: set[int], mtls: str = "STRICT"
) -> EnvoyPair:
    import boto3
    from botocore.config import Config

    from meshapi.demo import sample_mesh, scene
    from meshapi.demo.control_plane import ApiThread, XdsThread
    from meshapi.demo.sample_mesh import Resource
    from meshapi.models import Mesh
    from tenants.services import create_tenant
    from workers.pipeline import run_compile

    tenant, key = create_tenant("Bench Dataplane", "bench@example.com", slug="bench-dataplane")
    pair = EnvoyPair(root)
    ports = {
        "server": scene.Ports(upstream, *(pick_port(taken) for _ in range(4))),
        "client": scene.Ports(*(pick_port(taken) for _ in range(5))),
    }
    try:
        pair.api = ApiThread("127.0.0.1", pick_port(taken), root / "server.log")
        pair.api.start()
        names = {"meshName": scene.MESH}
        # The server's agent registers its Envoy ingress as the endpoint of this port.
        listener = {"portMapping": {"port": SERVICE_PORT, "protocol": "http"}}
        backend = {"virtualService": {"virtualServiceName": SERVICE}}
        provider = {"provider": {"virtualNode": {"virtualNodeName": "server"}}}
        client = boto3.client(
            "appmesh",
            endpoint_url=pair.api.url,
            region_name=tenant.default_region,
            aws_access_key_id=key.key.key_id,
            aws_secret_access_key=key.secret,
            config=Config(retries={"max_attempts": 2}),
        )
        sample_mesh.apply(
            client,
            [
                Resource("mesh", names, {"egressFilter": {"type": "DROP_ALL"}}),
                Resource("virtual_node", {**names, "virtualNodeName": "server"},
                         {"listeners": [listener]}),
                Resource("virtual_service", {**names, "virtualServiceName": SERVICE}, provider),
                Resource("virtual_node", {**names, "virtualNodeName": "client"},
                         {"backends": [backend]}),
            ],
        )  # fmt: skip
        native = scene.NativeApi(pair.api.url, key.key.key_id, key.secret)
        native.call("PUT", f"/meshes/{scene.MESH}/mtls", (200,), json={"mode": mtls})
        run_compile(Mesh.objects.get(tenant=tenant, name=scene.MESH).id, full=True)
        pair.xds = XdsThread()
        pair.xds.start()
        ca_file = root / "cp-ca.pem"
        ca_file.write_text(native.session.get(f"{native.base}/identity/ca", timeout=30).text)
        for name in ("server", "client"):
            token = native.call(
                "POST",
                f"/meshes/{scene.MESH}/join-tokens",
                (201,),
                json={"kind": "virtualNode", "name": name, "expiresInSeconds": 600},
            )["token"]
            token_file = root / f"{name}.join-token"
            token_file.write_text(token)
            agent = scene.Agent(name, ports[name], root, envoy)
            agent.start(pair.xds.ads, pair.xds.join, ca_file, token_file)
            pair.agents[name] = agent

        def check() -> None:
            for agent in pair.agents.values():
                agent.check_running()

        for agent in pair.agents.values():
            scene.wait_until(
                lambda a=agent: a.get("/ready")[0] == 200,
                90,
                f"{agent.name}'s meshagent + Envoy becoming ready (log {agent.log_path})",
                check,
            )

        def egress() -> int | None:
            code, body = pair.agents["client"].get("/ports")
            ports = json.loads(body) if code == 200 else {}
            found = [port for name, port in ports.items() if SERVICE in name]
            return found[0] if len(found) == 1 else None

        pair.port = scene.wait_until(egress, 60, f"client's egress listener for {SERVICE}", check)
        scene.wait_until(
            lambda: _answers(pair.port, SERVICE), 60, f"{SERVICE} answering through Envoy", check
        )
    except BaseException:
        pair.stop()
        raise
    return pair


def _answers(port: int, host: str) -> bool:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/", body=b"ping", headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


# ================================================================== orchestrator: measuring


def cpu_of(pids: list[int]) -> dict[int, float]:
    from bench.procs import cpu_seconds

    return {pid: cpu_seconds(pid) for pid in pids}


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items())


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Target:
    name: str
    port: int
    host: str
    proxies: dict[str, list[int]]  # group name → pids whose CPU is counted per request


def measure(args: argparse.Namespace, load: Child, upstream_pid: int, target: Target) -> dict:
    groups = {**target.proxies, "upstream": [upstream_pid]}
    before = {name: cpu_of(pids) for name, pids in groups.items()}
    command = {
        "port": target.port,
        "host": target.host,
        "rate": args.rate,
        "connections": args.connections,
        "body": args.body,
        "warmup": args.warmup,
        "seconds": args.seconds,
    }
    result = load.ask(command, args.warmup + args.seconds + PHASE_SLACK + 30)
    answered = max(result["answered"], 1)
    result["cpu_us"] = {
        name: round(spent(before[name], cpu_of(pids)) / answered * 1e6, 1)
        for name, pids in groups.items()
    }
    return result


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def report(args: argparse.Namespace, rounds: list[dict], rss: dict, info: dict) -> None:
    print()
    print(
        f"data plane: {len(rounds)} rounds × {args.seconds:g} s per path at {args.rate:g} "
        f"req/s, {args.connections} connections, {args.body}-byte bodies, Envoy pair mTLS "
        f"{args.mtls}, Envoy concurrency {args.envoy_concurrency or 'default'}; load average "
        f"{info['load_before']} before, {info['load_after']} after (max 1-min "
        f"{info['load_max']:.2f})"
    )
    paths = [p for p in PATHS if any(p in r for r in rounds)]
    if not rounds or "direct" not in paths:
        print("nothing measured")
        return
    for skipped, why in info["skipped"].items():
        print(f"  {skipped}: skipped ({why})")

    def med(path: str, *keys: str) -> float | None:
        values = []
        for r in rounds:
            value = r.get(path)
            for k in keys:
                value = value.get(k) if isinstance(value, dict) else None
            if value is not None:
                values.append(value)
        return median(values)

    def added(path: str, kind: str, q: str) -> float | None:
        values = [
            r[path][kind][q] - r["direct"][kind][q]
            for r in rounds
            if path in r and "direct" in r and r[path][kind] and r["direct"][kind]
        ]
        return median(values)

    print()
    header = "| path | p50 ms | p90 ms | p99 ms | added p50 | added p90 | added p99 |"
    print(header + " proxy CPU µs/req | agents CPU µs/req | req/s | errors | generator CPU |")
    print("|---" * 12 + "|")
    for path in paths:
        errors = sum(sum(r[path]["errors"].values()) for r in rounds if path in r)
        proxy = med(path, "cpu_us", "proxies")
        agents = med(path, "cpu_us", "agents")
        cells = [path] + [_fmt(med(path, "latency", q), ".3f") for q in ("p50", "p90", "p99")]
        cells += [
            "0" if path == "direct" else _fmt(added(path, "latency", q), ".3f")
            for q in ("p50", "p90", "p99")
        ]
        cells += [
            "–" if path == "direct" else _fmt(proxy, ".0f"),
            _fmt(agents, ".1f") if path == "envoy" else "–",
            _fmt(med(path, "rate"), ".0f"),
            str(errors),
            f"{_fmt(med(path, 'cpu_share') and 100 * med(path, 'cpu_share'), '.0f')} %",
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print("added latency from the actual send time (service time, no pacing lag), medians:")
    for path in paths:
        if path != "direct":
            parts = [f"{q} {_fmt(added(path, 'service', q), '.3f')} ms" for q in ("p50", "p99")]
            print(f"  {path}: " + ", ".join(parts))
    lag = [r["direct"]["lag"].get("p99") for r in rounds if r["direct"]["lag"]]
    print(
        f"generator pacing: send lag p99 on the direct path {_fmt(median(lag), '.3f')} ms; "
        f"upstream CPU {_fmt(med('direct', 'cpu_us', 'upstream'), '.0f')} µs/req"
    )
    if rss:
        print()
        for name, values in sorted(rss.items()):
            print(
                f"RSS {name}: median {_fmt(median(values), '.1f')} MB, "
                f"max {_fmt(max(values), '.1f')} MB"
            )
    print()
    envoy_p99, nginx_p99 = added("envoy", "latency", "p99"), added("nginx", "latency", "p99")
    if envoy_p99 is not None and nginx_p99 is not None and nginx_p99 <= 0:
        print(
            f"goal: not judged: the nginx pair's added p99 ({nginx_p99:.3f} ms) is within the "
            f"direct path's noise; Envoy-pair added p99 {envoy_p99:.3f} ms (more rounds?)"
        )
    elif envoy_p99 is not None and nginx_p99:
        ratio = envoy_p99 / nginx_p99
        verdict = "met" if ratio <= GOALS["p99_ratio"] else "NOT met"
        print(
            f"goal: Envoy-pair added p99 {envoy_p99:.3f} ms = {ratio:.2f}× the nginx pair's "
            f"{nginx_p99:.3f} ms (goal ≤ {GOALS['p99_ratio']}×): {verdict}"
        )
    for path, base in (("envoy", "nginx"), ("envoy-static", "nginx"), ("envoy", "envoy-static")):
        parts = []
        for q in ("p50", "p90", "p99"):
            a, b = added(path, "latency", q), added(base, "latency", q)
            if a is not None and b is not None:
                parts.append(f"added {q} {a:.3f} vs {b:.3f} ms")
        a, b = med(path, "cpu_us", "proxies"), med(base, "cpu_us", "proxies")
        if a is not None and b:
            parts.append(f"proxy CPU {a:.0f} vs {b:.0f} µs/req ({a / b:.2f}×)")
        if parts:
            print(f"{path} vs {base}: " + "; ".join(parts))
    agent_rss = [v for name, values in rss.items() if name.startswith("agent") for v in values]
    if agent_rss:
        top = max(agent_rss)
        verdict = "met" if top <= GOALS["agent_rss_mb"] else "NOT met"
        print(f"goal: agent RSS ≤ {GOALS['agent_rss_mb']:.0f} MB: max {top:.1f} MB: {verdict}")


def drop_database(connection: Any, original_name: str) -> None:
    """Drop the benchmark's database, with the connections the API and xDS threads left."""
    import psycopg

    from bench.procs import database_url

    test_name = connection.settings_dict["NAME"]
    connection.close()
    admin = database_url({**connection.settings_dict, "NAME": "postgres"})
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (test_name,),
            )
        connection.creation.destroy_test_db(original_name, verbosity=0)
    except Exception as exc:  # noqa: BLE001 - reported; the numbers are already printed
        print(f"could not drop database {test_name}: {exc}")


def rss_mb(pid: int) -> float:
    from bench.procs import rss_bytes

    return rss_bytes(pid) / 2**20


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, default=2.0, help="recorded s per path per round")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--body", type=int, default=1024, help="request and answer body bytes")
    parser.add_argument("--warmup", type=float, default=0.5, help="unrecorded s per phase")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument(
        "--mtls",
        choices=("STRICT", "PERMISSIVE", "DISABLED"),
        default="STRICT",
        help="the mesh's automatic mTLS for the Envoy pair (DISABLED: what TLS costs)",
    )
    parser.add_argument(
        "--envoy-concurrency",
        type=int,
        default=0,
        help="Envoy's worker threads in both Envoy pairs (meshagent --envoy-concurrency; "
        "default 0: Envoy's own default, one per core)",
    )
    args = parser.parse_args(argv)
    for flag in ("rounds", "seconds", "rate", "connections", "warmup"):
        limit = {"rounds": 100, "seconds": 10, "rate": 20000, "connections": 256, "warmup": 5}
        value = getattr(args, flag)
        if not (0 < value <= limit[flag]) and not (flag == "warmup" and value == 0):
            parser.error(f"--{flag} must be in (0, {limit[flag]}]: {value}")
    if not 0 <= args.envoy_concurrency <= 64:
        parser.error(f"--envoy-concurrency must be in [0, 64]: {args.envoy_concurrency}")
    if args.envoy_concurrency:  # the agents read it (meshagent --envoy-concurrency's default)
        os.environ["ENVOY_CONCURRENCY"] = str(args.envoy_concurrency)
    else:
        os.environ.pop("ENVOY_CONCURRENCY", None)
    if not 0 < args.body <= 1 << 20:
        parser.error(f"--body must be in (0, 1048576]: {args.body}")

    # Embedded mode, set before Django's settings are first read (find_envoy reads them):
    # this process compiles and serves xDS itself, with no Redis and no Celery worker.
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshapi.settings")
    from bench.procs import Child, database_url, loadavg

    def on_sigterm(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    root = Path(tempfile.mkdtemp(prefix="bench-dataplane-"))
    skipped: dict[str, str] = {}
    rounds: list[dict] = []
    rss: dict[str, list[float]] = {}
    load_max = 0.0
    info = {"load_before": loadavg(), "skipped": skipped}
    children: list[Any] = []
    pairs: list[Any] = []  # ProxyPairs and the EnvoyPair, stopped in finally
    envoy: EnvoyPair | None = None
    db = None
    env = clean_env()
    try:
        upstream = Child(
            "dataplane-upstream",
            guarded([sys.executable, SCRIPT, "--upstream", str(args.body)]),
            env,
        )
        children.append(upstream)
        upstream_port = json.loads(upstream.read(30))["port"]
        load = Child(
            "dataplane-load",
            guarded([sys.executable, SCRIPT, "--load"]),
            env,
        )
        children.append(load)
        taken = {upstream_port}
        targets = [Target("direct", upstream_port, "upstream", {})]

        if "nginx" in args.paths:
            binary = shutil.which("nginx") or next(
                (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)),
                None,
            )
            if binary is None:
                skipped["nginx"] = "no nginx binary: apt-get install -y nginx-light"
            else:
                pair = ProxyPair(
                    "nginx", binary, nginx_command, root / "nginx", upstream_port, taken
                )
                pairs.append(pair)
                targets.append(Target("nginx", pair.port, "upstream", {"proxies": pair.pids()}))
                print(f"nginx pair: {binary}, client side :{pair.port}", flush=True)

        from meshapi.demo.scene import find_envoy

        envoy_binary = find_envoy()
        if "envoy-static" in args.paths:
            if envoy_binary is None:
                skipped["envoy-static"] = "no Envoy binary: make envoy, or MESHPLANE_ENVOY_BIN"
            else:
                command = functools.partial(
                    static_envoy_command, concurrency=args.envoy_concurrency
                )
                pair = ProxyPair(
                    "envoy-static", envoy_binary, command, root / "envoy-static",
                    upstream_port, taken,
                )  # fmt: skip
                pairs.append(pair)
                proxies = {"proxies": pair.pids()}
                targets.append(Target("envoy-static", pair.port, "upstream", proxies))
                print(f"static Envoy pair: {envoy_binary}, client side :{pair.port}", flush=True)

        if "envoy" in args.paths:
            if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
                skipped["envoy"] = "DATABASE_URL must name a PostgreSQL server"
            elif envoy_binary is None:
                skipped["envoy"] = "no Envoy binary: make envoy, or MESHPLANE_ENVOY_BIN"
            else:
                import django

                django.setup()
                from django.db import connection

                db = (connection, connection.settings_dict["NAME"])
                test = connection.settings_dict.setdefault("TEST", {})
                test["NAME"] = f"bench_dataplane_{os.getpid()}"
                connection.creation.create_test_db(verbosity=0, autoclobber=True)
                print(f"Envoy pair: starting (database {database_url(connection.settings_dict)})")
                envoy = start_envoy_pair(
                    root / "envoy", envoy_binary, upstream_port, taken, args.mtls
                )
                pairs.append(envoy)
                targets.append(Target("envoy", envoy.port, SERVICE, envoy.pids()))
                print(
                    f"Envoy pair: {envoy_binary}, client's egress :{envoy.port}, mTLS {args.mtls}",
                    flush=True,
                )

        for path, why in skipped.items():
            print(f"{path} pair skipped: {why}")
        print(f"warm-up: 1 s per path (load average {loadavg()})", flush=True)
        warm = argparse.Namespace(**{**vars(args), "seconds": 1.0})
        for target in targets:
            result = measure(warm, load, upstream.proc.pid, target)
            if result["errors"]:
                print(f"  {target.name}: errors in the warm-up: {result['errors']}")
        for i in range(args.rounds):
            shift = i % len(targets)
            order = targets[shift:] + targets[:shift]
            row = {}
            for target in order:
                row[target.name] = measure(args, load, upstream.proc.pid, target)
                if target.name == "envoy":
                    for name, agent in envoy.agents.items():
                        rss.setdefault(f"agent {name}", []).append(rss_mb(agent.proc.pid))
                        rss.setdefault(f"Envoy {name}", []).append(rss_mb(envoy.envoy_pid(name)))
            rounds.append(row)
            load_max = max(load_max, float(loadavg().split()[0]))
            summary = ", ".join(
                f"{name} p50/p99 {r['latency'].get('p50')}/{r['latency'].get('p99')} ms"
                + (f" {r['cpu_us']['proxies']:.0f} µs" if "proxies" in r["cpu_us"] else "")
                for name, r in row.items()
            )
            print(f"round {i + 1}/{args.rounds}: {summary} (load average {loadavg()})", flush=True)
    finally:
        info["load_after"] = loadavg()
        info["load_max"] = load_max
        for pair in reversed(pairs):
            pair.stop()
        for child in children:
            child.stop()
        (root / "rounds.json").write_text(json.dumps({"rounds": rounds, "rss": rss}, indent=1))
        report(args, rounds, rss, info)
        if db is not None:
            drop_database(*db)
        print(f"logs: {root}/ and {tempfile.gettempdir()}/bench-dataplane-{os.getpid()}-*.log")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--upstream", "--load"):
        # Stateless: end at once (a clean exit would wait for the thread reading stdin).
        signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
        if sys.argv[1] == "--upstream":
            asyncio.run(run_upstream(int(sys.argv[2])))
        else:
            asyncio.run(run_load())
    else:
        main(sys.argv[1:])
