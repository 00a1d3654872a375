"""The audit log lists every write, made through either API, newest first."""

from datetime import timedelta
from urllib.parse import quote

import requests
from django.utils import timezone

from tests.support.personas import Persona


def api(persona: Persona, path: str) -> requests.Response:
    return requests.get(persona.base_url + "/api/v1" + path, headers=persona.bearer, timeout=30)


def test_app_mesh_writes_are_listed_with_before_and_after(alice, bob):
    client = alice.appmesh()
    client.create_mesh(meshName="shop")
    client.update_mesh(meshName="shop", spec={"egressFilter": {"type": "ALLOW_ALL"}})

    # Any member may read the audit log: bob is a viewer with a read-only key.
    events = api(bob, "/audit-events/?resourceType=mesh").json()["results"]
    assert [e["action"] for e in events] == ["UpdateMesh", "CreateMesh"]
    update, create = events
    arn = f"arn:aws:appmesh:us-east-1:{alice.tenant.account_id}:mesh/shop"
    assert create["resourceArn"] == arn and update["resourceArn"] == arn
    assert create["before"] is None and create["after"]["meshName"] == "shop"
    assert update["before"]["spec"]["egressFilter"]["type"] == "DROP_ALL"
    assert update["after"]["spec"]["egressFilter"]["type"] == "ALLOW_ALL"
    assert f"alice@example.com ({alice.key_id})" == create["actor"]
    assert create["requestId"]

    only = api(alice, "/audit-events/?action=CreateMesh").json()["results"]
    assert [e["resourceArn"] for e in only] == [arn]
    assert api(alice, f"/audit-events/{create['id']}").json() == create


def test_pages_are_newest_first_and_do_not_overlap(alice):
    client = alice.appmesh()
    for i in range(5):
        client.create_mesh(meshName=f"m{i}")
    seen = []
    page = api(alice, "/audit-events/?action=CreateMesh&limit=2").json()
    while True:
        assert len(page["results"]) <= 2
        seen += page["results"]
        if not page["next"]:
            break
        page = requests.get(page["next"], headers=alice.bearer, timeout=30).json()
    assert [e["resourceArn"].rsplit("/", 1)[1] for e in seen] == ["m4", "m3", "m2", "m1", "m0"]
    stamps = [e["at"] for e in seen]
    assert stamps == sorted(stamps, reverse=True)


def test_since_filters_and_bad_filters_name_the_parameter(alice):
    alice.appmesh().create_mesh(meshName="before")
    cut = timezone.now()
    alice.appmesh().create_mesh(meshName="after")
    since = quote(cut.isoformat())
    names = [
        e["resourceArn"] for e in api(alice, f"/audit-events/?since={since}").json()["results"]
    ]
    assert [n.rsplit("/", 1)[1] for n in names] == ["after"]
    future = quote((timezone.now() + timedelta(days=1)).isoformat())
    assert api(alice, f"/audit-events/?since={future}").json()["results"] == []

    bad = api(alice, "/audit-events/?since=yesterday")
    assert bad.status_code == 400 and list(bad.json()) == ["since"], bad.text


def test_audit_log_is_read_only(alice):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = requests.request(
            method, alice.base_url + "/api/v1/audit-events/", headers=alice.bearer, timeout=30
        )
        assert response.status_code == 405, (method, response.text)
