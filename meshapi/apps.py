from django.apps import AppConfig


class MeshapiConfig(AppConfig):
    name = "meshapi"
    default_auto_field = "django.db.models.BigAutoField"
