"""Built environments of notebooks' own packages: resolving, building, sharing, collecting.

A notebook's requirements (notebooks_app/packages.py) are resolved with uv to a *lock*: exact
versions and hashes, wheels only, with the server's own packages as constraints (a notebook's
packages go beside the server's, never replace them).  What the lock adds to the server's
packages is installed into a directory named by a hash of (those lines, the interpreter, the
platform): two notebooks with the same lock share one directory, built once, which the sandbox
binds read-only over the base environment (sandbox.ENVIRONMENT_DIR).  A build happens beside
its final place and is renamed into it, so no one sees half of one; a second build of the same
key in this process waits for the first, and one in another process loses the rename and is
dropped.  Directories no notebook uses are collected (`collect_garbage`).

Everything here runs in the kernel worker, outside the sandbox, and never imports what it
installs: uv (a pinned runtime dependency) does the resolving, downloading and installing.
"""
import asyncio
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from ..packages import parse_requirement

logger = logging.getLogger(__name__)

SITE = "site-packages"  # an environment's directory of packages, under its key
LAST_USED = ".last-used"  # touched whenever a notebook starts on the environment
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


class PackageError(Exception):
    """Resolving or building failed; the message is for the notebook's users, in plain words."""


@dataclasses.dataclass(frozen=True)
class PackageSettings:
    enabled: bool = True
    root: str = ""  # where environments live (with uv's cache beside them: hardlinks)
    index_url: str = "https://pypi.org/simple"
    build_timeout: float = 600.0  # seconds, for resolving and for installing each
    uv: str = ""  # the uv binary ("" = the one installed with the server's packages)
    python: str = sys.executable  # the interpreter the execution process runs


@dataclasses.dataclass(frozen=True)
class Locked:
    """One line of a lock: a package at an exact version."""

    name: str
    version: str

    def as_json(self):
        return {"name": self.name, "version": self.version}


def locked_packages(lock):
    """The packages a lock pins, in its order."""
    found = []
    for line in (lock or "").splitlines():
        match = _LOCK_LINE.match(line)
        if match:
            found.append(Locked(match.group(1), match.group(3)))
    return found


def _base_packages():
    """The server's own distributions: (canonical name, version) pairs (what every notebook has)."""
    found = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata.get("Name")
        if name:
            found.setdefault(canonicalize_name(name), distribution.version)
    return tuple(sorted(found.items()))


class Environments:
    def __init__(self, settings):
        self.settings = settings
        self.root = Path(settings.root) if settings.root else None
        self._building = {}  # key -> future of the build in progress in this process
        self.in_use = {}  # key -> number of execution processes of this worker on it
        self._base = None

    # --- the base ------------------------------------------------------------------------------
    @property
    def base(self):
        if self._base is None:
            self._base = dict(_base_packages())
        return self._base

    def base_conflict(self, requirement):
        """Why `requirement` (a checked Requirement) cannot be met beside the server's own
        packages, or None; and whether the base alone satisfies it."""
        name = canonicalize_name(requirement.name)
        version = self.base.get(name)
        if version is None:
            return None, False
        if requirement.specifier and not SpecifierSet(str(requirement.specifier)).contains(version, prereleases=True):
            return (f"{requirement} conflicts with the server's own {requirement.name} {version}: a notebook's packages go beside the server's, "
                    f"so ask for a version range that includes {version} (or ask the operator to change the server's)"), False
        return None, not requirement.extras

    def stale(self, lock):
        """True when a lock pins a server package at another version than the server has now
        (the operator upgraded it): it must be resolved again."""
        return any(self.base.get(canonicalize_name(p.name), p.version) != p.version for p in locked_packages(lock))

    # --- resolving ------------------------------------------------------------------------------
    async def resolve(self, requirements, on_phase=None):
        """The lock of `requirements` (checked strings), "" when the server's packages satisfy
        them all.  PackageError with the resolver's explanation when they cannot be met."""
        self._check_enabled()
        wanted = []
        for text in requirements:
            requirement = parse_requirement(text)
            conflict, satisfied = self.base_conflict(requirement)
            if conflict:
                raise PackageError(conflict)
            if not satisfied:
                wanted.append(str(requirement))
        if not wanted:
            return ""
        if on_phase:
            await on_phase("resolving", f"Resolving {', '.join(wanted)}")
        with tempfile.TemporaryDirectory(prefix="nb-resolve-") as scratch:
            constraints = Path(scratch, "server-packages.txt")
            constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(self.base.items())))
            source = Path(scratch, "requirements.in")
            source.write_text("".join(f"{r}\n" for r in wanted))
            output = Path(scratch, "lock.txt")
            await self._uv(
                ["pip", "compile", str(source), "--constraint", str(constraints), "--output-file", str(output),
                 "--generate-hashes", "--no-header", "--no-annotate", "--quiet", *self._index_options()],
                action="resolve",
            )
            return output.read_text()

    # --- building -------------------------------------------------------------------------------
    def own_lines(self, lock):
        """The lines of `lock` for packages the server does not have: what an environment holds."""
        lines, keep = [], False
        for line in (lock or "").splitlines():
            match = _LOCK_LINE.match(line)
            if match:
                name, version = canonicalize_name(match.group(1)), match.group(3)
                keep = self.base.get(name) != version
            elif line and not line[0].isspace():
                keep = False
            if keep and line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.rstrip())
        return lines

    def key(self, lock):
        """The environment's name: a hash of what it installs, the interpreter and the platform;
        None when the lock adds nothing to the server's packages."""
        lines = self.own_lines(lock)
        if not lines:
            return None
        digest = hashlib.sha256()
        for part in ("\n".join(lines), self._interpreter(), platform.machine(), sys.platform):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()[:32]

    def site_of(self, key):
        return self.root / key / SITE

    def built(self, lock):
        """The site-packages directory of `lock`'s environment if it exists, else None."""
        key = self.key(lock)
        return self.site_of(key) if key and self.site_of(key).is_dir() else None

    async def ensure(self, lock, on_phase=None):
        """The site-packages directory of `lock`'s environment, built if need be (None when the
        lock adds nothing).  PackageError when it cannot be built."""
        key = self.key(lock)
        if key is None:
            return None
        site = self.site_of(key)
        if site.is_dir():
            self.touch(key)
            return site
        self._check_enabled()
        building = self._building.get(key)
        if building is None:
            building = asyncio.get_running_loop().create_task(self._build(key, lock, on_phase))
            self._building[key] = building
            building.add_done_callback(lambda _: self._building.pop(key, None))
        elif on_phase:
            await on_phase("installing", "Installing (a build of the same packages is under way)")
        await asyncio.shield(building)
        return site

    async def _build(self, key, lock, on_phase):
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / key
        scratch = self.root / f".build-{key}-{uuid.uuid4().hex[:8]}"
        scratch.mkdir()
        try:
            lines = self.own_lines(lock)
            (scratch / "lock.txt").write_text("\n".join(lines) + "\n")
            packages = [p for p in locked_packages("\n".join(lines))]
            if on_phase:
                await on_phase("downloading", f"Downloading {len(packages)} package{'s' if len(packages) != 1 else ''}")

            async def progress(line):
                if on_phase and line.startswith("Prepared "):
                    await on_phase("installing", f"Installing {', '.join(f'{p.name} {p.version}' for p in packages)}")

            started = time.monotonic()
            await self._uv(
                ["pip", "install", "--target", str(scratch / SITE), "--no-deps", "--require-hashes", "-r", str(scratch / "lock.txt"),
                 "--compile-bytecode", "--link-mode", "hardlink", *self._index_options()],
                action="install",
                on_line=progress,
            )
            meta = {"packages": [p.as_json() for p in packages], "python": self._interpreter(), "built_at": time.time(), "seconds": round(time.monotonic() - started, 3)}
            (scratch / "environment.json").write_text(json.dumps(meta))
            (scratch / LAST_USED).touch()
            try:
                os.rename(scratch, final)
            except OSError:
                if not (final / SITE).is_dir():
                    raise
                # Another worker built the same key first: theirs is identical; ours goes.
                shutil.rmtree(scratch, ignore_errors=True)
            logger.info("environment %s built (%s) in %.1f s", key, ", ".join(f"{p.name}=={p.version}" for p in packages), meta["seconds"])
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def touch(self, key):
        with contextlib.suppress(OSError):
            (self.root / key / LAST_USED).touch()

    # --- use and collection ------------------------------------------------------------------------
    def acquire(self, key):
        if key:
            self.in_use[key] = self.in_use.get(key, 0) + 1
            self.touch(key)

    def release(self, key):
        if key and key in self.in_use:
            self.in_use[key] -= 1
            if self.in_use[key] <= 0:
                del self.in_use[key]

    def usage(self):
        """Every environment on disk: key, packages, bytes (files counted once however many
        hardlinks), last used."""
        if self.root is None or not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not (entry / SITE).is_dir():
                continue
            try:
                meta = json.loads((entry / "environment.json").read_text())
            except (OSError, ValueError):
                meta = {}
            found.append({
                "key": entry.name,
                "packages": meta.get("packages", []),
                "bytes": disk_usage(entry),
                "last_used": _mtime(entry / LAST_USED),
                "in_use": entry.name in self.in_use,
            })
        return found

    def collect_garbage(self, keep, *, grace_seconds=3600.0, now=None):
        """Remove environments whose key is not in `keep` (the keys of every notebook's lock) nor
        used by this worker, unused for `grace_seconds`; and builds abandoned by a dead process.
        Returns (keys removed, bytes freed)."""
        if self.root is None or not self.root.is_dir():
            return [], 0
        now = time.time() if now is None else now
        removed, freed = [], 0
        for entry in self.root.iterdir():
            if entry.name.startswith(".build-"):
                if now - _mtime(entry) > max(grace_seconds, 2 * self.settings.build_timeout):
                    freed += disk_usage(entry)
                    shutil.rmtree(entry, ignore_errors=True)
                continue
            if entry.name.startswith(".") or entry.name in keep or entry.name in self.in_use or entry.name in self._building:
                continue
            if now - _mtime(entry / LAST_USED) < grace_seconds:
                continue
            size = disk_usage(entry)
            # Renamed away first: a worker starting on it meanwhile sees it whole or not at all.
            doomed = self.root / f".build-gc-{entry.name}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(entry, doomed)
            except OSError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(entry.name)
            freed += size
        return removed, freed

    # --- uv --------------------------------------------------------------------------------------
    def _check_enabled(self):
        if not self.settings.enabled or self.root is None:
            raise PackageError("Notebook packages are turned off on this server (NOTEBOOK_PACKAGES=off): ask its operator to add them to the server's own.")

    def _interpreter(self):
        return f"{platform.python_implementation()}-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}-{sys.abiflags}"

    def _index_options(self):
        return ["--python", self.settings.python, "--only-binary", ":all:", "--index-url", self.settings.index_url, "--no-config"]

    def _uv_binary(self):
        if self.settings.uv:
            return self.settings.uv
        try:
            from uv import find_uv_bin

            return find_uv_bin()
        except (ImportError, FileNotFoundError):
            found = shutil.which("uv")
            if found:
                return found
        raise PackageError("uv is not installed on this server (it comes with requirements.txt): ask its operator")

    def _uv_environment(self):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "UV_CACHE_DIR": str(self.root / ".uv-cache"),
            "UV_PYTHON_DOWNLOADS": "never",
            "NO_COLOR": "1",
            "UV_NO_PROGRESS": "1",
        }
        # An operator's proxy and certificates still apply; nothing else of the server's does.
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "UV_NATIVE_TLS", "UV_HTTP_RETRIES", "UV_HTTP_TIMEOUT"):
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    async def _uv(self, arguments, *, action, on_line=None):
        self.root.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            self._uv_binary(), *arguments,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=self._uv_environment(), cwd=str(self.root), start_new_session=True,
        )
        lines = []

        async def read_stderr():
            async for raw in process.stderr:
                line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
                lines.append(line)
                if on_line:
                    await on_line(line.strip())

        try:
            await asyncio.wait_for(asyncio.gather(read_stderr(), process.stdout.read(), process.wait()), self.settings.build_timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            await process.wait()
            raise PackageError(f"Could not {action} the packages within {self.settings.build_timeout:g} s (PACKAGE_BUILD_TIMEOUT); nothing was changed.") from None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            raise
        if process.returncode != 0:
            raise PackageError(explain_uv_error(lines, action, self.settings.index_url))


def explain_uv_error(lines, action, index_url):
    """uv's error output in plain words (its own explanation, shortened; no hints to edit files
    nobody here has)."""
    text = [line for line in lines if line.strip()]
    reason = []
    for line in text:
        stripped = line.strip()
        if stripped.startswith(("hint:", "help:")) and "--no-build" not in stripped and "Wheels are required" not in stripped:
            continue
        reason.append(stripped.removeprefix("error: ").removeprefix("× ").removeprefix("╰─▶ "))
    joined = " ".join(reason).replace("No solution found when resolving dependencies", "").replace("cause: ", "")
    joined = re.sub(r"\s+", " ", joined).strip(" :")
    joined = re.sub(r"(\S+) was not found in the package registry", r"there is no package \1 on the index", joined)
    lowered = joined.lower()
    if any(s in lowered for s in ("failed to fetch", "connection refused", "dns error", "timed out", "error sending request", "could not connect")):
        return f"The package index ({index_url}) could not be reached: {joined[:400]}. Nothing was changed."
    if "has no usable wheels" in lowered or "wheels are required" in lowered or "building from source is disabled" in lowered:
        names = re.findall(r"Wheels are required for `([^`]+)`", joined) or re.findall(r"Because (\S+?)(?:==\S+)? has no usable wheels", joined)
        which = ", ".join(dict.fromkeys(names)) or "a package"
        return (f"Only source distributions exist for {which} (no wheel for this platform), and notebooks install wheels only: "
                "no package's build code runs on this server. Try another version, or ask the operator to add it to the server's packages.")
    prefix = "These packages cannot be installed together" if action == "resolve" else "The packages could not be installed"
    return f"{prefix}: {joined[:600]}" if joined else f"{prefix} (uv gave no reason)."


def disk_usage(path):
    """Bytes of the files under `path`, each inode once."""
    seen, total = set(), 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def _mtime(path):
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
