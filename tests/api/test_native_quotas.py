"""Quotas: every member reads them; an operator changes them; the App Mesh API obeys."""

import pytest
import requests
from botocore.exceptions import ClientError
from django.core.management import CommandError, call_command

from tenants.models import AuditEvent, QuotaOverride
from tests.support.personas import Persona


def quota(persona: Persona, name: str) -> dict:
    response = requests.get(
        f"{persona.base_url}/api/v1/quotas/{name}", headers=persona.bearer, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_set_quota_shows_in_the_api_and_is_enforced(alice, bob, charlie):
    assert quota(bob, "meshes") == {
        "name": "meshes",
        "limit": 15,
        "default": 15,
        "overridden": False,
    }
    call_command("set_quota", "acme", "meshes", "2")
    assert quota(bob, "meshes") == {"name": "meshes", "limit": 2, "default": 15, "overridden": True}
    assert quota(charlie, "meshes")["limit"] == 15  # another tenant is not affected

    client = alice.appmesh()
    client.create_mesh(meshName="one")
    client.create_mesh(meshName="two")
    with pytest.raises(ClientError) as caught:
        client.create_mesh(meshName="three")
    assert caught.value.response["Error"]["Code"] == "LimitExceededException"
    assert "meshes" in caught.value.response["Error"]["Message"]

    call_command("set_quota", "acme", "meshes", "default")
    assert quota(alice, "meshes")["overridden"] is False
    client.create_mesh(meshName="three")
    changes = AuditEvent.objects.filter(tenant=alice.tenant, action="SetQuota").order_by("id")
    assert [(e.before["limit"], e.after["limit"]) for e in changes] == [(15, 2), (2, 15)]


@pytest.mark.parametrize(
    "args, field",
    [
        (["nosuch", "meshes", "3"], "tenant:"),
        (["acme", "mesh", "3"], "name:"),
        (["acme", "meshes", "-1"], "limit:"),
        (["acme", "meshes", "three"], "limit:"),
        (["acme", "meshes", "99999999999"], "limit:"),
    ],
)
def test_set_quota_bad_input_names_the_argument(alice, args, field):
    with pytest.raises(CommandError) as caught:
        call_command("set_quota", *args)
    assert str(caught.value).startswith(field), caught.value
    assert not QuotaOverride.objects.exists()


def test_unknown_quota_is_not_found(alice):
    response = requests.get(
        f"{alice.base_url}/api/v1/quotas/nosuch", headers=alice.bearer, timeout=30
    )
    assert response.status_code == 404
    assert "meshes" in response.json()["detail"]  # says which names exist
