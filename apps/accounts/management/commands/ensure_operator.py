import os

from django.core.management.base import BaseCommand

from apps.accounts.roles import OPERATOR
from apps.accounts.services import user_ensure


class Command(BaseCommand):
    help = "Ensure the operator account (HFT_ADMIN_USERNAME / HFT_ADMIN_PASSWORD); print a generated password once."

    def handle(self, *args, **options):
        username = os.environ.get("HFT_ADMIN_USERNAME", "operator")
        password = os.environ.get("HFT_ADMIN_PASSWORD") or None
        _, generated = user_ensure(username=username, role=OPERATOR, password=password)
        if generated:
            self.stdout.write(
                f"created user '{username}' password '{generated}' (shown once; set HFT_ADMIN_PASSWORD to choose)"
            )
        else:
            self.stdout.write(f"operator account '{username}' ready")
