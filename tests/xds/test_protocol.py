"""The ADS protocol state of one stream (workers/xds/sotw.py, delta.py), fed requests and
cache entries as a client and the cache would, and checked on the decoded responses."""

import hashlib

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from workers.compiler import xds
from workers.xds.cache import Bucket, Entry, Key, Resource
from workers.xds.delta import DeltaStream
from workers.xds.sotw import SotwStream

KEY = Key("111111111111", "mesh/shop/virtualNode/front", "envoy", "redirect")
CDS, EDS, LDS, RDS = xds.CLUSTER, xds.ENDPOINT, xds.LISTENER, xds.ROUTE


class Reporter:
    def __init__(self):
        self.acks: list[tuple[str, str]] = []
        self.nacks: list[tuple[str, str, str]] = []

    def acked(self, type_url, version):
        self.acks.append((type_url, version))

    def nacked(self, type_url, version, message):
        self.nacks.append((type_url, version, message))


def _resource(type_url, message) -> Resource:
    body = message.SerializeToString(deterministic=True)
    return Resource(type_url, message.name if type_url != EDS else message.cluster_name,
                    hashlib.sha256(body).hexdigest(), body)  # fmt: skip


def entry(seq: int, clusters: list[str], route_to: str, weight_note: str = "") -> Entry:
    """A proxy config: EDS clusters, their assignments, one listener, one route config."""
    resources = {
        CDS: {c: _resource(CDS, cluster_pb2.Cluster(name=c, type=cluster_pb2.Cluster.EDS))
              for c in clusters},
        EDS: {c: _resource(EDS, endpoint_pb2.ClusterLoadAssignment(cluster_name=c))
              for c in clusters},
        LDS: {"egress": _resource(LDS, listener_pb2.Listener(name="egress"))},
        RDS: {"routes": _resource(RDS, route_pb2.RouteConfiguration(
            name="routes", virtual_hosts=[rc.VirtualHost(
                name="all" + weight_note, domains=["*"], routes=[rc.Route(
                    route=rc.RouteAction(cluster=route_to))])]))},
    }  # fmt: skip
    versions = {
        t: hashlib.sha256("".join(sorted(r.digest for r in b.values())).encode()).hexdigest()[:16]
        for t, b in resources.items()
    }
    return Entry(KEY, f"v{seq}", seq, versions, resources)


def sotw_request(type_url, names=(), version="", nonce="", error=None):
    request = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), version_info=version, response_nonce=nonce
    )
    if error:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def decode(raw: list[bytes]) -> list[discovery_pb2.DiscoveryResponse]:
    return [discovery_pb2.DiscoveryResponse.FromString(b) for b in raw]


def names_of(response) -> list[str]:
    out = []
    for packed in response.resources:
        for cls in (cluster_pb2.Cluster, listener_pb2.Listener, route_pb2.RouteConfiguration):
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                out.append(message.name)
        if packed.Is(endpoint_pb2.ClusterLoadAssignment.DESCRIPTOR):
            message = endpoint_pb2.ClusterLoadAssignment()
            packed.Unpack(message)
            out.append(message.cluster_name)
    return out


def ack(stream, response, names=()):
    return decode(
        stream.on_request(
            sotw_request(response.type_url, names, response.version_info, response.nonce)
        )
    )


def subscribed_sotw(first: Entry):
    """A SotW stream that fetched and ACKed everything of `first`."""
    reporter = Reporter()
    stream = SotwStream(reporter)
    stream.on_entry(first)
    sent = {}
    for type_url, names in ((CDS, ()), (EDS, ("a", "b")), (LDS, ()), (RDS, ("routes",))):
        (response,) = decode(stream.on_request(sotw_request(type_url, names)))
        sent[type_url] = response
        assert ack(stream, response, names) == []
    return stream, reporter, sent


def test_sotw_serves_wildcards_whole_and_named_types_by_name_leaving_unknown_names_out():
    stream = SotwStream(Reporter())
    stream.on_entry(entry(1, ["a", "b"], "a"))
    (cds,) = decode(stream.on_request(sotw_request(CDS)))
    assert names_of(cds) == ["a", "b"] and cds.type_url == CDS
    (eds,) = decode(stream.on_request(sotw_request(EDS, ["b", "nope"])))
    assert names_of(eds) == ["b"]
    assert eds.version_info and eds.nonce != cds.nonce


def test_sotw_ack_reported_stale_nonce_ignored_nack_recorded_and_not_resent():
    first = entry(1, ["a", "b"], "a")
    stream, reporter, sent = subscribed_sotw(first)
    assert (RDS, sent[RDS].version_info) in reporter.acks

    second = entry(2, ["a", "b"], "b")
    (rds,) = decode(stream.on_entry(second))  # only routes changed
    assert rds.type_url == RDS and rds.version_info == second.type_versions[RDS]
    # An answer to the superseded response: ignored (not a NACK, no resend).
    stale = sotw_request(RDS, ["routes"], sent[RDS].version_info, sent[RDS].nonce, error="old")
    assert stream.on_request(stale) == [] and reporter.nacks == []

    nack = sotw_request(RDS, ["routes"], sent[RDS].version_info, rds.nonce, error="bad route x")
    assert stream.on_request(nack) == []
    assert reporter.nacks == [(RDS, second.type_versions[RDS], "bad route x")]
    # The same version arriving again (e.g. a poll) is not re-sent.
    stream.on_entry(Entry(KEY, "v2-again", 3, second.type_versions, second.resources))
    assert stream.on_request(sotw_request(RDS, ["routes"], sent[RDS].version_info)) == []
    # A new version is.
    (again,) = decode(stream.on_entry(entry(4, ["a", "b"], "b", weight_note="!")))
    assert again.type_url == RDS


def test_sotw_empty_endpoint_list_unsubscribes_and_empty_cluster_list_is_wildcard():
    stream, _, sent = subscribed_sotw(entry(1, ["a", "b"], "a"))
    assert stream.on_request(sotw_request(EDS, [], sent[EDS].version_info, sent[EDS].nonce)) == []
    # A cluster change now sends clusters (all of them) but no endpoints.
    responses = decode(stream.on_entry(entry(2, ["a", "b", "c"], "a")))
    assert [(r.type_url, names_of(r)) for r in responses] == [(CDS, ["a", "b", "c"])]


def test_sotw_push_order_and_make_before_break():
    stream, _, sent = subscribed_sotw(entry(1, ["a", "b"], "b"))
    # The route moves from b to c and b is dropped: c is added first, b kept...
    responses = decode(stream.on_entry(entry(2, ["a", "c"], "c")))
    assert [r.type_url for r in responses] == [CDS, EDS, RDS]
    assert names_of(responses[0]) == ["a", "b", "c"]
    cds, eds, rds = responses
    assert names_of(eds) == ["a", "b"]  # b's endpoints stay while b does
    assert ack(stream, cds) == []
    assert ack(stream, eds, ["a", "b", "c"])[0].type_url == EDS  # c's endpoints, asked for
    # ...until the routes not using b are ACKed; then b goes.
    final_cds, final_eds = ack(stream, rds, ["routes"])
    assert final_cds.type_url == CDS and names_of(final_cds) == ["a", "c"]
    assert final_eds.type_url == EDS and names_of(final_eds) == ["a", "c"]


def test_sotw_make_before_break_keeps_clusters_while_routes_are_nacked():
    stream, _, _ = subscribed_sotw(entry(1, ["a", "b"], "b"))
    cds, eds, rds = decode(stream.on_entry(entry(2, ["a", "c"], "c")))
    ack(stream, cds)
    nack = sotw_request(RDS, ["routes"], "", rds.nonce, error="no")
    assert stream.on_request(nack) == []  # b stays: the proxy still routes to it


def test_sotw_reconnect_holding_the_current_version_is_not_resent():
    current = entry(1, ["a"], "a")
    reporter = Reporter()
    stream = SotwStream(reporter)
    stream.on_entry(current)
    for type_url, names in ((CDS, ()), (EDS, ("a",)), (LDS, ()), (RDS, ("routes",))):
        held = sotw_request(type_url, names, version=current.type_versions[type_url])
        assert stream.on_request(held) == []
    assert {t for t, _ in reporter.acks} == {CDS, EDS, LDS, RDS}
    (rds,) = decode(stream.on_entry(entry(2, ["a"], "a", weight_note="!")))
    assert rds.type_url == RDS


# ------------------------------------------------------------------ delta


def delta_request(type_url, subscribe=(), unsubscribe=(), nonce="", initial=None, error=None):
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    if error:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def ddecode(raw: list[bytes]) -> list[discovery_pb2.DeltaDiscoveryResponse]:
    return [discovery_pb2.DeltaDiscoveryResponse.FromString(b) for b in raw]


def test_delta_sends_only_differences_and_lists_absent_names_as_removed():
    first = entry(1, ["a", "b"], "a")
    stream = DeltaStream(Reporter())
    stream.on_entry(first)
    held = {"a": first.of(CDS)["a"].digest, "gone": "x"}
    (cds,) = ddecode(stream.on_request(delta_request(CDS, initial=held)))
    assert [r.name for r in cds.resources] == ["b"]
    assert list(cds.removed_resources) == ["gone"]
    assert cds.resources[0].version == first.of(CDS)["b"].digest
    (eds,) = ddecode(stream.on_request(delta_request(EDS, ["a", "nope"])))
    assert [r.name for r in eds.resources] == ["a"] and list(eds.removed_resources) == ["nope"]
    # Nothing new to say: nothing sent.
    assert stream.on_request(delta_request(EDS, nonce=eds.nonce)) == []
    # Subscribing again is answered again (the client waits for an answer).
    (again,) = ddecode(stream.on_request(delta_request(EDS, ["nope"])))
    assert list(again.removed_resources) == ["nope"] and not again.resources


def test_delta_nack_is_reported_not_resent_and_make_before_break_removes_later():
    reporter = Reporter()
    stream = DeltaStream(reporter)
    stream.on_entry(entry(1, ["a", "b"], "b"))
    nonces = {}
    for type_url, names in ((CDS, ()), (EDS, ("a", "b")), (LDS, ()), (RDS, ("routes",))):
        (response,) = ddecode(stream.on_request(delta_request(type_url, names)))
        nonces[type_url] = response.nonce
        assert stream.on_request(delta_request(type_url, nonce=response.nonce)) == []
    assert {t for t, _ in reporter.acks} == {CDS, EDS, LDS, RDS}

    cds, rds = ddecode(stream.on_entry(entry(2, ["a", "c"], "c")))
    assert [r.name for r in cds.resources] == ["c"] and not cds.removed_resources
    assert stream.on_request(delta_request(CDS, nonce=cds.nonce)) == []
    nack = delta_request(RDS, nonce=rds.nonce, error="route rejected")
    assert stream.on_request(nack) == []  # not re-sent; b stays while routes may use it
    assert reporter.nacks == [(RDS, rds.system_version_info, "route rejected")]

    (rds2,) = ddecode(stream.on_entry(entry(3, ["a", "c"], "c", weight_note="!")))
    assert rds2.type_url == RDS
    final_cds, final_eds = ddecode(stream.on_request(delta_request(RDS, nonce=rds2.nonce)))
    assert final_cds.type_url == CDS and list(final_cds.removed_resources) == ["b"]
    assert final_eds.type_url == EDS and list(final_eds.removed_resources) == ["b"]


def shared(entry_: Entry, route_name: str = "routes") -> Entry:
    """The entry as the cache builds it: each type's resources one shared Bucket (the
    route configuration named `route_name`)."""
    buckets = {}
    versions = dict(entry_.type_versions)
    for type_url in (CDS, EDS, LDS, RDS):
        bucket = Bucket()
        bucket.update(entry_.of(type_url))
        buckets[type_url] = bucket
    if route_name != "routes":
        config = route_pb2.RouteConfiguration(name=route_name)
        buckets[RDS] = Bucket({route_name: _resource(RDS, config)})
        versions[RDS] = f"{versions[RDS]}-{route_name}"
    return Entry(KEY, entry_.version, entry_.seq, versions, buckets)


def test_delta_streams_holding_the_same_bucket_get_the_same_bytes_as_one_compared_alone():
    """A wildcard stream that holds exactly the previous bucket is sent a response shared
    with every such stream (delta._step); it must be byte for byte what comparing its own
    resources gives, through additions, removals (make-before-break), a NACK and a
    subscription change."""
    changes = [
        shared(entry(1, ["a", "b"], "a")),
        shared(entry(2, ["a", "b", "c"], "c")),
        shared(entry(3, ["a", "c"], "c", weight_note="1")),
        shared(entry(4, ["c", "d"], "d", weight_note="2")),
        shared(entry(5, ["c", "d"], "d", weight_note="3"), route_name="renamed"),
        shared(entry(6, ["a"], "a")),
    ]
    alike, alone = DeltaStream(Reporter()), DeltaStream(Reporter())

    def both(call) -> list[bytes]:
        one, other = call(alike), call(alone)
        for state in alone.types.values():
            state.synced = None  # never holds a known bucket: compared resource by resource
        assert one == other
        return one

    both(lambda s: s.on_entry(changes[0]))
    for type_url in (CDS, EDS, LDS, RDS):
        names = ("*",) if type_url in (EDS, RDS) else ()
        opened = both(lambda s, t=type_url, n=names: s.on_request(delta_request(t, n)))
        for response in ddecode(opened):
            both(lambda s, r=response: s.on_request(delta_request(r.type_url, nonce=r.nonce)))
    shared_steps = 0
    for number, change in enumerate(changes[1:], start=2):
        steps_before = alike.types[RDS].synced
        responses = ddecode(both(lambda s, c=change: s.on_entry(c)))
        shared_steps += steps_before is not None and any(r.type_url == RDS for r in responses)
        for response in responses:
            error = "rejected" if number == 4 and response.type_url == CDS else None
            follow = ddecode(
                both(
                    lambda s, r=response, e=error: s.on_request(
                        delta_request(r.type_url, nonce=r.nonce, error=e)
                    )
                )
            )
            for more in follow:  # retired clusters and endpoints, once routes are ACKed
                both(lambda s, r=more: s.on_request(delta_request(r.type_url, nonce=r.nonce)))
        if number == 5:
            both(lambda s: s.on_request(delta_request(EDS, unsubscribe=["*"], subscribe=["c"])))
    assert shared_steps >= 4  # the shared step was taken, and gave the same bytes
    for type_url in (CDS, EDS, LDS, RDS):
        assert alike.types[type_url].client_has == alone.types[type_url].client_has


def test_sotw_wildcard_responses_over_a_shared_bucket_are_the_bytes_built_per_stream():
    """A SotW wildcard (CDS, LDS) over a bucket shared by many streams is built once per
    push (sotw._whole); it must be what building it from the stream's resources gives."""
    changes = [entry(1, ["a", "b"], "a"), entry(2, ["a", "b", "c"], "c"), entry(3, ["c"], "c")]
    alike, alone = SotwStream(Reporter()), SotwStream(Reporter())
    alike.on_entry(shared(changes[0]))
    alone.on_entry(changes[0])
    for type_url, names in ((CDS, ()), (EDS, ("a", "b", "c")), (LDS, ()), (RDS, ("routes",))):
        one = alike.on_request(sotw_request(type_url, names))
        assert one == alone.on_request(sotw_request(type_url, names))
        (response,) = decode(one)
        assert ack(alike, response, names) == ack(alone, response, names) == []
    compared = 0
    for change in changes[1:]:
        one, other = alike.on_entry(shared(change)), alone.on_entry(change)
        assert one == other
        pending = decode(one)
        while pending:  # ACK each; retired clusters follow the routes' ACK
            response = pending.pop(0)
            compared += response.type_url in (CDS, LDS)
            names = () if response.type_url in (CDS, LDS) else names_of(response)
            follow = ack(alike, response, names)
            assert follow == ack(alone, response, names)
            pending.extend(follow)
    assert compared >= 3
