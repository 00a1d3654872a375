"""Meshes the xDS tests build through boto3, as a tenant would."""

MESH = "shop"
SERVICE = "greeter.shop.local"


def greeter_spec(weights: tuple[int, int]) -> dict:
    return {
        "priority": 10,
        "grpcRoute": {
            "match": {"serviceName": "test.Greeter"},
            "action": {
                "weightedTargets": [
                    {"virtualNode": "greeter-v1", "weight": weights[0]},
                    {"virtualNode": "greeter-v2", "weight": weights[1]},
                ]
            },
        },
    }


def build_greeter_mesh(client, v1_port: int, v2_port: int) -> None:
    """greeter-v1/-v2 behind router `greeter` (80/20 split; metadata x-canary: yes → v2),
    virtual service greeter.shop.local, and a `client` node with it as its backend."""
    client.create_mesh(meshName=MESH)
    for name, port in (("greeter-v1", v1_port), ("greeter-v2", v2_port)):
        client.create_virtual_node(
            meshName=MESH,
            virtualNodeName=name,
            spec={"listeners": [{"portMapping": {"port": port, "protocol": "grpc"}}]},
        )
    client.create_virtual_router(
        meshName=MESH,
        virtualRouterName="greeter",
        spec={"listeners": [{"portMapping": {"port": 50051, "protocol": "grpc"}}]},
    )
    client.create_route(
        meshName=MESH,
        virtualRouterName="greeter",
        routeName="canary",
        spec={
            "priority": 0,
            "grpcRoute": {
                "match": {
                    "serviceName": "test.Greeter",
                    "metadata": [{"name": "x-canary", "match": {"exact": "yes"}}],
                },
                "action": {"weightedTargets": [{"virtualNode": "greeter-v2", "weight": 1}]},
            },
        },
    )
    client.create_route(
        meshName=MESH, virtualRouterName="greeter", routeName="split", spec=greeter_spec((80, 20))
    )
    client.create_virtual_service(
        meshName=MESH,
        virtualServiceName=SERVICE,
        spec={"provider": {"virtualRouter": {"virtualRouterName": "greeter"}}},
    )
    client.create_virtual_node(
        meshName=MESH,
        virtualNodeName="client",
        spec={"backends": [{"virtualService": {"virtualServiceName": SERVICE}}]},
    )
