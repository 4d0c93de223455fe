import getpass

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.roles import ROLES
from apps.accounts.services import user_ensure


class Command(BaseCommand):
    help = (
        "Create or update a user with a role: manage.py add_user NAME --role viewer (asks for the password)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", choices=ROLES, required=True)
        parser.add_argument("--password", help="omit to be prompted")

    def handle(self, *args, username, role, password, **options):
        password = password or getpass.getpass(f"password for {username}: ")
        if len(password) < 10:
            raise CommandError("password must be at least 10 characters")
        user_ensure(username=username, role=role, password=password)
        self.stdout.write(f"user '{username}' has role {role}")
