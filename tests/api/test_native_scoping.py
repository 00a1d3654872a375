"""The base viewset: tenant scoping, declared actions only, writes all-or-nothing."""

import pytest
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate

from meshapi.api.views import MeshViewSet
from meshapi.services import resources
from meshapi.services.kinds import MESH
from tenants.models import AccessKey, AuditEvent, Membership, Role
from tenants.permissions import key_allows
from tenants.scoping import Access, TenantScopedViewSet, UndeclaredAction
from tenants.services import create_tenant

factory = APIRequestFactory()


@pytest.fixture
def keys(transactional_db):
    acme, acme_key = create_tenant("acme", "alice@example.com")
    globex, globex_key = create_tenant("globex", "charlie@example.com")
    for tenant, name in ((acme, "shop"), (acme, "acme-only"), (globex, "shop")):
        resources.create(tenant, MESH, resources.Writer("t"), mesh_name=name, name=name, spec={})
    return acme_key.key, globex_key.key


def call(viewset, actions, key, method="get", **kwargs):
    request = getattr(factory, method)("/", format="json")
    force_authenticate(request, token=AccessKey.objects.select_related("tenant").get(pk=key.pk))
    return viewset.as_view(actions)(request, **kwargs)


def test_lists_and_lookups_are_narrowed_to_the_callers_tenant(keys):
    acme, globex = keys
    listed = call(MeshViewSet, {"get": "list"}, globex).data["results"]
    assert [m["name"] for m in listed] == ["shop"]
    assert listed[0]["arn"].split(":")[4] == globex.tenant.account_id
    assert call(MeshViewSet, {"get": "retrieve"}, acme, name="acme-only").status_code == 200
    # Another tenant's object does not exist for the caller: 404, never 403.
    assert call(MeshViewSet, {"get": "retrieve"}, globex, name="acme-only").status_code == 404


class Sneaky(MeshViewSet):
    @action(detail=False, methods=["get"])
    def everything(self, request):
        return Response([m.name for m in self.get_queryset()])


class Declared(Sneaky):
    action_access = {"everything": Access.READ}


def test_an_action_the_base_was_not_told_about_is_refused(keys):
    acme, _ = keys
    refused = call(Sneaky, {"get": "everything"}, acme)
    assert refused.status_code == 403
    view = Sneaky(action="everything", request=None, kwargs={})
    with pytest.raises(UndeclaredAction):
        view.get_queryset()
    # Declared, the same action runs, and still only sees the caller's rows.
    assert sorted(call(Declared, {"get": "everything"}, acme).data) == ["acme-only", "shop"]


class HalfWrite(TenantScopedViewSet):
    queryset = AuditEvent.objects.all()
    serializer_class = serializers.Serializer

    def create(self, request):
        AuditEvent.objects.create(tenant=self.tenant, actor="t", action="Half", resource_type="x")
        raise serializers.ValidationError({"name": ["Something was wrong with it."]})


def test_a_write_that_fails_leaves_nothing_behind(keys):
    acme, _ = keys
    response = call(HalfWrite, {"post": "create"}, acme, method="post")
    assert response.status_code == 400 and "name" in response.data
    assert not AuditEvent.objects.filter(action="Half").exists()


@pytest.mark.parametrize(
    "role, read_only, write, admin_only, allowed",
    [
        (Role.VIEWER, True, False, False, True),
        (Role.VIEWER, False, True, False, False),
        (Role.EDITOR, True, True, False, False),
        (Role.EDITOR, False, True, False, True),
        (Role.EDITOR, False, False, True, False),
        (Role.ADMIN, True, False, True, True),
        (Role.ADMIN, True, True, True, False),
        (Role.ADMIN, False, True, True, True),
    ],
)
def test_what_a_key_may_do(role, read_only, write, admin_only, allowed):
    key = AccessKey(read_only=read_only, membership=Membership(pk=1, role=role))
    assert key_allows(key, write=write, admin_only=admin_only) is allowed
