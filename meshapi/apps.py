from django.apps import AppConfig


class MeshapiConfig(AppConfig):
    name = "meshapi"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from meshapi import receivers  # noqa: F401 - connects the compile-on-change receiver
