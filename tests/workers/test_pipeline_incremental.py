"""Incremental compiles equal full compiles: on random meshes and random sequences of
changes, the variants the pipeline leaves alone (diffing stored input hashes, consulting
the graph now and each stored proxy's `requires`) compile to the version they have."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.compiler.test_properties import build, mesh, mesh_and_change
from workers import loader
from workers.compiler import compile_proxy, requires
from workers.pipeline import Stored, dep_keys, proxy_request, select_targets, wanted_variants

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Asked-for variants: (consumer, interception, app_port, ingress_port, egress_port).
EXTRA = [
    ("grpc", "redirect", 0, 0, 0),
    ("envoy", "explicit", 0, 0, 0),
    ("envoy", "explicit", 0, 16000, 16100),
]


def _fingerprint(data: dict) -> dict:
    return loader.fingerprint(
        "m", data["mesh_spec"], **{k: v for k, v in data.items() if k != "mesh_spec"}
    )


def _compile_all(data: dict, keys) -> dict:
    ctx = build(data)
    return {key: compile_proxy(ctx, proxy_request(key)).version for key in keys}


def _stored_after_full(data: dict) -> tuple[dict, dict]:
    """What a full compile of `data` leaves stored: versions and Stored per variant,
    including asked-for variants of every node."""
    ctx = build(data)
    keys = wanted_variants(ctx, [])
    keys |= {(k, n, *extra) for k, n, *_ in list(keys) if k == "virtualNode" for extra in EXTRA}
    versions = _compile_all(data, keys)
    stored = {key: Stored(dep_keys(requires(ctx, key[:2])), True) for key in keys}
    return versions, stored


def _step(previous: dict, versions: dict, stored: dict, data: dict) -> tuple[dict, dict]:
    """One incremental compile from `previous` (what is stored) to `data`; checks that
    every variant left alone already has the version a full compile gives."""
    ctx = build(data)
    targets, full = select_targets(ctx, _fingerprint(data), _fingerprint(previous), stored)
    wanted = wanted_variants(ctx, stored)
    expected = _compile_all(data, wanted)
    for key in wanted - targets:
        assert versions[key] == expected[key], (
            key,
            loader.changes(_fingerprint(previous), _fingerprint(data)),
        )
    new_versions = {key: expected[key] for key in wanted}
    new_stored = {key: Stored(dep_keys(requires(ctx, key[:2])), True) for key in targets}
    new_stored.update({key: stored[key] for key in wanted - targets})
    return new_versions, new_stored


@FAST
@given(mesh_and_change())
def test_one_change_incremental_equals_full(case):
    before, after, _ = case
    versions, stored = _stored_after_full(before)
    _step(before, versions, stored, after)


@FAST
@given(st.lists(mesh(), min_size=2, max_size=4), st.data())
def test_sequences_of_changes_incremental_equals_full(meshes, data):
    # Each step mixes the next random mesh into the current one, a few inputs at a time.
    current = meshes[0]
    versions, stored = _stored_after_full(current)
    for other in meshes[1:]:
        nxt = {}
        for key, value in current.items():
            if not isinstance(value, dict) or key == "mesh_spec":
                nxt[key] = other[key] if data.draw(st.booleans()) else value
                continue
            merged = dict(value)
            for name in data.draw(
                st.lists(
                    st.sampled_from(sorted(set(value) | set(other[key]), key=str) or [None]),
                    max_size=3,
                )
            ):
                if name is None:
                    continue
                if name in other[key]:
                    merged[name] = other[key][name]
                else:
                    merged.pop(name, None)
            nxt[key] = merged
        versions, stored = _step(current, versions, stored, nxt)
        current = nxt


def test_no_change_compiles_nothing_and_a_mesh_change_everything():
    data = {
        "mesh_spec": {"egressFilter": {"type": "DROP_ALL"}},
        "virtual_nodes": {
            "a": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
            "b": {"backends": [{"virtualService": {"virtualServiceName": "a.local"}}]},
        },
        "virtual_services": {"a.local": {"provider": {"virtualNode": {"virtualNodeName": "a"}}}},
    }
    defaults = {
        k: data.get(k, {})
        for k in ("virtual_routers", "routes", "virtual_gateways", "gateway_routes", "endpoints")
    }
    data.update(defaults)
    _, stored = _stored_after_full(data)
    ctx = build(data)
    fp = _fingerprint(data)
    assert select_targets(ctx, fp, fp, stored) == (set(), False)
    changed = dict(data, mesh_spec={"egressFilter": {"type": "ALLOW_ALL"}})
    targets, full = select_targets(build(changed), _fingerprint(changed), fp, stored)
    assert full and targets == set(stored)
    # Endpoints of `a` matter to its callers (b calls a.local), not to `a` itself.
    eps = dict(data, endpoints={("a", 8080): [{"address": "10.0.0.9", "port": 8080}]})
    targets, full = select_targets(build(eps), _fingerprint(eps), fp, stored)
    assert not full and {k[:2] for k in targets} == {("virtualNode", "b")}
