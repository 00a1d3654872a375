"""What a user sees when something is wrong, and the other ways to configure the provider."""

from __future__ import annotations

import re

import pytest

from tests.terraform.support import Terraform, terraform_binaries

pytestmark = pytest.mark.e2e

HEADER = """
terraform {
  required_providers {
    meshplane = { source = "meshplane/meshplane" }
  }
}
"""

BAD_NODE = """
resource "meshplane_virtual_node" "bad" {
  name      = "bad"
  mesh_name = meshplane_mesh.shop.name
  spec {
    listener {
      port_mapping {
        port     = 8080
        protocol = "http"
      }
    }
    service_discovery {
      dns {
        hostname = "bad.local"
      }
      aws_cloud_map {
        namespace_name = "shop.local"
        service_name   = "bad"
      }
    }
  }
}
"""


LONG_LOG_PATH = """
resource "meshplane_virtual_node" "bad" {
  name      = "bad"
  mesh_name = meshplane_mesh.shop.name
  spec {
    logging {
      access_log {
        file {
          path = "/var/log/%s"
        }
      }
    }
  }
}
""" % ("x" * 300)


@pytest.fixture
def tf(alice, api_server, tmp_path):
    """The first CLI found (the lifecycle test runs every one)."""
    work = tmp_path / "work"
    work.mkdir()
    _, binary = terraform_binaries()[0]
    return Terraform(binary, work, api_server.url, alice.key_id, alice.secret)


def _flat(text: str) -> str:
    """Terraform wraps long diagnostics: compare with runs of whitespace as one space."""
    return " ".join(text.split())


def _write(tf: Terraform, body: str) -> None:
    (tf.workdir / "main.tf").write_text(HEADER + body)


def test_api_error_points_at_the_attribute_and_writes_nothing(tf, alice):
    mesh = 'provider "meshplane" {}\nresource "meshplane_mesh" "shop" {\n  name = "shop"\n}\n'
    _write(tf, mesh + BAD_NODE)
    done = tf.run("apply", "-input=false", "-auto-approve", ok=(1,))
    assert "spec.serviceDiscovery. Can only set one of the following keys" in _flat(done.err)
    # Terraform shows the offending block because the diagnostic carries its path.
    assert re.search(r"\d+:\s+service_discovery \{", done.err), done.err
    assert alice.appmesh().list_virtual_nodes(meshName="shop")["virtualNodes"] == []

    # An error only the server finds (boto3 does not check lengths), on the attribute too.
    _write(tf, mesh + LONG_LOG_PATH)
    done = tf.run("apply", "-input=false", "-auto-approve", ok=(1,))
    assert "spec.logging.accessLog.file.path: must have at most 255" in _flat(done.err)
    assert re.search(r"\d+:\s+path = \"/var/log/x", done.err), done.err
    assert alice.appmesh().list_virtual_nodes(meshName="shop")["virtualNodes"] == []

    # The mesh (no spec: the server fills in DROP_ALL) plans clean once the node is gone.
    _write(tf, mesh)
    assert tf.plan_exitcode().rc == 0

    # Deleted outside Terraform: the plan creates it again.
    alice.appmesh().delete_mesh(meshName="shop")
    plan = tf.plan_exitcode()
    assert plan.rc == 2
    assert "1 to add, 0 to change, 0 to destroy" in plan.out


def test_validate_names_bad_values_without_a_server(tf):
    body = BAD_NODE.replace("8080", "70000").replace('"http"', '"htp"')
    _write(
        tf, 'provider "meshplane" {}\nresource "meshplane_mesh" "shop" {\n  name = "s"\n}\n' + body
    )
    tf.env["MESHPLANE_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens: no call is made
    done = tf.run("validate", ok=(1,))
    err = _flat(done.err)
    assert "spec.listener[0].port_mapping.port: must be at most 65535." in err
    assert re.search(r"\d+:\s+port\s+= 70000", done.err), done.err
    protocols = "http, tcp, http2, grpc"
    assert f"spec.listener[0].port_mapping.protocol: 'htp' is not one of {protocols}." in err
    assert re.search(r'\d+:\s+protocol = "htp"', done.err), done.err


def test_import_id_of_the_wrong_shape_is_refused(tf):
    _write(tf, 'provider "meshplane" {}\n' + BAD_NODE.replace("meshplane_mesh.shop.name", '"x"'))
    done = tf.run("import", "-input=false", "meshplane_virtual_node.bad", "bad", ok=(1,))
    assert "expected mesh_name/name" in done.err


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("MESHPLANE_ENDPOINT", "endpoint"),
        ("MESHPLANE_SECRET_ACCESS_KEY", "secret_access_key"),
    ],
)
def test_missing_provider_setting_is_named(tf, drop, named):
    _write(tf, 'provider "meshplane" {}\nresource "meshplane_mesh" "shop" {\n  name = "s"\n}\n')
    del tf.env[drop]
    done = tf.run("plan", "-input=false", ok=(1,))
    assert f"{named}: " in done.err


def test_profile_settings_and_data_sources(tf, alice):
    """An aws-style profile carries endpoint, key and region; a data source of each kind
    reads what was made with boto3."""
    appmesh = alice.appmesh()
    appmesh.create_mesh(meshName="shop")
    listener = {
        "portMapping": {"port": 8080, "protocol": "http"},
        "healthCheck": {
            "healthyThreshold": 2,
            "intervalMillis": 5000,
            "protocol": "http",
            "path": "/ping",
            "timeoutMillis": 2000,
            "unhealthyThreshold": 2,
        },
    }
    appmesh.create_virtual_node(
        meshName="shop",
        virtualNodeName="orders",
        spec={"listeners": [listener], "serviceDiscovery": {"dns": {"hostname": "orders.local"}}},
        tags=[{"key": "team", "value": "orders"}],
    )
    router = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}
    appmesh.create_virtual_router(meshName="shop", virtualRouterName="r", spec=router)
    targets = [{"virtualNode": "orders", "weight": 100}]
    appmesh.create_route(
        meshName="shop",
        virtualRouterName="r",
        routeName="rt",
        spec={"tcpRoute": {"action": {"weightedTargets": targets}}},
    )
    appmesh.create_virtual_service(
        meshName="shop",
        virtualServiceName="orders.local",
        spec={"provider": {"virtualRouter": {"virtualRouterName": "r"}}},
    )
    gateway = {"listeners": [{"portMapping": {"port": 8443, "protocol": "http"}}]}
    appmesh.create_virtual_gateway(meshName="shop", virtualGatewayName="gw", spec=gateway)
    target = {"virtualService": {"virtualServiceName": "orders.local"}}
    appmesh.create_gateway_route(
        meshName="shop",
        virtualGatewayName="gw",
        gatewayRouteName="gr",
        spec={"httpRoute": {"match": {"prefix": "/"}, "action": {"target": target}}},
    )
    home = tf.workdir.parent
    (home / "aws-config").write_text(
        f"[profile meshplane]\nregion = us-east-1\nendpoint_url = {tf.env['MESHPLANE_ENDPOINT']}\n"
    )
    (home / "aws-credentials").write_text(
        f"[meshplane]\naws_access_key_id = {alice.key_id}\naws_secret_access_key = {alice.secret}\n"
    )
    for name in ("MESHPLANE_ENDPOINT", "MESHPLANE_ACCESS_KEY_ID", "MESHPLANE_SECRET_ACCESS_KEY"):
        del tf.env[name]
    tf.env.update(
        AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"),
    )
    _write(
        tf,
        """
provider "meshplane" {
  profile = "meshplane"
}

data "meshplane_virtual_node" "orders" {
  name      = "orders"
  mesh_name = "shop"
}

output "health_path" {
  value = data.meshplane_virtual_node.orders.spec.listener[0].health_check.path
}

output "hostname" {
  value = data.meshplane_virtual_node.orders.spec.service_discovery.dns.hostname
}

output "tags" {
  value = data.meshplane_virtual_node.orders.tags
}

output "arn" {
  value = data.meshplane_virtual_node.orders.arn
}

data "meshplane_mesh" "shop" {
  name = "shop"
}

data "meshplane_virtual_router" "r" {
  name      = "r"
  mesh_name = "shop"
}

data "meshplane_route" "rt" {
  name                = "rt"
  mesh_name           = "shop"
  virtual_router_name = "r"
}

data "meshplane_virtual_service" "orders" {
  name      = "orders.local"
  mesh_name = "shop"
}

data "meshplane_virtual_gateway" "gw" {
  name      = "gw"
  mesh_name = "shop"
}

data "meshplane_gateway_route" "gr" {
  name                 = "gr"
  mesh_name            = "shop"
  virtual_gateway_name = "gw"
}

locals {
  gateway_action = data.meshplane_gateway_route.gr.spec.http_route.action
}

output "others" {
  value = {
    egress  = data.meshplane_mesh.shop.spec.egress_filter.type
    router  = data.meshplane_virtual_router.r.spec.listener[0].port_mapping.port
    route   = data.meshplane_route.rt.spec.tcp_route.action.weighted_target[0].virtual_node
    service = data.meshplane_virtual_service.orders.spec.provider.virtual_router.virtual_router_name
    gateway = data.meshplane_virtual_gateway.gw.spec.listener[0].port_mapping.port
    target  = local.gateway_action.target.virtual_service.virtual_service_name
  }
}
""",
    )
    tf.run("apply", "-input=false", "-auto-approve")
    node = appmesh.describe_virtual_node(meshName="shop", virtualNodeName="orders")
    assert tf.outputs() == {
        "health_path": "/ping",
        "hostname": "orders.local",
        "tags": {"team": "orders"},
        "arn": node["virtualNode"]["metadata"]["arn"],
        "others": {
            "egress": "DROP_ALL",
            "router": 8080,
            "route": "orders",
            "service": "r",
            "gateway": 8443,
            "target": "orders.local",
        },
    }
