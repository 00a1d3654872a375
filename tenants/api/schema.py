"""How the OpenAPI document describes bearer access keys."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.auth.BearerKeyAuthentication"
    name = "accessKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "<access key id>:<secret access key>",
            "description": (
                "An access key of the tenant: `Authorization: Bearer AKMP…:<secret>`. "
                "Read-only keys may only read; tenant management needs an admin's key."
            ),
        }
