"""`serve_xds --processes 2`: two replica processes behind one port (SO_REUSEPORT). Proxies
on connections of their own land on both (each process a replica of its own name in the
status), every one gets every push, a process that is killed is restarted and its proxies
reconnect and are served again, and SIGTERM stops them all cleanly."""

import os
import queue
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.xds.conftest import needs_redis
from tests.xds.meshes import MESH, build_greeter_mesh, greeter_spec
from tests.xds.support import XdsProcess, add_static_endpoint, proxy_detail, wait_compiled, wait_for
from workers.compiler import xds

ARN = "arn:aws:appmesh:us-east-1:111111111111:mesh/shop/virtualNode/client"
NODE = f"mesh/{MESH}/virtualNode/client"
DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
PROXIES = 16  # all on one of two processes by chance: 1 in 2**15


class DeltaProxy:
    """A delta-xDS client on a thread and a channel (a connection) of its own, wildcard on
    every type, ACKing everything; when its stream breaks it reconnects on a new
    connection, as Envoy does. Records the route versions it was sent."""

    def __init__(self, ads: str, instance_id: str) -> None:
        from envoy.service.discovery.v3 import discovery_pb2
        from google.protobuf import struct_pb2

        self._pb = discovery_pb2
        self.ads = ads
        self.instance_id = instance_id
        self.metadata = struct_pb2.Struct()
        self.metadata.update({"APPMESH_RESOURCE_ARN": ARN, "instance_id": instance_id})
        self.routes: list[str] = []
        self.streams = 0  # streams opened (reconnects + 1)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._call = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _requests(self, requests_: queue.Queue):
        while (item := requests_.get()) is not None:
            yield item

    def _run(self) -> None:
        pb = self._pb
        while not self._closed.is_set():
            options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0)]
            channel = grpc.insecure_channel(self.ads, options=options)
            requests_: queue.Queue = queue.Queue()
            for i, type_url in enumerate((xds.CLUSTER, xds.ENDPOINT, xds.LISTENER, xds.ROUTE)):
                request = pb.DeltaDiscoveryRequest(
                    type_url=type_url, resource_names_subscribe=["*"]
                )
                if i == 0:
                    request.node.id = NODE
                    request.node.metadata.CopyFrom(self.metadata)
                requests_.put(request)
            method = channel.stream_stream(
                DELTA,
                request_serializer=pb.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=pb.DeltaDiscoveryResponse.FromString,
            )
            try:
                self._call = method(self._requests(requests_))
                with self._lock:
                    self.streams += 1
                for response in self._call:
                    if response.type_url == xds.ROUTE:
                        with self._lock:
                            self.routes.append(response.system_version_info)
                    requests_.put(
                        pb.DeltaDiscoveryRequest(
                            type_url=response.type_url, response_nonce=response.nonce
                        )
                    )
            except grpc.RpcError as exc:
                with self._lock:
                    self.errors.append(exc.code().name)
            finally:
                requests_.put(None)
                channel.close()
            self._closed.wait(0.2)

    def has(self, version: str) -> bool:
        with self._lock:
            return version in self.routes

    def close(self) -> None:
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
        self._thread.join(5)


def routes_version(alice) -> str:
    body = requests.get(
        f"{alice.base_url}/api/v1/meshes/{MESH}/proxies/virtualNode/client/config",
        params={"consumer": "envoy", "mode": "redirect"},
        headers=alice.bearer,
        timeout=30,
    ).json()
    return body["typeVersions"]["routes"]


def instances(alice) -> dict[str, dict]:
    return {
        i["instanceId"]: i for i in proxy_detail(alice, MESH, "virtualNode", "client")["instances"]
    }


def child_pids(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@needs_redis
def test_two_processes_share_the_port_survive_a_killed_one_and_stop_together(
    alice, worker, own_redis, api_server
):
    client = alice.appmesh()
    build_greeter_mesh(client, 50001, 50002)
    add_static_endpoint(alice, MESH, "greeter-v1", 50001)
    add_static_endpoint(alice, MESH, "greeter-v2", 50002)
    wait_compiled(alice.tenant, MESH)

    # A long poll: only pub/sub and the re-read on (re)start can bring updates in time.
    server = XdsProcess(
        insecure=True, replica="multi", redis_url=own_redis.url, poll=600, processes=2
    )
    proxies = [DeltaProxy(server.ads, f"client-{i}") for i in range(PROXIES)]
    try:
        assert len(server.pids) == 2 and child_pids(server.proc.pid) == set(server.pids)

        def everyone_has(version: str) -> bool:
            return all(p.has(version) for p in proxies)

        def why() -> str:
            return f"{[p.routes[-2:] for p in proxies]}\n{server.log()}"

        def update(weights: tuple[int, int]) -> str:
            client.update_route(
                meshName=MESH,
                virtualRouterName="greeter",
                routeName="split",
                spec=greeter_spec(weights),
            )
            wait_compiled(alice.tenant, MESH)
            return routes_version(alice)

        wait_for(lambda: everyone_has(routes_version(alice)), message=why)
        # Each process is a replica of its own: the proxies' connections are spread over both.
        wait_for(lambda: all(i["connected"] for i in instances(alice).values()))
        status = instances(alice)
        assert len(status) == PROXIES
        assert {i["replica"] for i in status.values()} == {"multi-1", "multi-2"}
        on_second = {name for name, i in status.items() if i["replica"] == "multi-2"}

        version = update((50, 50))
        wait_for(lambda: everyone_has(version), timeout=15, message=why)

        # SIGKILL one process: the parent restarts it; its proxies reconnect (to either
        # process) and are served again.
        killed = server.pids[1]
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: "restarted multi-2" in server.log(), timeout=60, message=server.log)
        now = child_pids(server.proc.pid)
        assert len(now) == 2 and killed not in now and server.pids[0] in now
        moved = [p for p in proxies if p.instance_id in on_second]
        wait_for(lambda: all(p.streams >= 2 for p in moved), message=why)
        assert all(p.streams == 1 for p in proxies if p not in moved)

        def all_connected_afresh() -> bool:
            status = instances(alice)
            return all(status[p.instance_id]["connected"] for p in proxies) and all(
                len(status[name]["connections"]) >= 2 for name in on_second
            )

        wait_for(all_connected_afresh, message=lambda: f"{instances(alice)}")
        version = update((10, 90))
        wait_for(lambda: everyone_has(version), timeout=15, message=why)

        # The restarted process serves: new proxies land on both processes again.
        proxies += [DeltaProxy(server.ads, f"late-{i}") for i in range(PROXIES)]
        wait_for(lambda: everyone_has(version), message=why)

        def late_replicas() -> set[str]:
            status = instances(alice)
            return {i["replica"] for n, i in status.items() if n.startswith("late-")}

        wait_for(lambda: late_replicas() == {"multi-1", "multi-2"}, message=late_replicas)

        # SIGTERM to the parent stops every process cleanly: streams closed, nothing left.
        replicas = child_pids(server.proc.pid)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0, server.log()
        assert not any(alive(pid) for pid in replicas)
        assert "Traceback" not in server.log()
        wait_for(lambda: not any(i["connected"] for i in instances(alice).values()))
    finally:
        for proxy in proxies:
            proxy.close()
        server.stop()


def test_bad_process_counts_are_refused_naming_the_flag(monkeypatch):
    for value in ("0", "-2"):
        with pytest.raises(CommandError, match="--processes"):
            call_command("serve_xds", "--insecure", "--processes", value)
    monkeypatch.setenv("MESHPLANE_XDS_PROCESSES", "many")
    with pytest.raises(CommandError, match="MESHPLANE_XDS_PROCESSES"):
        call_command("serve_xds", "--insecure")


@needs_redis
def test_a_process_that_keeps_dying_makes_the_parent_give_up(transactional_db, own_redis):
    server = XdsProcess(insecure=True, replica="doomed", redis_url=own_redis.url, processes=2)
    try:
        survivor, victim = server.pids
        killed = set()
        deadline = time.monotonic() + 120
        while server.proc.poll() is None and time.monotonic() < deadline:
            for pid in child_pids(server.proc.pid) - {survivor} - killed:
                os.kill(pid, signal.SIGKILL)  # dies at once, whether ready or not
                killed.add(pid)
            time.sleep(0.05)
        assert server.proc.wait(30) == 1, server.log()
        assert victim in killed and len(killed) == 6, server.log()
        assert "doomed-2 died 6 times in a row" in server.log()
        assert not alive(survivor)  # the others are stopped too
    finally:
        server.stop()
