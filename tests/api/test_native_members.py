"""Members on the native API: admins manage them; the last admin cannot leave."""

import threading

import requests

from tenants.models import AuditEvent, Membership
from tests.support.personas import Persona


def api(persona: Persona, method: str, path: str, body=None) -> requests.Response:
    return requests.request(
        method, persona.base_url + "/api/v1" + path, json=body, headers=persona.bearer, timeout=30
    )


def key_for(alice: Persona, email: str, **fields) -> Persona:
    body = api(alice, "POST", "/access-keys/", {"email": email, **fields}).json()
    return Persona(
        email, alice.tenant, body["accessKeyId"], body["secretAccessKey"], alice.base_url
    )


def test_viewer_cannot_manage_members_even_with_a_read_write_key(alice, bob):
    bobs = key_for(alice, "bob@example.com", readOnly=False)
    assert api(bobs, "GET", "/meshes/").status_code == 200
    for method, path, body in [
        ("GET", "/members/", None),
        ("POST", "/members/", {"email": "x@example.com"}),
        ("PATCH", "/members/bob@example.com", {"role": "admin"}),
        ("DELETE", "/members/alice@example.com", None),
        ("POST", "/access-keys/", {}),
    ]:
        response = api(bobs, method, path, body)
        assert response.status_code == 403, (method, path, response.text)
        assert "admin" in response.json()["detail"]
    assert Membership.objects.get(user__email="bob@example.com").role == "viewer"


def test_the_last_admin_can_be_neither_demoted_nor_removed(alice):
    demote = api(alice, "PATCH", "/members/alice@example.com", {"role": "editor"})
    assert demote.status_code == 400
    assert "last admin" in demote.json()["role"][0]
    remove = api(alice, "DELETE", "/members/alice@example.com")
    assert remove.status_code == 400
    assert "last admin" in remove.json()["email"][0]
    assert Membership.objects.get(user__email="alice@example.com").role == "admin"

    # With a second admin, alice may step down, and her key stops managing the tenant.
    assert api(alice, "POST", "/members/", {"email": "dave@example.com", "role": "admin"}).ok
    stepped = api(alice, "PATCH", "/members/alice@example.com", {"role": "editor"})
    assert stepped.status_code == 200 and stepped.json()["role"] == "editor"
    assert api(alice, "GET", "/members/").status_code == 403
    change = AuditEvent.objects.get(action="ChangeMemberRole")
    assert change.before["role"] == "admin" and change.after["role"] == "editor"


def test_two_admins_demoting_each_other_at_once_leave_one_admin(alice):
    added = api(alice, "POST", "/members/", {"email": "dave@example.com", "role": "admin"})
    assert added.status_code == 201, added.text
    dave = key_for(alice, "dave@example.com")
    barrier = threading.Barrier(2)
    results = {}

    def demote(who: Persona, whom: str) -> None:
        barrier.wait()
        results[whom] = api(who, "PATCH", f"/members/{whom}", {"role": "viewer"}).status_code

    threads = [
        threading.Thread(target=demote, args=(alice, "dave@example.com")),
        threading.Thread(target=demote, args=(dave, "alice@example.com")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One wins; the other is refused: as the last admin (400), or, arriving after the
    # first committed, because its own key no longer belongs to an admin (403).
    assert sorted(results.values())[0] == 200 and sorted(results.values())[1] in (400, 403)
    assert Membership.objects.filter(tenant=alice.tenant, role="admin").count() == 1


def test_add_member_validates_and_changes_nothing_on_error(alice, bob):
    before = Membership.objects.count()
    cases = [
        ({"email": "bob@example.com"}, "email"),
        ({"email": "BOB@EXAMPLE.COM"}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "erin@example.com", "role": "owner"}, "role"),
        ({"email": "erin@example.com", "rol": "admin"}, "rol"),
        ({}, "email"),
    ]
    for payload, field in cases:
        response = api(alice, "POST", "/members/", payload)
        assert response.status_code == 400, (payload, response.text)
        assert field in response.json(), (payload, response.json())
    assert Membership.objects.count() == before
    bad_role = api(alice, "PATCH", "/members/bob@example.com", {"role": "root"})
    assert bad_role.status_code == 400 and "role" in bad_role.json()


def test_members_are_looked_up_by_email_in_any_case(alice, bob):
    response = api(alice, "GET", "/members/BOB@Example.com")
    assert response.status_code == 200 and response.json()["role"] == "viewer"
    assert api(alice, "GET", "/members/nobody@example.com").status_code == 404


def test_removing_a_member_ends_their_access_keys(alice):
    assert api(alice, "POST", "/members/", {"email": "erin@example.com", "role": "editor"}).ok
    erin = key_for(alice, "erin@example.com")
    assert api(erin, "GET", "/tenants/me").json()["role"] == "editor"
    assert api(alice, "DELETE", "/members/erin@example.com").status_code == 204
    assert api(erin, "GET", "/tenants/me").status_code == 401
    removed = AuditEvent.objects.get(action="RemoveMember")
    assert removed.before["accessKeys"] == [erin.key_id] and removed.after is None
