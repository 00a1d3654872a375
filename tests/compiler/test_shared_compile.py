"""Compiling many proxies against one context (what a mesh compile does) gives each proxy
exactly what compiling it alone gives: shared messages and whole snapshots shared by
virtual nodes with the same spec change nothing a proxy receives."""

import copy

from hypothesis import given
from hypothesis import strategies as st

from tests.compiler import cases
from tests.compiler.test_properties import FAST, NODES, build, every_request, mesh
from workers.compiler import MeshContext, ProxyRequest, compile_proxy


def same(shared, alone) -> None:
    assert shared.node_id == alone.node_id and shared.proxy == alone.proxy
    assert shared.version == alone.version
    assert shared.to_json() == alone.to_json()
    assert shared.consistent() == alone.consistent()


def test_golden_cases_compiled_together_equal_each_proxy_compiled_alone():
    for case in cases.case_names():
        data = cases.load(case)
        together = cases.context(data)
        for proxy in cases.proxies(data):
            same(compile_proxy(together, proxy), compile_proxy(cases.context(data), proxy))


@st.composite
def mesh_with_twins(draw):
    """A random mesh where some virtual nodes have exactly another node's spec."""
    data = draw(mesh())
    nodes = data["virtual_nodes"]
    source = draw(st.sampled_from(sorted(nodes)))
    for twin in draw(st.lists(st.sampled_from(NODES), unique=True, max_size=3)):
        nodes[twin] = copy.deepcopy(nodes[source])
        data["endpoints"][(twin, 8080)] = [{"address": "10.0.0.2", "port": 8080}]
    return data


@FAST
@given(mesh_with_twins())
def test_random_meshes_compiled_together_equal_each_proxy_compiled_alone(data):
    together = build(data)
    for proxy in every_request(together):
        same(compile_proxy(together, proxy), compile_proxy(build(data), proxy))


def twins(mtls_mode: str) -> MeshContext:
    """Nodes a and b with one spec; only a is a backend of caller c."""
    http = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}
    return MeshContext.from_specs(
        "m",
        {},
        virtual_nodes={
            "a": http,
            "b": http,
            "c": {"backends": [{"virtualService": {"virtualServiceName": "a.local"}}]},
        },
        virtual_services={"a.local": {"provider": {"virtualNode": {"virtualNodeName": "a"}}}},
        endpoints={("a", 8080): [{"address": "10.0.0.1", "port": 8080}]},
        mtls_mode=mtls_mode,
        trust_domain="111111111111.meshplane.local",
    )


def test_twins_share_a_configuration_under_their_own_node_ids_until_mtls_tells_them_apart():
    ctx = twins("DISABLED")
    a = compile_proxy(ctx, ProxyRequest("virtualNode", "a"))
    b = compile_proxy(ctx, ProxyRequest("virtualNode", "b"))
    assert (a.node_id, b.node_id) == ("mesh/m/virtualNode/a", "mesh/m/virtualNode/b")
    assert a.version == b.version and a.resources == b.resources
    # Under automatic mTLS a admits its caller c and b admits nobody: not the same listeners.
    ctx = twins("STRICT")
    a = compile_proxy(ctx, ProxyRequest("virtualNode", "a"))
    b = compile_proxy(ctx, ProxyRequest("virtualNode", "b"))
    assert a.version != b.version
    assert a.type_versions != b.type_versions
