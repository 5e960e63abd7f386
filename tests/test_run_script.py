"""`scripts/run` itself, as people start it: the demo is made once and a changed password stays
changed across restarts; `scripts/run --team` asks for a real admin, runs with DEBUG off, keeps
its generated SECRET_KEY in a file and serves its static files."""
import os
import re
import stat
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest

from notebooks_app.views import NOTEBOOK_NOT_FOUND
from tests.live import ROOT, free_port, login, stop, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RUN = str(ROOT / "scripts" / "run")
# What would make scripts/run leave the embedded default, or fix what it should make itself.
HIDDEN = (
    "DATABASE_URL", "REDIS_URL", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE", "PORT", "SECRET_KEY",
    "SECRET_KEY_FILE", "ALLOWED_HOSTS", "TEAM_MODE", "TEAM_HOST",
)
LOGIN_HINT = "demo / demo-notebook"


@pytest.fixture
def run_env(tmp_path_factory, tmp_path):
    """scripts/run's environment: a SQLite file and key file of this test's own; one STATIC_ROOT
    for the module (collectstatic into it again is quicker than into an empty one)."""
    env = {key: value for key, value in os.environ.items() if key not in HIDDEN}
    env.update(
        SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        SECRET_KEY_FILE=str(tmp_path / "secret.key"),
        STATIC_ROOT=str(tmp_path_factory.getbasetemp() / "run-script-static"),
    )
    return env


class Started:
    """One `scripts/run` in a process group of its own, its output in a log file; stop() ends the
    whole group (the script execs the server, which starts the kernel's processes)."""

    def __init__(self, args, env, log_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "wb") as log:
            argv = [RUN, *[arg.format(port=self.port) for arg in args]]
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self):
        try:
            wait_http(f"{self.url}/accounts/login/", seconds=240, proc=self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        stop(self.proc)

    @property
    def printed(self):
        return self.log_path.read_text()


def get(url, cookie=None):
    """(status, body) of a GET, errors included."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def manage(env, *args):
    return subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True)


def test_demo_is_made_once_and_a_changed_password_survives_restarts(run_env, tmp_path):
    with Started(["{port}"], run_env, tmp_path / "first.log") as first:
        assert LOGIN_HINT in first.printed, first.printed
        assert f"{first.url}/admin/password_change/ or with manage.py changepassword demo" in first.printed
        login(first.url, "demo", "demo-notebook")
    manage(run_env, "shell", "-c", "from django.contrib.auth.models import User; u = User.objects.get(username='demo'); u.set_password('ours-alone-now'); u.save()")
    for start in ("second", "third"):
        with Started(["{port}"], run_env, tmp_path / f"{start}.log") as server:
            assert "demo-notebook" not in server.printed, server.printed
            assert login(server.url, "demo", "ours-alone-now")
            with pytest.raises(AssertionError, match="login failed"):
                login(server.url, "demo", "demo-notebook")


def test_team_mode_without_a_terminal_or_users_says_how_to_make_an_admin(run_env, tmp_path):
    done = subprocess.run([RUN, "--team", f"127.0.0.1:{free_port()}"], cwd=ROOT, env=run_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "no users yet" in done.stderr, done.stderr
    assert f"SQLITE_PATH={run_env['SQLITE_PATH']} .venv/bin/python manage.py createsuperuser" in done.stderr
    assert "demo-notebook" not in done.stdout + done.stderr


def test_team_mode_serves_with_debug_off_a_kept_key_and_static_files(run_env, tmp_path):
    manage(run_env, "migrate", "--noinput")
    admin_env = dict(run_env, DJANGO_SUPERUSER_PASSWORD="admin-password-1")
    manage(admin_env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    key_file = tmp_path / "secret.key"
    with Started(["--team", "127.0.0.1:{port}"], run_env, tmp_path / "team.log") as server:
        assert "demo-notebook" not in server.printed
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text()
        cookie = login(server.url, "admin", "admin-password-1")

        status, page = get(f"{server.url}/notebooks/{uuid.uuid4()}/", cookie)
        assert status == 404
        assert NOTEBOOK_NOT_FOUND in page and "Page not found (404)" not in page and "URLconf" not in page
        status, page = get(f"{server.url}/no-such-page/", cookie)
        assert status == 404 and "There is no page at this address." in page and "URLconf" not in page

        status, page = get(f"{server.url}/accounts/login/")
        static = re.search(r'/static/[\w/.-]+\.[0-9a-f]{12}\.(?:css|js)', page).group(0)
        assert get(f"{server.url}{static}")[0] == 200
    with Started(["--team", "127.0.0.1:{port}"], run_env, tmp_path / "team-again.log") as server:
        assert key_file.read_text() == key
        # The same key signs sessions: the first start's session still logs its user in.
        status, page = get(f"{server.url}/", cookie)
        assert status == 200 and "admin" in page and 'name="password"' not in page
