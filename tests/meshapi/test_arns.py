import pytest

from meshapi.appmesh.errors import BadRequest
from meshapi.services import arns
from meshapi.services.kinds import GATEWAY_ROUTE, MESH, ROUTE, VIRTUAL_NODE

ACCOUNT = "123456789012"


@pytest.mark.parametrize(
    "path",
    [
        arns.ResourcePath(MESH, "shop", "shop"),
        arns.ResourcePath(VIRTUAL_NODE, "shop", "cart"),
        arns.ResourcePath(ROUTE, "shop", "to-v2", "catalog"),
        arns.ResourcePath(GATEWAY_ROUTE, "shop", "web", "ingress"),
    ],
)
def test_round_trip(path):
    arn = arns.build("eu-west-1", ACCOUNT, path)
    assert arns.parse(arn) == ("eu-west-1", ACCOUNT, path)


def test_layout_matches_app_mesh():
    arn = arns.build("us-east-1", ACCOUNT, arns.ResourcePath(ROUTE, "shop", "x", "r"))
    assert arn == f"arn:aws:appmesh:us-east-1:{ACCOUNT}:mesh/shop/virtualRouter/r/route/x"


@pytest.mark.parametrize(
    "arn",
    [
        "nope",
        f"arn:aws:s3:us-east-1:{ACCOUNT}:mesh/shop",
        f"arn:aws:appmesh:us-east-1:{ACCOUNT}:meshes/shop",
        f"arn:aws:appmesh:us-east-1:{ACCOUNT}:mesh/shop/route/x",
        f"arn:aws:appmesh:us-east-1:{ACCOUNT}:mesh/shop/virtualNode/a/route/x",
        f"arn:aws:appmesh:us-east-1:{ACCOUNT}:mesh/shop/virtualNode/",
    ],
)
def test_bad_arns_name_the_field(arn):
    with pytest.raises(BadRequest) as err:
        arns.parse(arn)
    assert err.value.message.startswith("resourceArn:")
