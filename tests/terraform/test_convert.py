"""The provider's schema covers what App Mesh users write, and API error paths find their
attribute. Pure functions: the provider package's schema and conversion, without Terraform."""

from __future__ import annotations

import sys

import pytest

from tests.e2e import specs
from tests.terraform.support import ROOT

sys.path.insert(0, str(ROOT / "terraform" / "provider" / "src"))

from terraform_provider_meshplane import convert, schema  # noqa: E402

CASES = [
    ("meshplane_mesh", specs.mesh_spec()),
    ("meshplane_virtual_node", specs.node_spec_dns()),
    ("meshplane_virtual_node", specs.node_spec_cloud_map()),
    ("meshplane_virtual_router", specs.router_spec()),
    ("meshplane_route", specs.http_route_headers()),
    ("meshplane_route", specs.http_route_path_exact()),
    ("meshplane_route", specs.http2_route_path_regex()),
    ("meshplane_route", specs.grpc_route()),
    ("meshplane_route", specs.tcp_route()),
    ("meshplane_virtual_gateway", specs.gateway_spec()),
    ("meshplane_gateway_route", specs.gateway_route_http()),
    ("meshplane_gateway_route", specs.gateway_route_http2_path()),
    ("meshplane_gateway_route", specs.gateway_route_http_default_prefix()),
    ("meshplane_gateway_route", specs.gateway_route_grpc()),
]


def _unordered_scalars(value):
    """Scalar lists are sets in Terraform, and Cloud Map's key/value list is a map: compare
    both without order."""
    if isinstance(value, dict):
        return {k: _unordered_scalars(v) for k, v in value.items()}
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            return sorted(value, key=repr)
        if all(isinstance(v, dict) and set(v) == {"key", "value"} for v in value):
            return sorted(value, key=lambda v: v["key"])
        return [_unordered_scalars(v) for v in value]
    return value


def _spec_block(type_name: str) -> schema.Block:
    return schema.resource_schema(type_name).block("spec").block


@pytest.mark.parametrize(("type_name", "spec"), CASES)
def test_every_field_of_realistic_specs_survives_the_round_trip(type_name, spec):
    block = _spec_block(type_name)
    tf_value = convert.to_tf(block, spec)
    assert _unordered_scalars(convert.to_api(block, tf_value)) == _unordered_scalars(spec)


def test_blocks_are_named_like_the_aws_provider():
    node = convert.to_tf(_spec_block("meshplane_virtual_node"), specs.node_spec_cloud_map())
    assert set(node) == {"backend", "backend_defaults", "listener", "logging", "service_discovery"}
    assert isinstance(node["service_discovery"]["aws_cloud_map"]["attributes"], dict)
    route = convert.to_tf(_spec_block("meshplane_route"), specs.http_route_headers())
    match = route["http_route"]["match"]
    assert [h["name"] for h in match["header"]] == [
        h["name"] for h in specs.http_route_headers()["httpRoute"]["match"]["headers"]
    ]
    assert "weighted_target" in route["http_route"]["action"]


@pytest.mark.parametrize(
    ("api_path", "steps"),
    [
        ("spec.listeners[0].portMapping.port", ["spec", "listener", 0, "port_mapping", "port"]),
        (
            "spec.listeners[1].tls.validation.subjectAlternativeNames.match.exact",
            [
                "spec",
                "listener",
                1,
                "tls",
                "validation",
                "subject_alternative_names",
                "match",
                "exact",
            ],
        ),  # fmt: skip
        ("spec.backends[2].virtualService", ["spec", "backend", 2, "virtual_service"]),
        ("virtualNodeName", ["name"]),
        ("meshName", ["mesh_name"]),
    ],
)
def test_api_error_paths_become_attribute_paths(api_path, steps):
    block = schema.resource_schema("meshplane_virtual_node")
    top = {"meshName": "mesh_name", "virtualNodeName": "name"}
    assert convert.attribute_path(block, api_path, top) == steps


def test_server_filled_defaults_stay_absent_only_where_they_were_absent():
    block = schema.resource_schema("meshplane_mesh")
    read = {"name": "m", "spec": convert.to_tf(_spec_block("meshplane_mesh"), specs.mesh_spec())}
    defaults = {"spec.egress_filter": {"type": "DROP_ALL"}}
    # Prior without spec; the server says DROP_ALL (its default) -> still no spec.
    filled = {
        "name": "m",
        "spec": {"egress_filter": {"type": "DROP_ALL"}, "service_discovery": None},
    }
    assert (
        convert.keep_prior_absence(block, {"name": "m", "spec": None}, filled, defaults)["spec"]
        is None
    )
    # Prior without spec, the server has ALLOW_ALL: that is drift and shows.
    kept = convert.keep_prior_absence(block, {"name": "m", "spec": None}, read, defaults)
    assert kept["spec"]["egress_filter"] == {"type": "ALLOW_ALL"}
