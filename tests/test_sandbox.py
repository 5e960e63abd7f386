"""The sandbox, tried from inside a cell the way an attacker with an account would.

Every probe runs as a real cell through the WebSocket on the real kernel worker (the
production shape: PostgreSQL, Redis, `runworker`), and reports `REACHED ...` if it got
through or `BLOCKED ...` if it did not.  The probes live in one table; each test asserts
that its probe was blocked and that this notebook and another one still run cells.
"""
import ast
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings

from notebooks_app.kernel import sandbox

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # starts a sandbox per test

ROOT = Path(__file__).resolve().parent.parent

# Each probe is the body of a function `probe()` returning "REACHED ..." or "BLOCKED ...".
# The capitalised names are set from the running test (server PID, ports, paths, secrets).
PROBES = {
    "parent_environ": """
    try:
        text = open(f"/proc/{os.getppid()}/environ", "rb").read().decode(errors="replace")
    except OSError as exc:
        return f"BLOCKED {exc!r}"
    return "REACHED " + text if SECRETS and any(s in text for s in SECRETS) else "BLOCKED parent environ has no secret"
""",
    "every_environ": """
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                text = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
            except OSError:
                continue
            found += [s for s in SECRETS if s in text]
    own = " ".join(f"{k}={v}" for k, v in os.environ.items())
    found += [s for s in SECRETS if s in own]
    return f"REACHED {found}" if found else "BLOCKED no secret in any environment"
""",
    "list_processes": """
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    commands = []
    for pid in pids:
        try:
            commands.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
        except OSError:
            pass
    # Its own bubblewrap (pid 1 here) names host paths of its binds (a test's files live under
    # /tmp/pytest-of-root): not a server process.
    commands = [c for c in commands if not c.startswith("bwrap ")]
    server = [c for c in commands if "runworker" in c or "daphne" in c or "pytest" in c or "postgres" in c or "redis" in c]
    if server or str(WORKER_PID) in pids:
        return f"REACHED {server or pids}"
    return f"BLOCKED sees only {len(pids)} processes of its own"
""",
    "kill_parent": """
    import signal
    try:
        os.kill(os.getppid(), signal.SIGKILL)
    except OSError as exc:
        return f"BLOCKED {exc!r}"
    return "REACHED killed the parent"
""",
    "kill_worker": """
    import signal
    try:
        os.kill(WORKER_PID, signal.SIGTERM)
    except OSError as exc:
        return f"BLOCKED {exc!r}"
    return f"REACHED signalled pid {WORKER_PID}"
""",
    "ptrace_parent": """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, os.getppid(), 0, 0) == 0:  # PTRACE_ATTACH
        return "REACHED attached to the parent"
    return f"BLOCKED errno {ctypes.get_errno()}"
""",
    "read_project_files": """
    reached = []
    for path in (ROOT + "/manage.py", ROOT + "/notebookproject/settings.py", ROOT + "/db.sqlite3", ROOT + "/notebooks_app/models.py", ROOT + "/.env"):
        try:
            open(path, "rb").read(10)
            reached.append(path)
        except OSError:
            pass
    try:
        listing = os.listdir(ROOT)
    except OSError:
        listing = []
    if reached or set(listing) - {".venv"}:
        return f"REACHED {reached} {listing}"
    return f"BLOCKED project directory shows only {listing}"
""",
    "read_server_home_and_etc": """
    reached = []
    for path in ("/root/.bash_history", "/etc/shadow", "/etc/passwd", "/etc/hostname", "/proc/1/root/etc/shadow", "/proc/1/environ"):
        try:
            open(path, "rb").read(10)
            reached.append(path)
        except OSError:
            pass
    return f"REACHED {reached}" if reached else "BLOCKED"
""",
    "connect_redis": """
    import socket
    try:
        with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=3) as conn:
            conn.sendall(b"PING\\r\\n")
            return "REACHED " + repr(conn.recv(20))
    except OSError as exc:
        return f"BLOCKED {exc!r}"
""",
    "connect_postgres": """
    import socket
    try:
        socket.create_connection(("127.0.0.1", PG_PORT), timeout=3).close()
    except OSError as exc:
        return f"BLOCKED {exc!r}"
    return "REACHED postgres port open"
""",
    "connect_host_addresses": """
    import socket
    reached = []
    for host in HOST_ADDRESSES:
        for port in (REDIS_PORT, PG_PORT):
            try:
                socket.create_connection((host, port), timeout=2).close()
                reached.append((host, port))
            except OSError:
                pass
    return f"REACHED {reached}" if reached else "BLOCKED no host address answers"
""",
    "postgres_unix_socket": """
    import glob, socket
    reached = []
    for path in glob.glob("/tmp/.s.PGSQL.*") + glob.glob("/var/run/postgresql/.s.PGSQL.*") + glob.glob("/run/**/.s.PGSQL.*", recursive=True):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            reached.append(path)
        except OSError:
            pass
    return f"REACHED {reached}" if reached else "BLOCKED no socket"
""",
    "write_outside_workdir": """
    reached = []
    for path in ("/usr/lib/x", "/etc/x", ROOT + "/x", "/opt/notebook-kernel/notebooks_app/kernel/_child.py", "/x"):
        try:
            with open(path, "a") as f:
                f.write("x")
            reached.append(path)
        except OSError:
            pass
    return f"REACHED {reached}" if reached else "BLOCKED read-only everywhere but the work dir"
""",
    "fork_bomb": """
    import time
    children, error = [], None
    try:
        for _ in range(100_000):
            pid = os.fork()
            if pid == 0:
                time.sleep(5)
                os._exit(0)
            children.append(pid)
    except OSError as exc:
        error = exc
    for pid in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    if error is None:
        return f"REACHED forked {len(children)} processes"
    return f"BLOCKED after {len(children)} processes: {error!r}"
""",
    "fill_the_disk": """
    chunk = b"\\0" * (8 << 20)
    written = 0
    try:
        with open("big.bin", "wb") as f:
            while written < (10 << 30):
                f.write(chunk)
                written += len(chunk)
    except OSError as exc:
        os.remove("big.bin")
        return f"BLOCKED after {written >> 20} MB: {exc!r}"
    return f"REACHED wrote {written >> 30} GB"
""",
    "raise_limits": """
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError) as exc:
        return f"BLOCKED {exc!r}"
    return "REACHED raised the process limit"
""",
    "become_root": """
    try:
        os.setuid(0)
    except OSError as exc:
        return f"BLOCKED uid {os.getuid()}: {exc!r}"
    return "REACHED uid 0"
""",
}


def probe_code(name, **values):
    body = PROBES[name]
    indented = "\n".join("    " + line if line.strip() else line for line in body.strip("\n").splitlines())
    constants = "\n".join(f"{key.upper()} = {value!r}" for key, value in values.items())
    return f"import os\n{constants}\n\ndef probe():\n{indented}\n\nprobe()"


def host_addresses():
    """This machine's own non-loopback addresses, as seen from outside the sandbox."""
    import socket

    addresses = set()
    try:
        addresses.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            addresses.add(udp.getsockname()[0])
    except OSError:
        pass
    return sorted(a for a in addresses if not a.startswith("127."))


def probe_values(worker):
    return {
        "secrets": [s for s in (os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL"), django_settings.SECRET_KEY) if s],
        "worker_pid": worker.proc.pid,
        "root": str(ROOT),
        "redis_port": urlsplit(os.environ["REDIS_URL"]).port,
        "pg_port": django_settings.DATABASES["default"]["PORT"],
        "host_addresses": host_addresses(),
    }


async def run_code(client, code, cell_type="python"):
    """Create a cell with `code`, run it, and return (status, text output, error)."""
    reply = await client.request(type="create_cell", code=code, cellType=cell_type)
    cell_id = reply["cellId"]
    await client.send(type="run_cell", cellId=cell_id)
    await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == cell_id and e["status"] in ("success", "error"), timeout=60)
    cell = client.state[cell_id]
    text = next((o["data"] for o in cell["outputs"] if o["mimeType"] == "text/plain"), "")
    return cell["status"], text, cell["error"]


@pytest.fixture
def other_notebook(users):
    from notebooks_app.models import Notebook

    return Notebook.objects.create(name="Bob's private notebook", owner=users["bob"])


@pytest.mark.parametrize("name", sorted(PROBES))
async def test_a_cell_cannot_reach_outside_its_sandbox(ws, notebook, other_notebook, users, kernel_worker, name):
    alice = await ws(users["alice"], notebook)
    status, text, error = await run_code(alice, probe_code(name, **probe_values(kernel_worker)))
    assert status == "success", error
    assert ast.literal_eval(text).startswith("BLOCKED"), text
    # The notebook, another notebook and the worker all keep working.
    assert (await run_code(alice, "6 * 7"))[1] == "42"
    bob = await ws(users["bob"], other_notebook)
    assert (await run_code(bob, "'still here'"))[1] == "'still here'"
    assert kernel_worker.proc.poll() is None


async def test_another_notebooks_working_directory_is_invisible(ws, notebook, other_notebook, users):
    bob = await ws(users["bob"], other_notebook)
    status, _, error = await run_code(bob, "open('/notebook/bobs-secret.txt', 'w').write('hunter2')\nimport os\nos.listdir('/notebook')")
    assert status == "success", error
    alice = await ws(users["alice"], notebook)
    code = (
        "import glob, os\n"
        "hits = [p for top in ('/notebook', '/tmp', '/dev/shm', '/opt', '/work', '/root') for p in glob.glob(top + '/**/bobs-secret.txt', recursive=True)]\n"
        "hits += [p for p in glob.glob('/proc/*/root/notebook/*')]\n"
        "(os.getcwd(), os.listdir('/notebook'), hits)"
    )
    status, text, error = await run_code(alice, code)
    assert status == "success", error
    assert text == "('/notebook', ['.files'], [])"  # its own notebook's files (empty), nothing of the other's


async def test_cells_run_under_an_unprivileged_uid_of_their_own(ws, notebook, other_notebook, users):
    alice = await ws(users["alice"], notebook)
    bob = await ws(users["bob"], other_notebook)
    code = "import os\n(os.getuid(), os.geteuid(), os.getgroups(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    _, alice_ids, _ = await run_code(alice, code)
    _, bob_ids, _ = await run_code(bob, code)
    uid, euid, groups, caps = eval(alice_ids)  # noqa: S307 - our own cell's repr of ints and strings
    assert uid == euid != 0 and uid != os.getuid() and groups == [] and int(caps, 16) == 0
    if sandbox.running_as_root():
        assert uid >= django_settings.KERNEL_SANDBOX_UID_BASE
        assert eval(bob_ids)[0] != uid  # noqa: S307 - every notebook has a uid of its own


async def test_the_environment_holds_nothing_of_the_server(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    _, text, _ = await run_code(alice, "import os\nsorted(os.environ)")
    names = eval(text)  # noqa: S307 - our own cell's repr of a list of strings
    assert not {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"} & set(names)
    assert set(names) <= set(sandbox.child_environment()) | {"PWD", "NOTEBOOK_OUTPUT_CAP", "NOTEBOOK_IMAGE_CAP", "NOTEBOOK_SQL_ROW_CAP", "NOTEBOOK_FILES", "NOTEBOOK_NETWORK", *sandbox.Limits().child_env()}


async def test_a_killed_sandbox_turns_results_stale_and_the_next_run_gets_a_fresh_one(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    assert (await run_code(alice, "_kept = 1"))[0] == "success"  # private: no edges to rerun it
    kept = alice.order[-1]
    status, _, error = await run_code(alice, "import os\nos._exit(9)")
    assert status == "error" and error["ename"] == "KernelDied"
    await alice.wait_status(kept, "stale")
    status, _, error = await run_code(alice, "_kept")
    assert status == "error" and error["ename"] == "NameError"


async def test_the_memory_limit_fails_a_huge_allocation_in_the_cell(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    limit = django_settings.KERNEL_MEMORY_LIMIT_MB
    status, _, error = await run_code(alice, f"blob = bytearray({limit + 512} * 1024 * 1024)")
    assert status == "error" and error["ename"] == "MemoryError"
    assert (await run_code(alice, "1 + 1"))[1] == "2"


def test_an_unavailable_sandbox_is_reported_not_bypassed():
    reason = sandbox.probe("bwrap-that-is-not-installed")
    assert "not installed" in reason


async def test_without_the_sandbox_cells_cannot_run_unless_turned_off_explicitly(tmp_path):
    """A machine without bubblewrap: the runner refuses (SandboxUnavailable) rather than run
    code unsandboxed; only an explicit `sandbox=None` (KERNEL_SANDBOX=off) runs it."""
    from notebooks_app.kernel.runner import Runner, SandboxUnavailable

    broken = Runner(sandbox=sandbox.SandboxConfig(bwrap=str(tmp_path / "no-bwrap")))
    with pytest.raises(SandboxUnavailable, match="not installed"):
        await broken.start()
    unsandboxed = Runner(sandbox=None)
    try:
        result = await unsandboxed.run("a", "import os\nos.getuid()")
        assert result.outputs[0]["data"] == str(os.getuid())
    finally:
        await unsandboxed.close()


def test_sandbox_command_line_keeps_the_project_out():
    argv = sandbox.bwrap_arguments(sandbox.SandboxConfig(), uid=2_000_000_123)
    sources = [argv[i + 1] for i, arg in enumerate(argv) if arg in ("--ro-bind", "--bind")]
    project = str(ROOT)
    for source in sources:
        inside_project = source == project or source.startswith(project + os.sep)
        assert not inside_project or source.startswith(os.path.realpath(os.sys.prefix)) or source in {str(ROOT / m) for m in sandbox.CHILD_MODULES}, source
    assert "--clearenv" in argv and "--unshare-net" in argv and "--die-with-parent" in argv
    assert "--reuid=2000000123" in argv and "--no-new-privs" in argv


@pytest.mark.parametrize("sandboxed", [True, False])
def test_notebook_page_warns_when_the_sandbox_is_off(client, notebook, users, settings, sandboxed):
    settings.KERNEL_SANDBOX = sandboxed
    client.force_login(users["carol"])
    page = client.get(f"/notebooks/{notebook.pk}/").content.decode()
    assert ("sandbox-off-banner" in page) is (not sandboxed)
    if not sandboxed:
        assert "KERNEL_SANDBOX=off" in page and "server's own privileges" in page


async def test_outbound_network_has_a_route_out_but_never_reaches_host_loopback():
    """KERNEL_NETWORK=outbound: slirp4netns gives a default route and DNS; the host's own
    loopback (where PostgreSQL, Redis and the app listen) stays out of reach, even through
    slirp's gateway address.  No packet leaves this machine: the listener is our own."""
    import socket

    from notebooks_app.kernel.runner import Runner

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    runner = Runner(sandbox=sandbox.SandboxConfig(network="outbound"))
    code = (
        "import socket\n"
        "def reach(host):\n"
        "    try:\n"
        "        socket.create_connection((host, PORT), timeout=3).close()\n"
        "        return 'REACHED'\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__\n"
        "routes = [line.split()[:3] for line in open('/proc/net/route').read().splitlines()[1:]]\n"
        "(routes, open('/etc/resolv.conf').read(), reach('127.0.0.1'), reach('10.0.2.2'))"
    ).replace("PORT", str(port))
    try:
        result = await runner.run("a", code)
        assert result.status == "success", result.error
        routes, resolv, loopback, gateway = ast.literal_eval(result.outputs[0]["data"])
        assert [sandbox.SLIRP_INTERFACE, "00000000", "0202000A"] in routes  # default route via 10.0.2.2
        assert "nameserver 10.0.2.3" in resolv
        assert loopback != "REACHED" and gateway != "REACHED"
    finally:
        await runner.close()
        listener.close()


async def test_sql_cells_cannot_open_the_servers_own_database(ws, notebook, users, tmp_path):
    """The notebook's connection is opened by the worker, outside the sandbox: it refuses
    the server's own PostgreSQL database, and SQLite cannot ATTACH other files."""
    import sqlite3

    from tests.conftest import database_url_for_tests

    alice = await ws(users["alice"], notebook)
    reply = await alice.request(type="update_db_connection", connectionString=database_url_for_tests())
    assert reply["type"] == "db_connection_updated"
    status, _, error = await run_code(alice, cell_type="sql", code="SELECT code FROM notebooks_app_cell")
    assert status == "error" and "server's own database" in error["evalue"]

    path = tmp_path / "mine.db"
    sqlite3.connect(path).close()
    await alice.request(type="update_db_connection", connectionString=f"sqlite:///{path}")
    status, _, error = await run_code(alice, cell_type="sql", code=f"ATTACH DATABASE '{tmp_path / 'other.db'}' AS other")
    assert status == "error" and "not authorized" in error["evalue"]
    assert not (tmp_path / "other.db").exists()
    status, text, error = await run_code(alice, cell_type="sql", code="SELECT 41 + 1 AS answer")
    assert status == "success" and "42" in text, error



async def test_limit_settings_reach_the_cells(settings):
    """KERNEL_MEMORY_LIMIT_MB and KERNEL_PROCESS_LIMIT, through the worker's runner factory."""
    from notebooks_app.kernel.worker import KernelService

    settings.KERNEL_MEMORY_LIMIT_MB = 600
    settings.KERNEL_PROCESS_LIMIT = 40
    runner = KernelService()._runner_factory("limits")
    try:
        assert (await runner.run("a", "blob = bytearray(800 * 1024 * 1024)")).error["ename"] == "MemoryError"
        assert (await runner.run("b", "len(bytearray(100 * 1024 * 1024))")).outputs[0]["data"] == str(100 * 1024 * 1024)
        result = await runner.run("c", "import resource\nresource.getrlimit(resource.RLIMIT_NPROC)")
        assert result.outputs[0]["data"] == "(40, 40)"
    finally:
        await runner.close()


async def test_writing_to_the_protocol_pipe_directly_cannot_flood_the_worker():
    """User code can find the child's private protocol fd; what it forges there is bounded:
    stdout past the cap is dropped, and a forged result only ends its own cell."""
    from notebooks_app.kernel.runner import Runner

    runner = Runner(output_cap=1000)
    chunks = []
    code = (
        "import json, os\n"
        "def target(fd):\n"
        "    try:\n"
        "        return os.readlink(f'/proc/self/fd/{fd}')\n"
        "    except OSError:\n"
        "        return ''\n"
        "pipes = [int(fd) for fd in os.listdir('/proc/self/fd') if int(fd) > 2 and target(fd).startswith('pipe:')]\n"
        "line = (json.dumps({'op': 'stdout', 'id': REQUEST, 'text': 'x' * 1000}) + '\\n').encode()\n"
        "for fd in pipes:\n"
        "    try:\n"
        "        for _ in range(50):\n"
        "            os.write(fd, line)\n"
        "    except OSError:\n"
        "        pass\n"
        "'done'"
    )
    try:
        await runner.run("warm", "1")
        request = runner._next_id + 1
        result = await runner.run("a", code.replace("REQUEST", str(request)), on_stdout=chunks.append)
        assert result.status == "success", result.error
        assert 1000 < len("".join(chunks)) <= 2 * 1000 + 1000
        assert (await runner.run("b", "2 + 2")).outputs[0]["data"] == "4"
    finally:
        await runner.close()


def test_a_project_checked_out_under_tmp_still_sees_its_python(tmp_path):
    """The sandbox's private /tmp is mounted before the read-only binds, so a virtualenv that
    lives under /tmp (CI clones there) is still visible inside it."""
    import subprocess
    import sys

    argv = sandbox.bwrap_arguments(sandbox.SandboxConfig(), uid=2_000_000_321 if sandbox.running_as_root() else None)
    tmpfs_at = argv.index("/tmp", argv.index("--tmpfs") - 1)
    binds = [i for i, arg in enumerate(argv) if arg == "--ro-bind"]
    assert all(i > tmpfs_at for i in binds if argv[i + 2].startswith(("/tmp/", "/root/", "/work/", "/home/")))
    # And for real: a bind under /tmp shows through the sandbox's own /tmp.
    (tmp_path / "marker.txt").write_text("seen")
    os.chmod(tmp_path, 0o755)
    config = sandbox.SandboxConfig()
    argv = sandbox.bwrap_arguments(config, uid=2_000_000_321 if sandbox.running_as_root() else None)
    at = argv.index("--")
    parents = [["--perms", "0755", "--dir", parent] for parent in sandbox._ancestors(str(tmp_path)) if parent != "/tmp"]
    argv[at:at] = [arg for pair in parents for arg in pair] + ["--ro-bind", str(tmp_path), str(tmp_path)]
    argv = argv[: argv.index(sys.executable)] + [sys.executable, "-c", f"print(open({str(tmp_path / 'marker.txt')!r}).read())"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "seen", result.stderr


def test_outputs_a_cell_forges_cannot_become_trusted_html_or_urls():
    """The execution process is user code: whatever it claims, the session keeps only plain
    outputs (markdown HTML is the worker's alone; references and URLs are the worker's alone)."""
    from notebooks_app.constants import MARKDOWN_MIME
    from notebooks_app.kernel.session import untrusted_outputs

    forged = [
        {"mimeType": MARKDOWN_MIME, "data": "<img src=x onerror=alert(1)>"},
        {"mimeType": "image/png", "ref": "0" * 64, "url": "https://attacker.example/x.png", "size": 1},
        {"mimeType": "text/html", "data": "<b>framed</b>", "url": "javascript:alert(1)"},
        {"mimeType": "application/javascript", "data": "alert(1)"},
        {"mimeType": "text/plain", "data": {"not": "text"}},
        "not an output",
    ]
    assert untrusted_outputs(forged) == [{"mimeType": "text/html", "data": "<b>framed</b>"}]
    assert untrusted_outputs({"not": "a list"}) == []


async def test_a_cell_writing_a_forged_result_cannot_publish_trusted_html(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    code = (
        "kernel = [o for o in __import__('gc').get_objects() if type(o).__name__ == 'Kernel'][0]\n"
        "kernel._outputs = lambda value: [{'mimeType': 'text/vnd.notebook.markdown+html', 'data': '<img src=x onerror=alert(1)>'},"
        " {'mimeType': 'image/png', 'ref': 'x', 'url': 'https://attacker.example/p.png'}]\n"
        "1"
    )
    status, _, error = await run_code(alice, code)
    assert status == "success", error
    cell_id = alice.order[-1]
    assert alice.state[cell_id]["outputs"] == []
