"""Endpoint.target_port: where an endpoint's address accepts its listener port's
connections (existing rows: the listener port itself), part of the unique constraint so
two explicit-mode proxies on one address register apart; ProxyInstance keeps the
explicit-mode ports it declared."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("meshapi", "0005_proxy_variant_ports"),
    ]

    operations = [
        migrations.AddField(
            model_name="endpoint",
            name="target_port",
            field=models.PositiveIntegerField(default=0),
            preserve_default=False,
        ),
        migrations.RunSQL(
            "UPDATE meshapi_endpoint SET target_port = port", reverse_sql=migrations.RunSQL.noop
        ),
        migrations.RemoveConstraint(model_name="endpoint", name="uniq_endpoint"),
        migrations.AddConstraint(
            model_name="endpoint",
            constraint=models.UniqueConstraint(
                fields=("virtual_node", "port", "address", "target_port", "source"),
                name="uniq_endpoint",
            ),
        ),
        migrations.AlterModelOptions(
            name="endpoint",
            options={"ordering": ["port", "address", "target_port", "source"]},
        ),
        migrations.AddField(
            model_name="proxyinstance",
            name="app_port",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="proxyinstance",
            name="ingress_port",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="proxyinstance",
            name="egress_port",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
