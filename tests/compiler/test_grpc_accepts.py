"""grpcio's own xDS client accepts (ACKs) every grpc-consumer golden; none is NACKed.

Each grpc snapshot of every golden case is served by a minimal ADS server (ads_server.py).
A subprocess (gRPC reads its xDS bootstrap once per process) gets a bootstrap naming that
server, the proxy's node id and metadata, and a `file_watcher` certificate provider (over
throwaway files) for every instance the snapshot refers to, then opens an
`xds:///<listener>` channel with xDS credentials for every api_listener and asks it to
connect. The client then fetches listeners, route configurations, clusters and endpoints;
the test checks that it followed every reference (each api_listener, its route
configuration, each cluster its routes name and each EDS cluster's assignment), ACKed the
version of every type it was sent, and sent no error_detail. There is no backend: the RPCs
never need to succeed, only the configuration to be accepted.

Listeners and clusters are served whole (state of the world), and grpc validates every
resource of a response before looking at its subscriptions, so the xDS-server listeners
(`grpc/server?…`) are checked too; test_harness_sees_nacks proves both kinds of NACK reach
the test.
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from tests.compiler.ads_server import AdsServer, short
from tests.compiler.cases import case_names, compile_case, key
from tests.compiler.envoy_static import Files, throwaway_files
from workers.compiler import xds
from workers.compiler.snapshot import Snapshot

SETTLE_TIMEOUT = 20.0  # seconds for one client to fetch and answer everything
CLIENT_LIFETIME = SETTLE_TIMEOUT + 10  # the subprocess exits by itself after this

# The proxyless client: one xDS channel per target, each asked to connect, then idle while
# the test watches the ADS server. Stderr carries gRPC's own log of what it rejected.
CLIENT = """
import sys, time
import grpc, grpc.experimental
creds = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
channels = [grpc.secure_channel("xds:///" + target, creds) for target in sys.argv[2:]]
for channel in channels:
    channel.subscribe(lambda state: None, try_to_connect=True)
print("client up", len(channels), flush=True)
time.sleep(float(sys.argv[1]))
"""


def grpc_snapshots() -> list[tuple[str, Snapshot]]:
    return [
        (f"{case}: {key(s)}", s)
        for case in case_names()
        for s in compile_case(case)
        if s.proxy.consumer == "grpc"
    ]


def bootstrap(snapshot: Snapshot, address: str, files: Files) -> dict:
    providers = {
        name: {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": files.cert,
                "private_key_file": files.key,
                "ca_certificate_file": files.cert,
                "refresh_interval": "600s",
            },
        }
        for name in sorted(snapshot.metadata.get("certificate_providers", {}))
    }
    return {
        "xds_servers": [
            {
                "server_uri": address,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": snapshot.node_id,
            "cluster": snapshot.node_id,
            "metadata": {
                "consumer": snapshot.proxy.consumer,
                "interception": snapshot.proxy.interception,
            },
        },
        "certificate_providers": providers,
        "server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%s",
    }


def _hcm(listener) -> hcm_pb2.HttpConnectionManager | None:
    packed = listener.api_listener.api_listener
    if not packed.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
        return None
    hcm = hcm_pb2.HttpConnectionManager()
    packed.Unpack(hcm)
    return hcm


def expected_names(snapshot: Snapshot) -> dict[str, set[str]]:
    """What a client dialing every api_listener must ask for, per type URL."""
    listeners = {
        name
        for name, listener in snapshot.of(xds.LISTENER).items()
        if listener.HasField("api_listener")
    }
    routes, configs = set(), []
    for name in listeners:
        hcm = _hcm(snapshot.of(xds.LISTENER)[name])
        if hcm is None:
            continue
        if hcm.HasField("rds"):
            routes.add(hcm.rds.route_config_name)
            config = snapshot.of(xds.ROUTE).get(hcm.rds.route_config_name)
            if config is not None:
                configs.append(config)
        elif hcm.HasField("route_config"):
            configs.append(hcm.route_config)
    # gRPC ignores routes matching query parameters and never fetches a zero-weight cluster.
    clusters = set()
    for config in configs:
        for host in config.virtual_hosts:
            for route in host.routes:
                if route.HasField("route") and not route.match.query_parameters:
                    if route.route.cluster:
                        clusters.add(route.route.cluster)
                    clusters.update(
                        w.name for w in route.route.weighted_clusters.clusters if w.weight.value
                    )
    assignments = set()
    for name in clusters:
        cluster = snapshot.of(xds.CLUSTER).get(name)
        if cluster is not None and cluster.type == cluster_pb2.Cluster.EDS:
            assignments.add(cluster.eds_cluster_config.service_name or name)
    expected = {xds.LISTENER: listeners, xds.ROUTE: routes, xds.CLUSTER: clusters}
    expected[xds.ENDPOINT] = assignments
    return {t: names for t, names in expected.items() if names}


@dataclass
class Outcome:
    label: str
    settled: bool
    problems: list[str] = field(default_factory=list)
    nacks: list[str] = field(default_factory=list)
    acked: dict[str, str] = field(default_factory=dict)  # type → version ACKed
    transcript: str = ""
    client_output: str = ""
    seconds: float = 0.0

    def report(self) -> str:
        return (
            f"{self.label}: " + "; ".join(self.problems + self.nacks) + "\n"
            f"ADS transcript:\n{self.transcript}\n"
            f"client output (tail):\n{self.client_output[-3000:]}"
        )


def run_client(label: str, snapshot: Snapshot, files: Files) -> Outcome:
    """Serve `snapshot`, run a grpc xDS client subprocess against it, report what it did."""
    started = time.monotonic()
    expected = expected_names(snapshot)
    outcome = Outcome(label, settled=False)
    if xds.LISTENER not in expected:
        outcome.problems.append("the snapshot has no api_listener for a client to dial")
        return outcome
    with AdsServer(snapshot) as server:
        # No proxy between the client and the loopback ADS server; the bootstrap is inline.
        drop = {"grpc_proxy", "http_proxy", "https_proxy", "grpc_xds_bootstrap"}
        env = {k: v for k, v in os.environ.items() if k.lower() not in drop}
        env["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(bootstrap(snapshot, server.address, files))
        env.setdefault("GRPC_VERBOSITY", "ERROR")
        targets = sorted(expected[xds.LISTENER])
        proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(CLIENT_LIFETIME), *targets],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + SETTLE_TIMEOUT
            while time.monotonic() < deadline:
                if server.wait_settled(expected, timeout=0.5):
                    outcome.settled = True
                    break
                if proc.poll() is not None:
                    outcome.problems.append(f"the client exited early (status {proc.returncode})")
                    break
        finally:
            proc.terminate()
            try:
                outcome.client_output, _ = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                outcome.client_output, _ = proc.communicate()
        outcome.transcript = server.transcript()
        if not outcome.settled and not outcome.problems:
            outcome.problems.append(f"the client did not settle within {SETTLE_TIMEOUT:.0f} s")
        outcome.nacks = [
            f"NACK of {short(r.type_url)} version {r.version_info!r} nonce "
            f"{r.response_nonce!r}: {r.error_message}"
            for r in server.nacks()
        ]
        if server.node_ids() - {snapshot.node_id}:
            outcome.problems.append(f"unexpected node ids {sorted(server.node_ids())}")
        for type_url, names in expected.items():
            missing = names - server.requested_names(type_url)
            if missing:
                outcome.problems.append(
                    f"the client never asked for {short(type_url)} {sorted(missing)}"
                )
        for sent in server.latest_sent():
            if server.acked(sent):
                outcome.acked[sent.type_url] = sent.version_info
            elif not any(r.response_nonce == sent.nonce for r in server.nacks()):
                outcome.problems.append(
                    f"stream {sent.stream}: {short(sent.type_url)} version {sent.version_info} "
                    f"(nonce {sent.nonce}) was not ACKed"
                )
    outcome.seconds = time.monotonic() - started
    return outcome


def run_all(jobs: list[tuple[str, Snapshot]], files: Files) -> list[Outcome]:
    with ThreadPoolExecutor(max_workers=max(2, min(8, len(jobs)))) as pool:
        return list(pool.map(lambda job: run_client(*job, files), jobs))


def test_grpcio_can_do_xds():
    """Fail loudly, never skip, when this grpcio has no xDS client."""
    assert hasattr(grpc, "xds_channel_credentials"), f"grpcio {grpc.__version__} has no xDS"


def test_grpc_accepts_every_grpc_golden(tmp_path):
    files = throwaway_files(str(tmp_path))
    jobs = grpc_snapshots()
    assert len(jobs) >= 2, "expected the grpc_consumer case and a combined case's grpc proxy"
    outcomes = run_all(jobs, files)
    failed = [o.report() for o in outcomes if o.problems or o.nacks]
    assert not failed, "grpc did not accept:\n\n" + "\n\n".join(failed)
    for outcome in outcomes:
        # Every type a client of these goldens needs was fetched and ACKed.
        assert {xds.LISTENER, xds.ROUTE, xds.CLUSTER} <= set(outcome.acked), outcome.label
        print(
            f"{outcome.label}: ACKed "
            + ", ".join(f"{short(t)} {v}" for t, v in sorted(outcome.acked.items()))
            + f" in {outcome.seconds:.1f} s"
        )


def _broken(snapshot: Snapshot) -> Snapshot:
    """The snapshot with a cluster type gRPC does not support (STRICT_DNS) and an xDS-server
    listener naming a certificate provider instance the bootstrap lacks."""
    resources = {t: dict(snapshot.of(t)) for t in snapshot.resources}
    clusters = resources[xds.CLUSTER]
    name = sorted(clusters)[0]
    cluster = type(clusters[name]).FromString(clusters[name].SerializeToString())
    cluster.type = cluster_pb2.Cluster.STRICT_DNS
    cluster.ClearField("eds_cluster_config")
    cluster.load_assignment.cluster_name = name
    clusters[name] = cluster
    listeners = resources[xds.LISTENER]
    server_name = sorted(n for n in listeners if n.startswith("grpc/server?"))[0]
    listener = type(listeners[server_name]).FromString(listeners[server_name].SerializeToString())
    chain = listener.filter_chains[0]
    context = tls_pb2.DownstreamTlsContext()
    context.common_tls_context.tls_certificate_provider_instance.instance_name = "no-such-provider"
    chain.transport_socket.name = "envoy.transport_sockets.tls"
    chain.transport_socket.typed_config.CopyFrom(xds.pack(context))
    listeners[server_name] = listener
    return Snapshot.build(
        snapshot.node_id, snapshot.proxy, resources, metadata=dict(snapshot.metadata)
    )


def test_harness_sees_nacks(tmp_path):
    """A config gRPC rejects is reported as NACKs, including a listener no client dials."""
    files = throwaway_files(str(tmp_path))
    label, snapshot = next((lbl, s) for lbl, s in grpc_snapshots() if lbl.startswith("grpc_"))
    (outcome,) = run_all([(f"broken {label}", _broken(snapshot))], files)
    nacked = "\n".join(outcome.nacks)
    assert "NACK of Cluster" in nacked, outcome.report()
    assert "NACK of Listener" in nacked and "grpc/server?" in nacked, outcome.report()
    assert "no-such-provider" in nacked, outcome.report()
