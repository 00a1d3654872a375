"""The ADS relay in one process: a fake control plane (FakeAds) above, a scripted Envoy on
the relay's Unix socket below. What is checked is what each side observes: the responses
'Envoy' gets, and the requests (subscriptions, ACKs, NACKs) the control plane gets."""

import asyncio

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from proxy_agent.cache import ConfigCache
from proxy_agent.relay import (
    CLUSTER,
    ENDPOINT,
    IDENTITY_SECRET,
    LISTENER,
    MESH_CA_SECRET,
    ROUTE,
    SECRET,
    LocalSecrets,
    Relay,
)
from tests.proxy_agent.fake_upstream import FakeAds, simple_config
from tests.proxy_agent.support import ScriptedEnvoy, eventually, free_port, workload

NODE = "mesh/shop/virtualNode/cart"
SPIFFE = "spiffe://123456789012.meshplane.local/" + NODE


@pytest.fixture
def upstream():
    ads = FakeAds()
    yield ads
    ads.stop()


class Harness:
    """A Relay serving a Unix socket, its upstream task, and the secrets it adds."""

    def __init__(self, tmp_path, target: str) -> None:
        self.socket = tmp_path / "ads.sock"
        self.cache = ConfigCache(tmp_path / "xds-cache.json", NODE)
        self.local = LocalSecrets()
        self.local.workload = workload(SPIFFE)
        self.relay = Relay(
            base_pb2.Node(id=NODE),
            self.cache,
            lambda: grpc.aio.insecure_channel(target),
            self.local,
        )

    async def __aenter__(self):
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((self.relay.handler(),))
        self.server.add_insecure_port(f"unix:{self.socket}")
        await self.server.start()
        self.task = asyncio.create_task(self.relay.run_upstream())
        return self

    async def __aexit__(self, *exc):
        self.relay.stop()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.server.stop(0)


def names_of(response) -> list[str]:
    from proxy_agent.relay import resource_name

    return [resource_name(response.type_url, r) for r in response.resources]


def test_envoy_verdicts_reach_the_control_plane_and_the_cache_keeps_the_accepted(
    tmp_path, upstream
):
    simple_config(upstream, "v1", free_port(), free_port())

    async def scenario():
        async with Harness(tmp_path, upstream.address) as h:
            envoy = ScriptedEnvoy(h.socket)
            envoy.send(CLUSTER)
            clusters = await envoy.receive()
            assert (clusters.version_info, names_of(clusters)) == ("v1", ["c"])
            envoy.send(CLUSTER, version="v1", nonce=clusters.nonce)
            # The ACK goes upstream as the answer to the control plane's own nonce.
            ack = await eventually(lambda: upstream.acks(CLUSTER), message="no CDS ACK")
            assert ack[-1].version_info == "v1"
            assert ack[-1].response_nonce in upstream.sent_nonces()

            envoy.send(LISTENER)
            listeners = await envoy.receive()
            envoy.send(LISTENER, version="v1", nonce=listeners.nonce)
            envoy.send(ROUTE, names=["r"])
            routes = await envoy.receive()
            assert (routes.type_url, names_of(routes)) == (ROUTE, ["r"])
            envoy.send(ROUTE, names=["r"], version="v1", nonce=routes.nonce)
            await eventually(lambda: upstream.acks(ROUTE), message="no RDS ACK")
            assert [list(r.resource_names) for r in upstream.of_type(ROUTE)][0] == ["r"]

            # A listener update that Envoy rejects: the NACK and its text go upstream
            # against the last good version; the cache keeps v1.
            upstream.set(LISTENER, "v2", {"in": listeners.resources[0]})
            pushed = await envoy.receive()
            assert (pushed.type_url, pushed.version_info) == (LISTENER, "v2")
            envoy.send(LISTENER, version="v1", nonce=pushed.nonce, error="bad listener")
            nack = await eventually(lambda: upstream.nacks(LISTENER), message="no NACK")
            assert nack[-1].error_detail.message == "bad listener"
            assert nack[-1].version_info == "v1"
            await eventually(lambda: h.relay.rejections, message="rejection not recorded")
            await envoy.close()

        cached = ConfigCache(tmp_path / "xds-cache.json", NODE).load()
        assert {t: c.version for t, c in cached.items()} == {
            CLUSTER: "v1",
            LISTENER: "v1",
            ROUTE: "v1",
        }
        assert sorted(cached[ROUTE].resources) == ["r"]

    asyncio.run(scenario())


def test_identity_is_served_locally_and_mesh_ca_falls_back_to_the_trust_bundle(tmp_path, upstream):
    async def scenario():
        async with Harness(tmp_path, upstream.address) as h:
            envoy = ScriptedEnvoy(h.socket)
            envoy.send(SECRET, names=[IDENTITY_SECRET, MESH_CA_SECRET])
            first = await envoy.receive()
            assert sorted(names_of(first)) == [IDENTITY_SECRET, MESH_CA_SECRET]
            identity = secret_pb2.Secret()
            [r for r in first.resources if IDENTITY_SECRET in r.value.decode("latin-1")][0].Unpack(
                identity
            )
            assert identity.tls_certificate.private_key.inline_bytes == h.local.workload.key_pem
            # Only the mesh CA is asked of the control plane; the key is never mentioned.
            asked = await eventually(lambda: upstream.of_type(SECRET), message="no SDS request")
            assert [list(r.resource_names) for r in asked] == [[MESH_CA_SECRET]]
            envoy.send(
                SECRET, names=[IDENTITY_SECRET, MESH_CA_SECRET], version=first.version_info,
                nonce=first.nonce,
            )  # fmt: skip

            # Renewal: the new certificate is pushed at once (hitless rotation).
            renewed = workload(SPIFFE)
            h.relay.on_identity(renewed)
            second = await envoy.receive()
            assert second.version_info != first.version_info
            rotated = secret_pb2.Secret()
            for resource in second.resources:
                secret = secret_pb2.Secret()
                resource.Unpack(secret)
                if secret.name == IDENTITY_SECRET:
                    rotated = secret
            assert rotated.tls_certificate.certificate_chain.inline_bytes == renewed.chain_pem

            # When the control plane serves the mesh CA, its copy wins.
            ca = secret_pb2.Secret(name=MESH_CA_SECRET)
            ca.validation_context.trusted_ca.inline_string = "from the control plane"
            from tests.proxy_agent.fake_upstream import pack

            upstream.set(SECRET, "s1", {MESH_CA_SECRET: pack(ca)})
            third = await envoy.receive()
            served = {}
            for resource in third.resources:
                secret = secret_pb2.Secret()
                resource.Unpack(secret)
                served[secret.name] = secret
            assert served[MESH_CA_SECRET].validation_context.trusted_ca.inline_string == (
                "from the control plane"
            )
            assert IDENTITY_SECRET in served
            envoy.send(
                SECRET, names=[IDENTITY_SECRET, MESH_CA_SECRET], version=third.version_info,
                nonce=third.nonce,
            )  # fmt: skip
            ack = await eventually(lambda: upstream.acks(SECRET), message="no SDS ACK")
            assert ack[-1].version_info == "s1"  # the control plane's part of the version
            await envoy.close()
        cached = ConfigCache(tmp_path / "xds-cache.json", NODE).load()
        assert list(cached[SECRET].resources) == [MESH_CA_SECRET]  # never the workload key
        assert h.local.workload.key_pem not in (tmp_path / "xds-cache.json").read_bytes()

    asyncio.run(scenario())


def test_with_the_control_plane_away_envoy_is_served_the_cache_and_resumes_without_repush(
    tmp_path, upstream
):
    simple_config(upstream, "v1", free_port(), free_port())

    async def first_run():
        async with Harness(tmp_path, upstream.address) as h:
            envoy = ScriptedEnvoy(h.socket)
            for type_url, names in ((CLUSTER, []), (ENDPOINT, ["c"]), (LISTENER, [])):
                envoy.send(type_url, names=names)
                response = await envoy.receive()
                envoy.send(type_url, names=names, version="v1", nonce=response.nonce)
            await eventually(lambda: len(h.relay.good) == 3, message="not all cached")
            await envoy.close()

    asyncio.run(first_run())
    address = upstream.address
    upstream.stop()

    async def while_away():
        # A restarted agent, and the control plane gone: Envoy still gets v1.
        async with Harness(tmp_path, address) as h:
            assert h.relay.served_from_cache
            envoy = ScriptedEnvoy(h.socket)
            envoy.send(CLUSTER)
            clusters = await envoy.receive()
            assert (clusters.version_info, names_of(clusters)) == ("v1", ["c"])
            envoy.send(CLUSTER, version="v1", nonce=clusters.nonce)
            # An Envoy that reconnects holding v1 is not sent it again: the next response
            # it sees is for the type it asks for next.
            await envoy.close()
            envoy = ScriptedEnvoy(h.socket)
            envoy.send(CLUSTER, version="v1")
            envoy.send(ENDPOINT, names=["c"])
            response = await envoy.receive()
            assert response.type_url == ENDPOINT
            await envoy.close()

    asyncio.run(while_away())

    back = FakeAds(port=int(address.rsplit(":", 1)[1]))
    try:
        simple_config(back, "v1", free_port(), free_port())

        async def resumed():
            async with Harness(tmp_path, back.address) as h:
                envoy = ScriptedEnvoy(h.socket)
                envoy.send(CLUSTER, version="v1")
                envoy.send(LISTENER, version="v1")
                first = await eventually(lambda: back.of_type(CLUSTER), message="no CDS")
                assert first[0].version_info == "v1"  # resumes from what Envoy holds
                assert first[0].node.id == NODE
                # Only a real change is pushed.
                back.set(LISTENER, "v2", back.state[LISTENER][1])
                pushed = await envoy.receive()
                assert (pushed.type_url, pushed.version_info) == (LISTENER, "v2")
                await envoy.close()

        asyncio.run(resumed())
    finally:
        back.stop()


def test_a_restarted_envoy_gets_the_last_good_version_not_the_one_it_rejected(tmp_path, upstream):
    simple_config(upstream, "v1", free_port(), free_port())

    async def scenario():
        async with Harness(tmp_path, upstream.address) as h:
            envoy = ScriptedEnvoy(h.socket)
            envoy.send(LISTENER)
            good = await envoy.receive()
            envoy.send(LISTENER, version="v1", nonce=good.nonce)
            await eventually(lambda: upstream.acks(LISTENER), message="no ACK")
            upstream.set(LISTENER, "v2", {"in": good.resources[0]})
            bad = await envoy.receive()
            envoy.send(LISTENER, version="v1", nonce=bad.nonce, error="rejected")
            await eventually(lambda: upstream.nacks(LISTENER), message="no NACK")
            await envoy.close()

            fresh = ScriptedEnvoy(h.socket)  # Envoy restarted: holds nothing
            fresh.send(LISTENER)
            served = await fresh.receive()
            assert served.version_info == "v1"
            await fresh.close()

    asyncio.run(scenario())


def test_subscription_changes_reach_the_control_plane(tmp_path, upstream):
    upstream.set(ENDPOINT, "e1", {})

    async def scenario():
        async with Harness(tmp_path, upstream.address) as h:
            envoy = ScriptedEnvoy(h.socket)
            envoy.send(CLUSTER)
            envoy.send(ENDPOINT, names=["a"])
            await eventually(
                lambda: [list(r.resource_names) for r in upstream.of_type(ENDPOINT)] == [["a"]],
                message="EDS subscription not forwarded",
            )
            envoy.send(ENDPOINT, names=["a", "b"])
            await eventually(
                lambda: (
                    [list(r.resource_names) for r in upstream.of_type(ENDPOINT)][-1] == ["a", "b"]
                ),
                message="EDS subscription change not forwarded",
            )
            await envoy.close()

    asyncio.run(scenario())


def test_a_new_name_in_the_same_version_still_reaches_envoy(tmp_path, upstream):
    """A subscription grows (a listener now needs route configuration r2): the control
    plane answers with the same version, now carrying r2; Envoy must get r2, and only then
    is the control plane told Envoy holds that version."""
    from tests.proxy_agent.fake_upstream import routes

    upstream.set(ROUTE, "v1", {"r1": routes("r1", "c"), "r2": routes("r2", "c")})

    async def scenario():
        async with Harness(tmp_path, upstream.address) as h:
            envoy = ScriptedEnvoy(h.socket)
            envoy.send(ROUTE, names=["r1"])
            first = await envoy.receive()
            assert names_of(first) == ["r1"]
            envoy.send(ROUTE, names=["r1", "r2"], version="v1", nonce=first.nonce)
            seen = []
            while "r2" not in seen:
                response = await envoy.receive()
                seen = names_of(response)
                envoy.send(ROUTE, names=["r1", "r2"], version="v1", nonce=response.nonce)
            assert seen == ["r1", "r2"]
            await eventually(
                lambda: any(list(r.resource_names) == ["r1", "r2"] for r in upstream.acks(ROUTE)),
                message="the control plane never heard Envoy holds r1 and r2",
            )
            await envoy.close()

    asyncio.run(scenario())
