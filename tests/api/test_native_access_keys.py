"""Access keys on the native API: secrets once, revocation and expiry on both surfaces."""

import json
from datetime import timedelta

import pytest
import requests
from botocore.exceptions import ClientError
from django.utils import timezone

from tenants.models import AccessKey, AuditEvent
from tests.support.personas import Persona


def api(persona: Persona, method: str, path: str, body=None) -> requests.Response:
    return requests.request(
        method, persona.base_url + "/api/v1" + path, json=body, headers=persona.bearer, timeout=30
    )


def as_key(persona: Persona, body: dict) -> Persona:
    """The persona's tenant, calling with a key the API just returned."""
    return Persona(
        "new", persona.tenant, body["accessKeyId"], body["secretAccessKey"], persona.base_url
    )


def appmesh_error(persona: Persona) -> str:
    with pytest.raises(ClientError) as caught:
        persona.appmesh().list_meshes()
    return caught.value.response["Error"]["Code"]


def test_secret_is_shown_once_then_never(alice):
    created = api(alice, "POST", "/access-keys/", {"description": "ci", "readOnly": False})
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secretAccessKey"]
    new = as_key(alice, body)

    # The key works on both surfaces...
    me = api(new, "GET", "/tenants/me")
    assert me.json()["accessKeyId"] == body["accessKeyId"]
    assert new.appmesh().list_meshes()["meshes"] == []
    # ...and no answer ever carries the secret again.
    for path in ("/access-keys/", f"/access-keys/{body['accessKeyId']}", "/tenants/me"):
        for who in (alice, new):
            text = api(who, "GET", path).text
            assert secret not in text and "secretAccessKey" not in text, path
    assert secret not in api(alice, "GET", "/audit-events/").text
    # At rest it is encrypted, not stored as given.
    assert secret not in AccessKey.objects.get(key_id=body["accessKeyId"]).secret_encrypted


@pytest.mark.parametrize("how", ["revoke", "delete"])
def test_revoked_key_is_refused_on_both_surfaces(alice, how):
    body = api(alice, "POST", "/access-keys/", {"description": "soon revoked"}).json()
    new = as_key(alice, body)
    assert api(new, "GET", "/tenants/me").status_code == 200
    assert new.appmesh().list_meshes()["meshes"] == []

    key_path = f"/access-keys/{body['accessKeyId']}"
    if how == "revoke":
        revoked = api(alice, "POST", key_path + "/revoke")
        assert revoked.status_code == 200 and revoked.json()["state"] == "revoked", revoked.text
    else:
        assert api(alice, "DELETE", key_path).status_code == 204

    refused = api(new, "GET", "/tenants/me")
    assert refused.status_code == 401, refused.text
    assert "revoked" in refused.json()["detail"]
    assert appmesh_error(new) == "UnrecognizedClientException"
    # Still listed, as revoked; revoking again changes nothing and is not audited twice.
    assert api(alice, "GET", key_path).json()["state"] == "revoked"
    assert api(alice, "POST", key_path + "/revoke").status_code == 200
    events = AuditEvent.objects.filter(action="RevokeAccessKey", resource_arn=body["accessKeyId"])
    assert events.count() == 1
    assert "alice@example.com" in events.get().actor


def test_expired_key_is_refused_on_both_surfaces(alice):
    soon = (timezone.now() + timedelta(hours=1)).isoformat()
    body = api(alice, "POST", "/access-keys/", {"expiresAt": soon}).json()
    new = as_key(alice, body)
    assert api(new, "GET", "/tenants/me").status_code == 200

    # An hour passes.
    AccessKey.objects.filter(key_id=body["accessKeyId"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert api(new, "GET", "/tenants/me").status_code == 401
    assert appmesh_error(new) == "UnrecognizedClientException"
    assert api(alice, "GET", f"/access-keys/{body['accessKeyId']}").json()["state"] == "expired"


def test_expiry_in_the_past_is_refused_naming_the_field(alice):
    before = AccessKey.objects.count()
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    response = api(alice, "POST", "/access-keys/", {"expiresAt": past})
    assert response.status_code == 400
    assert list(response.json()) == ["expiresAt"]
    assert AccessKey.objects.count() == before


def test_bad_input_names_the_field_and_creates_nothing(alice):
    before = AccessKey.objects.count()
    cases = [
        ({"descripton": "typo"}, "descripton"),
        ({"readOnly": "maybe"}, "readOnly"),
        ({"description": "x" * 201}, "description"),
        ({"email": "not an email"}, "email"),
        ({"email": "nobody@example.com"}, "email"),
    ]
    for payload, field in cases:
        response = api(alice, "POST", "/access-keys/", payload)
        assert response.status_code == 400, (payload, response.text)
        assert field in response.json(), (payload, response.json())
    malformed = requests.post(
        alice.base_url + "/api/v1/access-keys/",
        data="{not json",
        headers={**alice.bearer, "Content-Type": "application/json"},
        timeout=30,
    )
    assert malformed.status_code == 400
    oversized = api(alice, "POST", "/access-keys/", {"description": "x" * (1024 * 1024)})
    assert oversized.status_code == 400 and "larger than" in oversized.json()["detail"]
    assert AccessKey.objects.count() == before


def test_admin_creates_a_key_for_another_member(alice, bob):
    response = api(alice, "POST", "/access-keys/", {"email": "BOB@example.com"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == "bob@example.com" and body["role"] == "viewer"
    bobs = as_key(alice, body)
    me = api(bobs, "GET", "/tenants/me").json()
    assert me["email"] == "bob@example.com" and me["role"] == "viewer"
    # A read-write key does not make a viewer an editor.
    with pytest.raises(ClientError) as caught:
        bobs.appmesh().create_mesh(meshName="nope")
    assert caught.value.response["Error"]["Code"] == "ForbiddenException"


def test_an_admins_read_only_key_reads_keys_but_cannot_create_them(alice):
    body = api(alice, "POST", "/access-keys/", {"readOnly": True}).json()
    reader = as_key(alice, body)
    assert api(reader, "GET", "/access-keys/").status_code == 200
    refused = api(reader, "POST", "/access-keys/", {})
    assert refused.status_code == 403
    assert "read-only" in refused.json()["detail"]


def test_key_writes_are_audited(alice):
    body = api(alice, "POST", "/access-keys/", {"description": "audited"}).json()
    api(alice, "POST", f"/access-keys/{body['accessKeyId']}/revoke")
    events = api(alice, "GET", "/audit-events/?resourceType=accessKey").json()["results"]
    mine = [e for e in events if e["resourceArn"] == body["accessKeyId"]]
    assert [e["action"] for e in mine] == ["RevokeAccessKey", "CreateAccessKey"]
    assert all("alice@example.com" in e["actor"] for e in mine)
    assert json.dumps(mine).count(body["secretAccessKey"]) == 0
