from django.db import models


class IdempotencyRecord(models.Model):
    """The answer given to a create/update carrying a clientToken, so a retry gets it again."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    operation = models.CharField(max_length=64)
    client_token = models.CharField(max_length=255)
    request_digest = models.CharField(max_length=64)
    response = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "operation", "client_token"], name="uniq_client_token"
            )
        ]

    def __str__(self) -> str:
        return f"{self.operation}:{self.client_token}"
