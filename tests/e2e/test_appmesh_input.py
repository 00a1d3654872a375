"""What the App Mesh API refuses: malformed or invalid input (each error names the field),
bad or missing credentials, read-only keys writing, and other tenants' resources."""

import base64
import json
from datetime import UTC, datetime, timedelta

import botocore
import botocore.auth
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from meshapi.models import Mesh
from tests.e2e import specs
from tests.e2e.appmesh_helpers import client_for, names_in, raises
from tests.e2e.specs import ACCOUNT, REGION, arn

NODE_PATH = "/v20190125/meshes/shop/virtualNodes"


@pytest.fixture
def shop(alice):
    """alice's mesh "shop": node "orders" (version 1), router "orders", tagged mesh."""
    client = client_for(alice)
    client.create_mesh(meshName="shop", tags=[{"key": "team", "value": "checkout"}])
    client.create_virtual_node(
        meshName="shop", virtualNodeName="orders", spec=specs.node_spec_dns()
    )
    client.create_virtual_router(meshName="shop", virtualRouterName="orders", spec={})
    return client


def _revision() -> int:
    return Mesh.objects.get(tenant__account_id=ACCOUNT, name="shop").revision


def _assert_unchanged(client, revision: int, thorough: bool = True) -> None:
    """Only what the fixture made exists, at version 1, and the mesh revision stood still.

    Every write in the mesh (update, tag, new route…) bumps its revision, so the quick form
    (no new mesh or node, same revision) is enough after each refused request.
    """
    assert names_in(client.list_meshes()["meshes"], "meshName") == ["shop"]
    nodes = client.list_virtual_nodes(meshName="shop")["virtualNodes"]
    assert [(n["virtualNodeName"], n["version"]) for n in nodes] == [("orders", 1)]
    assert _revision() == revision
    if not thorough:
        return
    node = client.describe_virtual_node(meshName="shop", virtualNodeName="orders")["virtualNode"]
    assert node["spec"] == specs.node_spec_dns()
    assert client.describe_mesh(meshName="shop")["mesh"]["metadata"]["version"] == 1
    assert client.list_routes(meshName="shop", virtualRouterName="orders")["routes"] == []
    assert client.list_tags_for_resource(resourceArn=arn("mesh/shop"))["tags"] == [
        {"key": "team", "value": "checkout"}
    ]


def _error(response: requests.Response) -> tuple[int, str, str]:
    return (
        response.status_code,
        response.headers.get("x-amzn-ErrorType", ""),
        response.json()["message"],
    )


# ---------------------------------------------------------------- bad input


def _node_body(**changes) -> dict:
    """A CreateVirtualNode body; `changes` maps a dotted path to a new value (None deletes)."""
    body = {"virtualNodeName": "new", "spec": specs.node_spec_dns()}
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = body
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if isinstance(target, list):
            last = int(last)
        if value is None:
            del target[last]
        else:
            target[last] = value
    return body


def _cloud_map_with_attribute_key(key: str) -> dict:
    return {
        "awsCloudMap": {
            "namespaceName": "shop.local",
            "serviceName": "orders",
            "attributes": [{"key": key, "value": "x"}],
        }
    }


# (case, CreateVirtualNode body, what the message must say)
BAD_NODES = [
    ("unknown top-level field", _node_body(colour="red"), "colour: unknown field"),
    (
        "unknown nested field",
        _node_body(**{"spec.listeners.0.portMapping.colour": "red"}),
        "spec.listeners[0].portMapping.colour: unknown field",
    ),
    (
        "string for an integer",
        _node_body(**{"spec.listeners.1.portMapping.port": "8443"}),
        "spec.listeners[1].portMapping.port: expected an integer",
    ),
    (
        "object for a list",
        _node_body(**{"spec.listeners": {"portMapping": {"port": 80, "protocol": "http"}}}),
        "spec.listeners: expected a list",
    ),
    (
        "string for a boolean",
        _node_body(**{"spec.backendDefaults.clientPolicy.tls.enforce": "yes"}),
        "spec.backendDefaults.clientPolicy.tls.enforce: expected true or false",
    ),
    (
        "enum violation",
        _node_body(**{"spec.listeners.0.portMapping.protocol": "udp"}),
        "spec.listeners[0].portMapping.protocol: 'udp' is not one of",
    ),
    (
        "port out of range",
        _node_body(**{"spec.listeners.3.portMapping.port": 70000}),
        "spec.listeners[3].portMapping.port: must be at most 65535",
    ),
    (
        "health check interval too short",
        _node_body(**{"spec.listeners.0.healthCheck.intervalMillis": 1000}),
        "spec.listeners[0].healthCheck.intervalMillis: must be at least 5000",
    ),
    (
        "union with two members",
        _node_body(
            **{"spec.serviceDiscovery.awsCloudMap": {"namespaceName": "n", "serviceName": "s"}}
        ),
        "spec.serviceDiscovery: set exactly one of",
    ),
    (
        "union with no member",
        _node_body(**{"spec.listeners.2.tls.certificate": {}}),
        "spec.listeners[2].tls.certificate: set exactly one of",
    ),
    (
        "missing required nested member",
        _node_body(**{"spec.listeners.0.healthCheck.protocol": None}),
        "spec.listeners[0].healthCheck.protocol: this field is required",
    ),
    (
        "missing required member in a list item",
        _node_body(**{"spec.backends.2.virtualService.virtualServiceName": None}),
        "spec.backends[2].virtualService.virtualServiceName: this field is required",
    ),
    (
        "null list item",
        _node_body(**{"spec.listeners": [None]}),
        "spec.listeners[0]: expected an object",
    ),
    ("missing name", _node_body(virtualNodeName=None), "virtualNodeName: this field is required"),
    ("name too long", _node_body(virtualNodeName="n" * 256), "virtualNodeName: must have at most"),
    ("slash in name", _node_body(virtualNodeName="a/b"), "virtualNodeName: 'a/b' cannot name"),
    ("dot-dot name", _node_body(virtualNodeName=".."), "virtualNodeName: '..' cannot name"),
    ("NUL in name", _node_body(virtualNodeName="a\x00b"), "virtualNodeName: must not contain NUL"),
    (
        "NUL in spec",
        _node_body(**{"spec.serviceDiscovery.dns.hostname": "orders\x00"}),
        "spec.serviceDiscovery.dns.hostname: must not contain NUL",
    ),
    (
        "NUL in tag",
        _node_body(tags=[{"key": "team", "value": "a\x00"}]),
        "tags[0].value: must not contain NUL",
    ),
    (
        "pattern violation",
        _node_body(**{"spec.serviceDiscovery": _cloud_map_with_attribute_key("has space")}),
        "spec.serviceDiscovery.awsCloudMap.attributes[0].key: 'has space' does not match",
    ),
]

# (case, raw body, extra headers, what the message must say)
UNPARSEABLE = [
    ("truncated JSON", b'{"virtualNodeName": "new", "spec": {', {}, "not valid JSON"),
    ("not UTF-8", b"\xff\xfe{}", {}, "not valid JSON"),
    ("JSON array", b'["virtualNodeName", "new"]', {}, "must be a JSON object"),
    ("deeply nested", b'{"spec": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, "nested"),
    (
        "text/plain",
        json.dumps(_node_body()).encode(),
        {"Content-Type": "text/plain"},
        "Content-Type 'text/plain' is not supported",
    ),
    (
        "form encoded",
        json.dumps(_node_body()).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
        "Content-Type",
    ),
    (
        "over 1 MiB",
        json.dumps({**_node_body(), "clientToken": "x" * (1024 * 1024)}).encode(),
        {},
        "larger than 1048576 bytes",
    ),
]


def _assert_bad_request(response: requests.Response, case: str, message: str) -> None:
    status, error, text = _error(response)
    assert (status, error) == (400, "BadRequestException"), (case, status, error, text)
    assert message in text, (case, text)


def test_invalid_creates_name_the_field_and_create_nothing(alice, shop):
    revision = _revision()
    for case, body, message in BAD_NODES:
        _assert_bad_request(alice.signed("PUT", NODE_PATH, body=body), case, message)
        _assert_unchanged(shop, revision, thorough=False)
    _assert_unchanged(shop, revision)


def test_unparseable_bodies_are_refused_and_create_nothing(alice, shop):
    revision = _revision()
    for case, raw, headers, message in UNPARSEABLE:
        response = alice.signed("PUT", NODE_PATH, raw=raw, headers=headers)
        _assert_bad_request(response, case, message)
        _assert_unchanged(shop, revision, thorough=False)
    _assert_unchanged(shop, revision)


def test_invalid_updates_name_the_field_and_change_nothing(alice, shop):
    revision = _revision()
    for case, body, message in BAD_NODES:
        if not message.startswith("spec."):
            continue
        response = alice.signed("PUT", NODE_PATH + "/orders", body={"spec": body["spec"]})
        _assert_bad_request(response, case, message)
    _assert_unchanged(shop, revision)

    routes = "/v20190125/meshes/shop/virtualRouter/orders/routes"
    both = {**specs.tcp_route("orders"), **specs.http_route_path_exact("orders")}
    headers = specs.http_route_headers("orders", "orders")
    headers["httpRoute"]["match"]["headers"][0]["match"]["prefix"] = "ac"
    for case, spec, message in [
        ("two route types", both, "spec: set exactly one of"),
        ("no route type", {"priority": 1}, "spec: set exactly one of"),
        ("two header matches", headers, "spec.httpRoute.match.headers[0].match: set exactly one"),
    ]:
        response = alice.signed("PUT", routes, body={"routeName": "r", "spec": spec})
        _assert_bad_request(response, case, message)
    response = alice.signed(
        "PUT", "/v20190125/meshes/shop/virtualServices", body={"virtualServiceName": "", "spec": {}}
    )
    _assert_bad_request(response, "empty service name", "virtualServiceName: '' cannot name")
    _assert_unchanged(shop, revision)


def test_bad_paths_and_query_parameters(alice, shop):
    token = base64.urlsafe_b64encode(json.dumps({"after": "a\x00"}).encode()).decode()
    for case, path, message in [
        ("limit not a number", f"{NODE_PATH}?limit=abc", "limit: 'abc' is not an integer"),
        ("limit zero", f"{NODE_PATH}?limit=0", "limit: must be at least 1"),
        ("limit too large", f"{NODE_PATH}?limit=99999999999999999999", "limit: must be at most"),
        ("forged token", f"{NODE_PATH}?nextToken={token}", "nextToken"),
        ("NUL in name", "/v20190125/meshes/sh%00op", "meshName: must not contain NUL"),
        ("NUL in ARN", "/v20190125/tags?resourceArn=" + arn("mesh/sh%00op"), "resourceArn"),
    ]:
        _assert_bad_request(alice.signed("GET", path), case, message)

    status, error, _ = _error(alice.signed("GET", "/v20190125/widgets"))
    assert (status, error) == (404, "UnknownOperationException")
    _assert_bad_request(alice.signed("POST", "/v20190125/meshes"), "wrong method", "POST")


def test_json_null_members_are_treated_as_absent(alice, shop):
    """boto3 never sends null, other clients do: a null member is absent, and never stored."""
    spec = specs.node_spec_minimal()
    body = {
        "virtualNodeName": "n",
        "spec": {**spec, "backends": None, "logging": {"accessLog": None}},
        "tags": None,
    }
    response = alice.signed("PUT", NODE_PATH, body=body)
    assert response.status_code == 200, response.text
    expected = {**spec, "logging": {}}
    assert response.json()["spec"] == expected
    described = alice.signed("GET", NODE_PATH + "/n").json()
    assert described["spec"] == expected


# ---------------------------------------------------------------- authentication


def test_bad_or_missing_credentials_are_refused(alice, shop):
    wrong_secret = client_for(alice, secret="not-the-secret")
    with raises("InvalidSignatureException", "signature"):
        wrong_secret.list_meshes()
    with raises("InvalidSignatureException"):
        wrong_secret.delete_virtual_router(meshName="shop", virtualRouterName="orders")
    with raises("UnrecognizedClientException"):
        client_for(alice, key_id="AKMPNOSUCHKEY0000000").list_meshes()
    with raises("MissingAuthenticationTokenException"):
        client_for(alice, signature_version=botocore.UNSIGNED).create_mesh(meshName="anon")
    response = requests.put(
        alice.base_url + "/v20190125/meshes", json={"meshName": "anon"}, timeout=10
    )
    assert _error(response)[:2] == (403, "MissingAuthenticationTokenException")
    _assert_unchanged(shop, _revision())


def test_signatures_must_be_fresh_and_cover_the_body(alice, monkeypatch):
    client = client_for(alice)
    now = datetime.now(UTC).replace(tzinfo=None)
    for skew in (timedelta(minutes=-20), timedelta(minutes=20)):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, s=skew, **k: now + s)
        with raises("InvalidSignatureException", "Signature expired"):
            client.create_mesh(meshName="late")
    # Inside the 15-minute window a slow clock is fine.
    monkeypatch.setattr(
        botocore.auth, "get_current_datetime", lambda *a, **k: now - timedelta(minutes=10)
    )
    assert client.list_meshes()["meshes"] == []
    monkeypatch.undo()

    request = AWSRequest(
        method="PUT",
        url=alice.base_url + "/v20190125/meshes",
        data=json.dumps({"meshName": "shop"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    SigV4Auth(Credentials(alice.key_id, alice.secret), "appmesh", REGION).add_auth(request)
    headers = dict(request.prepare().headers)
    headers.pop("Content-Length")
    tampered = json.dumps({"meshName": "evil"}).encode()
    response = requests.put(request.url, data=tampered, headers=headers, timeout=10)
    assert _error(response)[:2] == (403, "InvalidSignatureException")
    assert client.list_meshes()["meshes"] == []


# ---------------------------------------------------------------- read-only keys


def test_read_only_key_reads_but_cannot_write(bob, shop):
    revision = _revision()
    client = client_for(bob)
    assert names_in(client.list_meshes()["meshes"], "meshName") == ["shop"]
    node = client.describe_virtual_node(meshName="shop", virtualNodeName="orders")
    assert node["virtualNode"]["spec"] == specs.node_spec_dns()
    assert client.list_tags_for_resource(resourceArn=arn("mesh/shop"))["tags"] != []

    writes = [
        lambda: client.create_mesh(meshName="mine"),
        lambda: client.update_mesh(meshName="shop", spec=specs.mesh_spec()),
        lambda: client.delete_virtual_router(meshName="shop", virtualRouterName="orders"),
        lambda: client.update_virtual_node(
            meshName="shop", virtualNodeName="orders", spec=specs.node_spec_minimal()
        ),
        lambda: client.create_route(
            meshName="shop",
            virtualRouterName="orders",
            routeName="r",
            spec=specs.tcp_route("orders"),
        ),
        lambda: client.tag_resource(
            resourceArn=arn("mesh/shop"), tags=[{"key": "a", "value": "b"}]
        ),
        lambda: client.untag_resource(resourceArn=arn("mesh/shop"), tagKeys=["team"]),
    ]
    for write in writes:
        with raises("ForbiddenException", "read-only"):
            write()
    _assert_unchanged(shop, revision)


# ---------------------------------------------------------------- other tenants


def test_another_tenant_cannot_see_or_touch_a_mesh(charlie, shop):
    revision = _revision()
    theirs = client_for(charlie)
    mesh_arn = arn("mesh/shop")
    node_arn = arn("mesh/shop/virtualNode/orders")

    # Their answer for alice's mesh is the answer for a mesh that does not exist.
    with raises("NotFoundException") as info:
        theirs.describe_mesh(meshName="shop")
    with raises("NotFoundException") as missing:
        theirs.describe_mesh(meshName="nothing-here")
    assert info.value.response["Error"]["Message"] == missing.value.response["Error"][
        "Message"
    ].replace("nothing-here", "shop")

    attempts = [
        lambda: theirs.describe_mesh(meshName="shop", meshOwner=ACCOUNT),
        lambda: theirs.update_mesh(meshName="shop", spec=specs.mesh_spec()),
        lambda: theirs.delete_mesh(meshName="shop"),
        lambda: theirs.describe_virtual_node(meshName="shop", virtualNodeName="orders"),
        lambda: theirs.describe_virtual_node(
            meshName="shop", virtualNodeName="orders", meshOwner=ACCOUNT
        ),
        lambda: theirs.update_virtual_node(
            meshName="shop", virtualNodeName="orders", spec=specs.node_spec_minimal()
        ),
        lambda: theirs.delete_virtual_node(meshName="shop", virtualNodeName="orders"),
        lambda: theirs.create_virtual_node(
            meshName="shop", virtualNodeName="intruder", spec=specs.node_spec_minimal()
        ),
        lambda: theirs.list_virtual_nodes(meshName="shop"),
        lambda: theirs.list_tags_for_resource(resourceArn=mesh_arn),
        lambda: theirs.tag_resource(resourceArn=node_arn, tags=[{"key": "pwned", "value": "y"}]),
        lambda: theirs.untag_resource(resourceArn=mesh_arn, tagKeys=["team"]),
    ]
    for attempt in attempts:
        with raises("NotFoundException"):
            attempt()
    assert theirs.list_meshes()["meshes"] == []

    # Their own mesh of the same name is theirs alone.
    own = theirs.create_mesh(meshName="shop")["mesh"]
    assert own["metadata"]["arn"] == "arn:aws:appmesh:us-east-1:222222222222:mesh/shop"
    assert names_in(theirs.list_meshes()["meshes"], "meshName") == ["shop"]
    assert theirs.list_virtual_nodes(meshName="shop")["virtualNodes"] == []
    assert shop.describe_mesh(meshName="shop")["mesh"]["metadata"]["uid"] != own["metadata"]["uid"]
    _assert_unchanged(shop, revision)
    assert shop.list_tags_for_resource(resourceArn=node_arn)["tags"] == []
