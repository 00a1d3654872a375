"""Any saved or deleted key, membership, user or tenant drops every cached access key.

Signals rather than calls in each service, so a new write path cannot forget it. A bulk
`QuerySet.update()` sends no signal: use it only for fields auth does not read
(`last_used_at`).
"""

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save

from tenants import keycache
from tenants.models import AccessKey, Membership, Tenant


def _changed(sender, **kwargs) -> None:
    keycache.invalidate()


def connect() -> None:
    for model in (AccessKey, Membership, Tenant, get_user_model()):
        post_save.connect(_changed, sender=model, dispatch_uid=f"keycache-save-{model.__name__}")
        post_delete.connect(
            _changed, sender=model, dispatch_uid=f"keycache-delete-{model.__name__}"
        )
