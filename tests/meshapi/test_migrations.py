"""Migration 0010 moves each version's manifest into one ConfigManifest per (mesh, version),
and back."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from meshapi.models import ConfigManifest, ProxyConfig, ProxyVersion
from tenants.services import create_tenant
from tests.workers import meshes

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("meshapi", "0009_proxy_version_no_constraint")]
AFTER = [("meshapi", "0010_config_manifest")]


def migrate(target: list[tuple[str, str]]):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


def test_manifests_move_out_of_the_versions_and_back(embedded):
    mesh = meshes.shop(create_tenant("acme", "alice@example.com")[0])
    meshes.split(mesh.tenant, "shop", 30, 70)
    expected = {
        v.pk: (v.version, v.type_versions, v.resources)
        for v in ProxyVersion.objects.select_related("manifest")
    }
    gone = ProxyConfig.objects.filter(mesh=mesh).order_by("pk").first()
    try:
        old = migrate(BEFORE)
        OldVersion = old.get_model("meshapi", "ProxyVersion")
        assert {
            pk: (version, types, manifest)
            for pk, version, types, manifest in OldVersion.objects.values_list(
                "pk", "version", "type_versions", "resources"
            )
        } == expected
        orphans = set(OldVersion.objects.filter(proxy_id=gone.pk).values_list("pk", flat=True))
        old.get_model("meshapi", "ProxyConfig").objects.filter(pk=gone.pk).update(current=None)
        with connection.cursor() as cursor:  # as the race named at ProxyVersion.proxy leaves
            cursor.execute(
                f"DELETE FROM {ProxyConfig._meta.db_table} WHERE id = %s",  # noqa: S608
                [gone.pk],
            )
    finally:
        migrate(AFTER)
    versions = ProxyVersion.objects.select_related("manifest")
    assert {v.pk: (v.version, v.type_versions, v.resources) for v in versions} == {
        pk: row for pk, row in expected.items() if pk not in orphans
    }
    assert {(v.manifest.mesh_id, v.manifest.version) for v in versions} == {
        (mesh.id, v.version) for v in versions
    }
    assert ConfigManifest.objects.count() == len({v.version for v in versions})
