import json

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from tenants.services import create_tenant


class Command(BaseCommand):
    help = "Create a tenant with its first admin and a read-write access key (secret shown once)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--admin", required=True, help="email of the first admin")
        parser.add_argument("--region", default="us-east-1")
        parser.add_argument("--account-id", default="", help="12 digits; random if omitted")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **opts):
        account = opts["account_id"]
        if account and not (len(account) == 12 and account.isdigit()):
            raise CommandError("--account-id: must be exactly 12 digits.")
        try:
            tenant, new_key = create_tenant(
                opts["name"], opts["admin"], region=opts["region"], account_id=account
            )
        except IntegrityError as exc:
            raise CommandError(
                f"name: a tenant '{opts['name']}' (or that account id) exists."
            ) from exc
        result = {
            "tenant": tenant.slug,
            "accountId": tenant.account_id,
            "region": tenant.default_region,
            "accessKeyId": new_key.key.key_id,
            "secretAccessKey": new_key.secret,
        }
        if opts["json"]:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(f"tenant {tenant.slug} (account {tenant.account_id}) created")
        self.stdout.write(f"access key id:     {new_key.key.key_id}")
        self.stdout.write(f"secret access key: {new_key.secret}   (shown once)")
