import getpass
import secrets
import sys

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.roles import ROLES
from apps.accounts.services import user_ensure


class Command(BaseCommand):
    help = (
        "Create or update a user with a role: manage.py add_user NAME --role viewer (asks for the password at a "
        "terminal; without one, generates it and prints it once)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", choices=ROLES, required=True)
        parser.add_argument("--password", help="omit to be prompted (or, without a terminal, to get a generated one)")

    def handle(self, *args, username, role, password, **options):
        generated = False
        if not password:
            if sys.stdin.isatty():
                password = getpass.getpass(f"password for {username}: ")
            else:  # a script or CI: no prompt to answer, so make a strong one and show it once
                password, generated = secrets.token_urlsafe(18), True
        if len(password) < 10:
            raise CommandError("password must be at least 10 characters")
        user_ensure(username=username, role=role, password=password)
        self.stdout.write(f"user '{username}' has role {role}" + (f" password '{password}'" if generated else ""))
