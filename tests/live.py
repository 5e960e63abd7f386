"""Helpers for tests that talk to real server processes over HTTP and WebSocket."""
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url, proc=None):
    """True once `url` answers at all (any HTTP status); fails if `proc` (its server) exited."""
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"server exited with {proc.returncode}")
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def wait_http(url, seconds=40, proc=None):
    eventually(lambda: answers(url, proc), seconds, f"{url} to answer", interval=0.1).wait()


def collected_static(env):
    """`manage.py collectstatic` into the STATIC_ROOT `env` names, unless it holds a manifest
    newer than every static file (scripts/test collects into a fresh one per run; a benchmark
    run alone may find an old one, which would miss new files)."""
    static_root = Path(env.get("STATIC_ROOT") or ROOT / "staticfiles")
    manifest = static_root / "staticfiles.json"
    newest = max((p.stat().st_mtime for p in (ROOT / "static").rglob("*") if p.is_file()), default=0)
    if not manifest.exists() or manifest.stat().st_mtime < newest:
        subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=ROOT, env=env, check=True)


def start_daphne(port, env, log_path):
    """Daphne as the README's production steps start it: the project's ASGI app, DEBUG off
    (static files from the collected STATIC_ROOT, served by WhiteNoise)."""
    collected_static(env)
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "notebookproject.asgi:application"],
        cwd=ROOT,
        env=dict(env, DEBUG="0"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_http(f"http://127.0.0.1:{port}/accounts/login/", proc=proc)
    return proc


def start_worker(channels, env, log_path):
    """A kernel worker process (`manage.py runworker <channels>`) in its own process group,
    so stop() also ends the runner subprocesses it started. Returns once it has logged that
    it runs (messages sent before then wait in Redis anyway)."""
    log_path = Path(log_path)
    start = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runworker", *channels],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def running():
        if proc.poll() is not None:
            raise RuntimeError(f"kernel worker exited with {proc.returncode}; see {log_path}")
        return b"Running worker for channels" in log_path.read_bytes()[start:]

    eventually(running, 40, f"the kernel worker to start (see {log_path})", interval=0.05).wait()
    return proc


def stop(proc):
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, 15)
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


class Server:
    """One Daphne process serving the production ASGI app (start_daphne) on a port of its own,
    on the test database."""

    def __init__(self, log_name):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = ROOT / "var" / log_name
        self.proc = None

    def start(self):
        from tests.conftest import database_url_for_tests

        self.log_path.parent.mkdir(exist_ok=True)
        env = dict(os.environ, DATABASE_URL=database_url_for_tests())
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.proc = start_daphne(self.port, env, self.log_path)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        stop(self.proc)


def login(base_url, username, password):
    """Log in through /accounts/login/ as a browser would; returns the session cookie header."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base_url}/accounts/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token}).encode()
    opener.open(urllib.request.Request(f"{base_url}/accounts/login/", data=data, headers={"Referer": f"{base_url}/accounts/login/"}))
    cookies = {c.name: c.value for c in jar}
    assert "sessionid" in cookies, "login failed"
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def upgrade_request(host, path, origin, cookie):
    """A WebSocket handshake request written by hand (clients that read raw frames)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {origin}\r\nCookie: {cookie}\r\n\r\n"
    ).encode()


def server_frames(data):
    """([(opcode, payload), ...] of the whole frames at the start of `data`, the bytes after them),
    for frames as a server sends them: unmasked and, from this one, unfragmented (RFC 6455 §5.2)."""
    out, at = [], 0
    while at + 2 <= len(data):
        opcode, length, start = data[at] & 0x0F, data[at + 1] & 0x7F, at + 2
        if length == 126:
            length, start = int.from_bytes(data[start : start + 2], "big"), start + 2
        elif length == 127:
            length, start = int.from_bytes(data[start : start + 8], "big"), start + 8
        if start + length > len(data):
            break
        out.append((opcode, data[start : start + length]))
        at = start + length
    return out, data[at:]
