"""`manage.py adduser NAME`: an account that can log in, for an operator (no sign-up needed)."""
import getpass
import sys

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create a user who can log in (--admin: with /admin/ too). The password is asked for, or read from standard input with --password-stdin."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--admin", action="store_true", help="staff and superuser: may use /admin/")
        parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input (scripts)")

    def handle(self, *args, username, email, admin, password_stdin, **options):
        User = get_user_model()
        username = username.strip()
        if not username:
            raise CommandError("Give a username.")
        if User.objects.filter(username=username).exists():
            raise CommandError(f"There is already a user called “{username}”; change their password with `manage.py changepassword {username}`.")
        password = self._password(password_stdin)
        user = User(username=username, email=email, is_staff=admin, is_superuser=admin)
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        user.set_password(password)
        user.save()
        role = "an administrator (/admin/)" if admin else "a user"
        self.stdout.write(self.style.SUCCESS(f"Created {role} “{username}”: they can log in now."))

    def _password(self, from_stdin):
        if from_stdin:
            password = sys.stdin.readline().rstrip("\n")
        elif sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("The two passwords differ.")
        else:
            raise CommandError("No terminal to ask for a password: pass it on standard input with --password-stdin.")
        if not password:
            raise CommandError("The password is empty.")
        return password
