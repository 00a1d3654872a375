"""The compiler's public API as the pipeline uses it: dependents, sharing, consistency."""

import dataclasses

import pytest

from tests.compiler.cases import context, load
from workers.compiler import (
    InconsistentSnapshot,
    ProxyRequest,
    compile_proxy,
    dependents,
    proxies_of,
    xds,
)


@pytest.fixture(scope="module")
def platform():
    return context(load("combined_platform"))


def test_a_route_change_touches_exactly_the_callers_of_its_router(platform):
    # api.platform.local is provided by router `api`; web calls it, and the ingress
    # gateway targets it. Nobody else reaches router `api`.
    assert dependents(platform, {("route", "api/split")}) == {
        ("virtualNode", "web"),
        ("virtualGateway", "ingress"),
    }


def test_a_node_change_touches_itself_and_every_caller_that_can_reach_it(platform):
    assert dependents(platform, {("virtualNode", "users")}) == {
        ("virtualNode", "users"),
        ("virtualNode", "api-stable"),
        ("virtualNode", "api-canary"),
    }


def test_endpoint_churn_changes_only_assignments(platform):
    changed = dataclasses.replace(
        platform,
        endpoints=type(platform.endpoints)(
            {**platform.endpoints, ("ledger", 5432): ()},
        ),
        _memo={},
    )
    proxy = ProxyRequest("virtualNode", "billing")
    old, new = compile_proxy(platform, proxy), compile_proxy(changed, proxy)
    assert old.version != new.version
    differing = {t for t in xds.TYPE_ORDER if old.type_versions[t] != new.type_versions[t]}
    assert differing == {xds.ENDPOINT}


def test_a_mesh_change_touches_every_proxy(platform):
    assert len(dependents(platform, {("mesh", "platform")})) == len(proxies_of(platform))


def test_identical_clusters_and_route_configurations_are_shared_across_proxies(platform):
    stable = compile_proxy(platform, ProxyRequest("virtualNode", "api-stable"))
    canary = compile_proxy(platform, ProxyRequest("virtualNode", "api-canary"))
    # Different nodes, same ingress port and timeouts: one route configuration message.
    assert stable.of(xds.ROUTE)["ingress/8080"] is canary.of(xds.ROUTE)["ingress/8080"]
    explicit = compile_proxy(
        platform, ProxyRequest("virtualNode", "api-stable", interception="explicit")
    )
    cluster = "upstream/users/9000"
    assert stable.of(xds.CLUSTER)[cluster] is explicit.of(xds.CLUSTER)[cluster]
    # api-canary has no client policy, api-stable has one: their clusters differ.
    assert stable.of(xds.CLUSTER)[cluster] != canary.of(xds.CLUSTER)[cluster]
    assert stable.hashes[xds.CLUSTER][cluster] != canary.hashes[xds.CLUSTER][cluster]


def test_consistent_reports_a_missing_cluster_and_check_raises(platform):
    snapshot = compile_proxy(platform, ProxyRequest("virtualNode", "web"))
    clusters = dict(snapshot.resources[xds.CLUSTER])
    clusters.pop("upstream/api-canary/8080")
    resources = {t: dict(snapshot.resources[t]) for t in xds.TYPE_ORDER}
    resources[xds.CLUSTER] = clusters
    broken = type(snapshot).build(snapshot.node_id, snapshot.proxy, resources)
    problems = broken.consistent()
    assert any("upstream/api-canary/8080" in p for p in problems)
    with pytest.raises(InconsistentSnapshot):
        broken.check()


def test_proxy_requests_refuse_unknown_values():
    with pytest.raises(ValueError, match="consumer"):
        ProxyRequest("virtualNode", "x", consumer="lite")
    with pytest.raises(ValueError, match="gateway"):
        ProxyRequest("virtualGateway", "x", consumer="grpc")
