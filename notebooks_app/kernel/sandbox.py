"""The one place that builds the command line of a sandboxed execution process.

A notebook's cells run in `_child.py` inside bubblewrap (`bwrap`): its own PID, network,
IPC, UTS and mount namespaces; a read-only view of the Python environment and of the few
kernel modules the child imports (never the project's source, settings, `.env` or
database); a private, size-capped working directory (`/notebook`), `/tmp` and `/dev/shm`;
no environment from the server.  Two ways of getting an unprivileged uid:

* the worker runs as root: bwrap sets up the namespaces with its privileges and
  `setpriv` drops to a uid of the notebook's own (`uid_base` + a slot, never the
  server's) with no capabilities and `no_new_privs` before Python starts.  A uid per
  notebook is what makes `RLIMIT_NPROC` a per-notebook budget;
* the worker runs as another user: bwrap makes a user namespace too (unprivileged user
  namespaces must be enabled), and the child runs as uid 1000 inside it, which is the
  server's uid outside: the process budget is then shared (docs/security.md).

With `network="none"` the sandbox has only its own loopback.  `network="outbound"`
adds a slirp4netns interface with host loopback disabled (the runner starts it once it
knows the sandbox's PID; `OUTBOUND_RESOLV_CONF` is its DNS).

Pure: no Django and no I/O beyond looking at the file system; `probe()` runs bwrap once.
"""
import functools
import os
import shutil
import site
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

KERNEL_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# Every module the child imports from the project, and nothing else of it.
CHILD_MODULES = (
    "notebooks_app/__init__.py",
    "notebooks_app/secrets.py",
    "notebooks_app/kernel/__init__.py",
    "notebooks_app/kernel/_child.py",
    "notebooks_app/kernel/file_reads.py",
    "notebooks_app/kernel/egress_forwarder.py",
    "notebooks_app/kernel/display.py",
    "notebooks_app/kernel/value_outputs.py",
    "notebooks_app/kernel/analysis.py",
    "notebooks_app/kernel/completion.py",
    "notebooks_app/kernel/sql.py",
    "notebooks_app/kernel/markdown.py",
    "notebooks_app/kernel/ui.py",
)
CODE_DIR = "/opt/notebook-kernel"  # where those modules appear inside the sandbox
ENVIRONMENT_DIR = "/opt/notebook-environment"  # the notebook's own packages, read-only (kernel/environments.py)
EGRESS_SOCKET = "/run/notebook-egress.sock"  # the egress proxy, when the notebook has an allowlist (egress.py)
FILES_DIR = "/notebook/.files"  # the notebook's files, read-only (kernel/file_reads.py)
WORK_DIR = "/notebook"  # the notebook's private, size-capped working directory (also HOME)
INNER_UID = 1000  # the uid the child sees when the sandbox has its own user namespace
SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
# What of /etc a Python data stack needs: the loader cache, certificates, time zones,
# fonts (matplotlib), MIME types.  Never all of /etc (an operator's env files live there).
ETC_PATHS = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/fonts",
    "/etc/mime.types",
    "/etc/alternatives",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/protocols",
    "/etc/services",
)
SLIRP_INTERFACE = "tap0"
OUTBOUND_RESOLV_CONF = "nameserver 10.0.2.3\n"  # slirp4netns's built-in DNS forwarder
SLOTS = 1 << 16


class SandboxUnavailable(Exception):
    """The sandbox cannot start here; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096  # RLIMIT_AS of the child
    disk_mb: int = 512  # size of /notebook, /tmp and /dev/shm each; also RLIMIT_FSIZE
    processes: int = 64  # RLIMIT_NPROC: tasks (processes and threads) of the notebook's uid
    open_files: int = 1024  # RLIMIT_NOFILE

    def child_env(self):
        """The limits as the child reads them (it sets its rlimits before user code runs)."""
        return {
            "NOTEBOOK_MEMORY_LIMIT_MB": str(self.memory_mb or 0),
            "NOTEBOOK_FILE_SIZE_LIMIT_MB": str(self.disk_mb or 0),
            "NOTEBOOK_PROCESS_LIMIT": str(self.processes or 0),
            "NOTEBOOK_OPEN_FILES_LIMIT": str(self.open_files or 0),
        }


@dataclass(frozen=True)
class SandboxConfig:
    enabled: bool = True
    network: str = "none"  # "none" | "outbound"
    uid_base: int = 2_000_000_000
    limits: Limits = field(default_factory=Limits)
    bwrap: str = "bwrap"


class UidPool:
    """Hands each running notebook a uid of its own (root mode): `uid_base` + a slot.

    The preferred slot is a hash of the notebook id, probed onward past slots in use in
    this process, so a notebook tends to keep its uid across restarts.
    """

    def __init__(self, base):
        self.base = base
        self.in_use = {}  # uid -> notebook id

    def acquire(self, notebook_id):
        start = zlib.crc32(str(notebook_id).encode()) % SLOTS
        for step in range(SLOTS):
            uid = self.base + (start + step) % SLOTS
            if uid not in self.in_use:
                self.in_use[uid] = notebook_id
                return uid
        raise SandboxUnavailable(f"all {SLOTS} sandbox uids are in use")

    def release(self, uid):
        self.in_use.pop(uid, None)


def running_as_root():
    return os.geteuid() == 0


@functools.lru_cache(maxsize=1)
def python_paths():
    """Directories the interpreter and its packages live in (read-only in the sandbox)."""
    candidates = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *site.getsitepackages(),
        *(p for p in sys.path if p and os.path.isdir(p)),
    }
    project = str(KERNEL_PACKAGE_ROOT)
    paths = set()
    for path in candidates:
        real = os.path.realpath(path)
        if not os.path.isdir(real):
            continue
        # The project's own directory never goes in; a virtualenv inside it does.
        if (real == project or real.startswith(project + os.sep)) and not _is_environment(real, project):
            continue
        if any(real == system or real.startswith(system + os.sep) for system in SYSTEM_DIRS):
            continue  # under /usr already
        paths.add(real)
        if os.path.realpath(path) != path and os.path.isdir(path):
            paths.add(os.path.abspath(path))  # also reachable by the name sys.* uses
    # Keep outermost directories only.
    ordered = sorted(paths)
    return [p for i, p in enumerate(ordered) if not any(p.startswith(q + os.sep) for q in ordered[:i])]


def _is_environment(path, project):
    """True for a path inside the project's virtualenv (sys.prefix), not its source."""
    prefix = os.path.realpath(sys.prefix)
    return prefix != project and (path == prefix or path.startswith(prefix + os.sep))


def _ancestors(path):
    parents = []
    current = Path(path).parent
    while str(current) != "/":
        parents.append(str(current))
        current = current.parent
    return list(reversed(parents))


def bwrap_arguments(config, *, uid=None, env=None, resolv_conf_fd=None, environment=None, files=None, egress_socket=None):
    """The full argv that starts the child in the sandbox.

    `environment`: the directory of the notebook's own packages (site-packages of a built
    environment), bound read-only at ENVIRONMENT_DIR, or None.
    `uid`: the notebook's uid in root mode (None: unprivileged mode, user namespace).
    `env`: variables for the child (the server's own environment never goes in).
    `resolv_conf_fd`: an fd whose content becomes /etc/resolv.conf (outbound network).
    """
    args = [config.bwrap]
    if uid is None:
        args += ["--unshare-all", "--unshare-user", "--uid", str(INNER_UID), "--gid", str(INNER_UID), "--disable-userns"]
    else:
        args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    args += ["--die-with-parent", "--new-session", "--hostname", "notebook"]
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    # The kernel's own mounts first: the binds below may lie under them (a project checked out
    # in /tmp must still see its virtualenv inside the sandbox's private /tmp).
    args += ["--proc", "/proc", "--dev", "/dev"]
    size = str(max(1, config.limits.disk_mb) * 1024 * 1024)
    for directory, perms in (("/tmp", "1777"), ("/dev/shm", "1777"), (WORK_DIR, "0777")):
        args += ["--perms", perms, "--size", size, "--tmpfs", directory]
    args += ["--perms", "0755", "--dir", "/etc"]
    for path in ETC_PATHS:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    made = set(SYSTEM_DIRS) | {"/etc", "/proc", "/dev", "/dev/shm", "/tmp", WORK_DIR}

    def passable_parents(path):
        # bwrap makes missing parents 0700 root: a uid of the notebook could not pass them.
        for parent in _ancestors(path):
            if parent not in made:
                args.extend(["--perms", "0755", "--dir", parent])
                made.add(parent)

    for path in python_paths():
        passable_parents(path)
        args += ["--ro-bind", path, path]
    for module in CHILD_MODULES:
        target = f"{CODE_DIR}/{module}"
        passable_parents(target)
        args += ["--ro-bind", str(KERNEL_PACKAGE_ROOT / module), target]
    env = dict(env or {})
    if environment:
        passable_parents(ENVIRONMENT_DIR)
        args += ["--ro-bind", str(environment), ENVIRONMENT_DIR]
        env["NOTEBOOK_ENVIRONMENT"] = ENVIRONMENT_DIR
    if files:
        args += ["--ro-bind", str(files), FILES_DIR]
        env["NOTEBOOK_FILES"] = FILES_DIR
    if egress_socket:
        passable_parents(EGRESS_SOCKET)
        args += ["--bind", str(egress_socket), EGRESS_SOCKET]
        env["NOTEBOOK_EGRESS_SOCKET"] = EGRESS_SOCKET
    if resolv_conf_fd is not None:
        args += ["--perms", "0644", "--ro-bind-data", str(resolv_conf_fd), "/etc/resolv.conf"]
    args += ["--chdir", WORK_DIR, "--clearenv"]
    for name, value in sorted(child_environment(env).items()):
        args += ["--setenv", name, value]
    args.append("--")
    if uid is not None:
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        args += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    args += [sys.executable, "-m", "notebooks_app.kernel._child"]
    return args


def child_environment(extra=None):
    """The whole environment of the child: nothing comes from the server's."""
    env = {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": WORK_DIR,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONPATH": CODE_DIR,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
    }
    env.update(extra or {})
    return env


@functools.lru_cache(maxsize=None)
def probe(bwrap="bwrap", root=None):
    """None if a sandboxed process starts on this machine, else why not (cached per process)."""
    root = running_as_root() if root is None else root
    if shutil.which(bwrap) is None:
        return f"bubblewrap ({bwrap}) is not installed (Debian: apt-get install bubblewrap)"
    if root and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    config = SandboxConfig(bwrap=bwrap, limits=Limits(disk_mb=1))
    argv = bwrap_arguments(config, uid=2_000_000_000 if root else None)
    argv = argv[: argv.index(sys.executable)] + [sys.executable, "-c", "import os; print(os.getuid())"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not start a process: {exc}"
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        return f"bubblewrap could not start a sandbox: {detail[-1] if detail else f'exit code {result.returncode}'}"
    return None
