# A version's manifest and type versions, stored once per (mesh, version) in ConfigManifest
# instead of in every ProxyVersion row (a change reaching 1,000 proxies wrote them 1,000
# times).

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Exists, OuterRef

BATCH = 2000


def to_manifests(apps, schema_editor):
    """One manifest per (mesh, version) of the stored versions, taken from the first row
    of each; versions whose variant is gone (see ProxyVersion.proxy) have no mesh and are
    deleted, as the hourly prune would."""
    ProxyConfig = apps.get_model("meshapi", "ProxyConfig")
    ProxyVersion = apps.get_model("meshapi", "ProxyVersion")
    ConfigManifest = apps.get_model("meshapi", "ConfigManifest")
    ProxyVersion.objects.exclude(
        Exists(ProxyConfig.objects.filter(pk=OuterRef("proxy_id")))
    ).delete()
    first: dict[tuple[int, str], int] = {}  # (mesh, version) → a version pk that has it
    members: dict[tuple[int, str], list[int]] = {}
    rows = ProxyVersion.objects.order_by("pk").values_list("pk", "proxy__mesh_id", "version")
    for pk, mesh_id, version in rows.iterator(chunk_size=BATCH):
        first.setdefault((mesh_id, version), pk)
        members.setdefault((mesh_id, version), []).append(pk)
    keys = list(first)
    for start in range(0, len(keys), BATCH):
        chunk = keys[start : start + BATCH]
        sources = ProxyVersion.objects.in_bulk([first[key] for key in chunk])
        for key in chunk:
            source = sources[first[key]]
            manifest = ConfigManifest.objects.create(
                mesh_id=key[0],
                version=key[1],
                type_versions=source.type_versions,
                resources=source.resources,
            )
            pks = members[key]
            for at in range(0, len(pks), BATCH):
                ProxyVersion.objects.filter(pk__in=pks[at : at + BATCH]).update(
                    manifest_id=manifest.pk
                )


def from_manifests(apps, schema_editor):
    """Copy each manifest back into the versions that use it."""
    ProxyVersion = apps.get_model("meshapi", "ProxyVersion")
    ConfigManifest = apps.get_model("meshapi", "ConfigManifest")
    for manifest in ConfigManifest.objects.order_by("pk").iterator(chunk_size=BATCH):
        ProxyVersion.objects.filter(manifest_id=manifest.pk).update(
            type_versions=manifest.type_versions, resources=manifest.resources
        )


class Migration(migrations.Migration):
    dependencies = [
        ("meshapi", "0009_proxy_version_no_constraint"),
    ]

    operations = [
        migrations.CreateModel(
            name="ConfigManifest",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("version", models.CharField(max_length=64)),
                ("type_versions", models.JSONField(default=dict)),
                ("resources", models.JSONField(default=dict)),
                (
                    "mesh",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="meshapi.mesh",
                    ),
                ),
            ],
        ),
        migrations.AddConstraint(
            model_name="configmanifest",
            constraint=models.UniqueConstraint(
                fields=("mesh", "version"), name="uniq_config_manifest"
            ),
        ),
        migrations.AddField(
            model_name="proxyversion",
            name="manifest",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="meshapi.configmanifest",
            ),
        ),
        migrations.RunPython(to_manifests, from_manifests, elidable=True),
        migrations.AlterField(
            model_name="proxyversion",
            name="manifest",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="meshapi.configmanifest",
            ),
        ),
        migrations.RemoveField(model_name="proxyversion", name="resources"),
        migrations.RemoveField(model_name="proxyversion", name="type_versions"),
    ]
