from django.core.management.base import BaseCommand, CommandError

from apps.accounts import throttle


class Command(BaseCommand):
    help = (
        "Clear the login throttle for a username and/or a client IP: manage.py login_unlock NAME [--ip ADDR]. "
        "For an owner locked out on a new browser while an attack goes on (a known browser is not locked out)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?")
        parser.add_argument("--ip", help="a client IP whose back-off to clear")

    def handle(self, *args, username, ip, **options):
        if username is None and ip is None:
            raise CommandError("give a username, --ip, or both")
        throttle.unlock(username=username, ip=ip)
        self.stdout.write(f"login throttle cleared for {', '.join(x for x in (username, ip) if x)}")
