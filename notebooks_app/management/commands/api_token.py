"""`manage.py api_token USER --name NAME --scopes read,run [--expires DAYS]`: a personal API token
for USER, printed once (docs/api.md); `--revoke NAME` revokes USER's live token of that name."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from notebooks_app.models import SCOPES, TOKEN_MAX_DAYS, TOKEN_NAME_MAX, ApiToken, parse_scopes


class Command(BaseCommand):
    help = "Make a personal API token for a user and print it (shown only this once), or revoke one with --revoke."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", help="what the token is for, e.g. 'nightly report' (unique among the user's live tokens)")
        parser.add_argument("--scopes", help=f"comma-separated, from {', '.join(scope for scope, _ in SCOPES)}")
        parser.add_argument("--expires", metavar="DAYS", help=f"days until it stops working (1 to {TOKEN_MAX_DAYS}; default: never)")
        parser.add_argument("--revoke", metavar="NAME", help="revoke the user's live token of this name instead")

    def handle(self, *args, username, name, scopes, expires, revoke, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"There is no user called “{username}”.")
        if revoke is not None:
            return self._revoke(user, revoke)
        name = (name or "").strip()
        if not name or len(name) > TOKEN_NAME_MAX:
            raise CommandError(f"Give the token a --name of 1 to {TOKEN_NAME_MAX} characters.")
        try:
            scopes = parse_scopes(scopes or "")
        except ValueError as exc:
            raise CommandError(f"--scopes: {exc}") from None
        days = self._days(expires)
        taken = f"{username} already has a live token called “{name}”; revoke it first (--revoke) or choose another name."
        if ApiToken.objects.filter(owner=user, name=name, revoked_at__isnull=True).exists():
            raise CommandError(taken)
        try:
            with transaction.atomic():
                token, secret = ApiToken.objects.issue(user, name=name, scopes=scopes, expires_in_days=days)
        except IntegrityError:  # made a moment ago by someone else
            raise CommandError(taken) from None
        until = f", until {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else ""
        self.stderr.write(f"Token “{name}” for {username} ({', '.join(scopes)}{until}). Shown only now; the server keeps only its hash:")
        self.stdout.write(secret)

    def _days(self, expires):
        if expires is None:
            return None
        try:
            days = int(expires)
        except ValueError:
            raise CommandError(f"--expires takes a whole number of days, not {expires!r}.") from None
        if not 1 <= days <= TOKEN_MAX_DAYS:
            raise CommandError(f"--expires must be 1 to {TOKEN_MAX_DAYS} days, not {days}.")
        return days

    def _revoke(self, user, name):
        token = ApiToken.objects.filter(owner=user, name=name, revoked_at__isnull=True).first()
        if token is None:
            raise CommandError(f"{user.get_username()} has no live token called “{name}”.")
        token.revoke()
        self.stdout.write(self.style.SUCCESS(f"Revoked “{name}” of {user.get_username()}."))
