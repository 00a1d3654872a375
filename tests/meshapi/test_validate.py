"""Validation against botocore's shapes: each failure names the field path."""

import pytest

from meshapi.appmesh.errors import BadRequest
from meshapi.appmesh.model import service_model
from meshapi.appmesh.validate import validate


def node_input(**spec):
    return {"meshName": "m", "virtualNodeName": "n", "spec": spec}


def check(params, message):
    shape = service_model().operation_model("CreateVirtualNode").input_shape
    with pytest.raises(BadRequest) as err:
        validate(shape, params)
    assert message in err.value.message


def test_valid_node_passes():
    shape = service_model().operation_model("CreateVirtualNode").input_shape
    validate(shape, node_input(listeners=[{"portMapping": {"port": 80, "protocol": "http"}}]))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"listeners": [{"portMapping": {"port": 80, "protocol": "htttp"}}]},
         "spec.listeners[0].portMapping.protocol: 'htttp' is not one of"),
        ({"listeners": [{"portMapping": {"port": 0, "protocol": "http"}}]},
         "spec.listeners[0].portMapping.port: must be at least 1"),
        ({"listeners": [{"portMapping": {"port": "80", "protocol": "http"}}]},
         "spec.listeners[0].portMapping.port: expected an integer"),
        ({"listeners": [{"portMapping": {"protocol": "http"}}]},
         "spec.listeners[0].portMapping.port: this field is required"),
        ({"listeners": [{"portMapping": {"port": 80, "protocol": "http"}, "bogus": 1}]},
         "spec.listeners[0].bogus: unknown field"),
        ({"serviceDiscovery": {}}, "spec.serviceDiscovery: set exactly one of"),
        ({"serviceDiscovery": {"dns": {"hostname": "a"}, "awsCloudMap": {
            "namespaceName": "n", "serviceName": "s"}}},
         "got awsCloudMap and dns"),
        ({"backends": "x"}, "spec.backends: expected a list"),
        ({"listeners": [{"portMapping": {"port": 80, "protocol": "http"}, "tls": {
            "mode": "STRICT", "certificate": {"file": {"certificateChain": "",
                                                       "privateKey": "/k"}}}}]},
         "spec.listeners[0].tls.certificate.file.certificateChain: must have at least 1"),
    ],
)  # fmt: skip
def test_errors_name_the_field(spec, message):
    check(node_input(**spec), message)


def test_boolean_is_not_an_integer():
    check(
        node_input(listeners=[{"portMapping": {"port": True, "protocol": "http"}}]),
        "expected an integer",
    )


def test_missing_top_level_member():
    check({"meshName": "m", "spec": {}}, "virtualNodeName: this field is required")
