from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("meshapi", "0003_proxy_instances"),
    ]

    operations = [
        migrations.AddField(
            model_name="mesh",
            name="mtls_mode",
            field=models.CharField(
                choices=[
                    ("DISABLED", "Disabled"),
                    ("PERMISSIVE", "Permissive"),
                    ("STRICT", "Strict"),
                ],
                default="DISABLED",
                max_length=16,
            ),
        ),
    ]
