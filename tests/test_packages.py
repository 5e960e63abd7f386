"""A notebook's own packages (docs/packages.md): requirements checked, resolved and built with uv
from the tests' offline index (tests/package_index.py), environments shared and read-only in
the sandbox, changes heard by everyone, bad input refused with nothing changed."""
import asyncio
import os
import sys
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from notebooks_app import packages
from notebooks_app.kernel.environments import SITE, Environments, PackageError, PackageSettings, locked_packages
from notebooks_app.models import EVENT_PACKAGES, Notebook, NotebookEvent
from tests.conftest import create, run_and_wait, text_output

ROOT = Path(__file__).resolve().parents[1]


# --- requirements as text ----------------------------------------------------------------------------
def test_requirements_are_normalised_and_checked():
    assert packages.parse_requirements(["seaborn", " scipy >= 1.11 ", "pandas[excel]>=2; python_version>'3'"]) == [
        "seaborn",
        "scipy>=1.11",
        'pandas[excel]>=2; python_version > "3"',
    ]
    assert packages.parse_requirements("# mine\nseaborn  # plots\n\nscipy\n") == ["seaborn", "scipy"]


@pytest.mark.parametrize(
    "bad, says",
    [
        ("git+https://github.com/x/y", "version-control"),
        ("https://example.com/x.whl", "URLs"),
        ("./local/pkg", "paths"),
        ("/abs/pkg", "paths"),
        ("-e .", "pip options"),
        ("--index-url http://evil", "pip options"),
        ("pkg @ https://example.com/p.whl", "URLs"),
        ("not a requirement!!", "not a valid requirement"),
        ("x" * 201, "the limit is 200"),
        ("", "empty"),
        ("pkg\x00", "control characters"),
    ],
)
def test_unusable_requirements_are_refused_with_the_reason(bad, says):
    with pytest.raises(packages.RequirementsError, match=None) as caught:
        packages.parse_requirements([bad])
    assert says in str(caught.value)


def test_too_many_or_twice_listed_requirements_are_refused():
    with pytest.raises(packages.RequirementsError, match="at most 50"):
        packages.parse_requirements([f"p{i}" for i in range(51)])
    with pytest.raises(packages.RequirementsError, match="listed twice"):
        packages.parse_requirements(["Seaborn", "seaborn>=0.13"])


def test_pep_723_blocks_round_trip():
    block = packages.script_block(["seaborn>=0.13", "scipy"], requires_python=">=3.11")
    script = block + "\nimport seaborn\n"
    assert packages.read_script_dependencies(script) == ["seaborn>=0.13", "scipy"]
    assert packages.without_script_block(script) == "import seaborn\n"
    assert packages.read_script_dependencies("import os\n") is None
    assert packages.script_block([]) == ""
    with pytest.raises(packages.RequirementsError, match="URLs"):
        packages.read_script_dependencies('# /// script\n# dependencies = ["https://x/y.whl"]\n# ///\n')


def test_missing_modules_map_to_the_distribution_that_provides_them():
    assert packages.missing_module("ModuleNotFoundError: No module named 'sklearn.linear_model'") == "sklearn.linear_model"
    assert packages.distribution_for_module("sklearn.linear_model") == "scikit-learn"
    assert packages.distribution_for_module("PIL") == "pillow"
    assert packages.distribution_for_module("seaborn") == "seaborn"
    assert packages.distribution_for_module("my_pkg.sub") == "my-pkg"


# --- environments, outside any notebook ------------------------------------------------------------
def environments(package_index, root, **overrides):
    return Environments(PackageSettings(root=str(root), index_url=package_index.url, build_timeout=overrides.pop("build_timeout", 120), **overrides))


async def test_a_lock_has_exact_versions_and_hashes_and_builds_once(package_index, tmp_path):
    envs = environments(package_index, tmp_path)
    phases = []

    async def phase(state, text):
        phases.append(state)

    lock = await envs.resolve(["nbt-alpha"], on_phase=phase)
    assert [(p.name, p.version) for p in locked_packages(lock)] == [("nbt-alpha", "1.0"), ("nbt-beta", "2.0")]
    assert lock.count("--hash=sha256:") == 2
    site = await envs.ensure(lock, on_phase=phase)
    assert phases == ["resolving", "downloading", "installing"]
    assert (site / "nbt_alpha" / "__init__.py").is_file() and (site / "nbt_beta" / "__pycache__").is_dir()  # bytecode at build time
    # Requirements the server already satisfies add nothing: no environment at all.
    assert await envs.resolve(["numpy", "pandas>=2"]) == ""
    assert envs.key("") is None and await envs.ensure("") is None
    # The same lock again (another notebook, another worker): the same directory, not rebuilt.
    other = environments(package_index, tmp_path)
    again = await other.ensure(await other.resolve(["nbt-beta>=1", "nbt-alpha"]))
    assert again == site and os.stat(again / "nbt_alpha" / "__init__.py").st_ino == os.stat(site / "nbt_alpha" / "__init__.py").st_ino
    assert [entry.name for entry in tmp_path.iterdir() if not entry.name.startswith(".")] == [site.parent.name]


async def test_concurrent_builds_of_one_lock_make_one_whole_environment(package_index, tmp_path):
    first, second = environments(package_index, tmp_path), environments(package_index, tmp_path)
    lock = await first.resolve(["nbt-gamma"])
    sites = await asyncio.gather(first.ensure(lock), first.ensure(lock), second.ensure(lock), second.ensure(lock))
    assert len(set(sites)) == 1
    site = sites[0]
    assert (site / "nbt_gamma" / "__init__.py").read_text() == "VALUE = 3\n"
    assert not [entry for entry in tmp_path.iterdir() if entry.name.startswith(".build-")]  # the loser's build is gone


@pytest.mark.parametrize(
    "requirements, says",
    [
        (["nbt-sdist-only"], "Only source distributions"),
        (["nbt-beta==9.9"], "nbt-beta"),
        (["no-such-package-here"], "there is no package no-such-package-here"),
        (["numpy<2"], "conflicts with the server's own numpy"),
        (["nbt-numpy-fan"], "numpy"),
    ],
)
async def test_requirements_that_cannot_be_met_fail_with_the_reason(package_index, tmp_path, requirements, says):
    with pytest.raises(PackageError) as caught:
        await environments(package_index, tmp_path).resolve(requirements)
    assert says in str(caught.value)
    assert not [entry for entry in tmp_path.iterdir() if not entry.name.startswith(".")]


async def test_an_unreachable_index_or_a_slow_build_fails_cleanly(package_index, tmp_path, free_tcp_port, monkeypatch):
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")  # an operator's knob, passed to uv: no 7 s of retries here
    unreachable = Environments(PackageSettings(root=str(tmp_path), index_url=f"http://127.0.0.1:{free_tcp_port}/simple", build_timeout=60))
    with pytest.raises(PackageError, match="could not be reached"):
        await unreachable.resolve(["nbt-alpha"])
    lock = await environments(package_index, tmp_path).resolve(["nbt-alpha"])
    slow = environments(package_index, tmp_path / "slow", build_timeout=0.01)
    with pytest.raises(PackageError, match="PACKAGE_BUILD_TIMEOUT"):
        await slow.ensure(lock)
    assert not (tmp_path / "slow").exists() or not [e for e in (tmp_path / "slow").iterdir() if not e.name.startswith(".")]


async def test_packages_turned_off_build_nothing(package_index, tmp_path):
    with pytest.raises(PackageError, match="turned off"):
        await environments(package_index, tmp_path, enabled=False).resolve(["nbt-alpha"])


async def test_unused_environments_are_collected_never_a_used_one(package_index, tmp_path):
    envs = environments(package_index, tmp_path)
    kept = envs.key(await envs.resolve(["nbt-alpha"]))
    used = envs.key(await envs.resolve(["nbt-gamma"]))
    orphan = envs.key(await envs.resolve(["nbt-beta==1.0"]))
    for requirements in (["nbt-alpha"], ["nbt-gamma"], ["nbt-beta==1.0"]):
        await envs.ensure(await envs.resolve(requirements))
    envs.acquire(used)
    sizes = {entry["key"]: entry["bytes"] for entry in envs.usage()}
    assert set(sizes) == {kept, used, orphan} and all(size > 0 for size in sizes.values())
    assert envs.collect_garbage({kept}) == ([], 0)  # all used within the grace period
    removed, freed = envs.collect_garbage({kept}, grace_seconds=0)
    assert removed == [orphan] and freed == sizes[orphan]
    assert {entry["key"] for entry in envs.usage()} == {kept, used}


@pytest.fixture
def free_tcp_port():
    from tests.live import free_port

    return free_port()


# --- in a notebook, through the protocol and the real worker (the production shape) ---------------
async def set_packages(client, requirements):
    """Send a new list; the events up to its end (packages_updated, or a packages_progress error)."""
    reply = await client.request(type="set_packages", requirements=requirements, timeout=60)
    if reply["type"] == "error":
        return [reply]
    return await client.wait_for(lambda e: e["type"] == "packages_updated" or (e["type"] == "packages_progress" and e["state"] == "error"), 120, "the end of the package change")


@database_sync_to_async
def stored_packages(notebook):
    row = Notebook.objects.get(pk=notebook.pk)
    events = list(NotebookEvent.objects.filter(notebook=row, kind=EVENT_PACKAGES).order_by("id").values_list("after", flat=True))
    return row.requirements, row.requirements_lock, events


@pytest.mark.django_db(transaction=True)
async def test_adding_a_package_builds_restarts_and_reruns_for_everyone(ws, notebook, users):
    alice, carol = await ws(users["alice"], notebook), await ws(users["carol"], notebook)
    cell = await create(alice, "import nbt_alpha, nbt_beta\nvalue = (nbt_alpha.VALUE, nbt_beta.VERSION)\nvalue")
    events = await run_and_wait(alice, cell)
    assert events[-1]["status"] == "error" and "No module named 'nbt_alpha'" in str(alice.state[cell])
    seen = await set_packages(alice, ["nbt-alpha"])
    states = [e["state"] for e in seen if e["type"] == "packages_progress"]
    # (No "installing" when an earlier test of the session built this environment already.)
    assert states[0] == "resolving" and states[-1] == "restarting", states
    assert seen[-1]["locked"] == [{"name": "nbt-alpha", "version": "1.0"}, {"name": "nbt-beta", "version": "2.0"}]
    # The cell that had run runs again on its own, for everyone.
    await alice.wait_status(cell, "success", timeout=60)
    await carol.wait_for(lambda e: e["type"] == "packages_updated", 60, "the viewer hears of the change")
    await carol.wait_status(cell, "success", timeout=60)
    assert "('alpha', '2.0')" in text_output(alice, cell)
    requirements, lock, events = await stored_packages(notebook)
    assert requirements == ["nbt-alpha"] and "nbt-beta==2.0" in lock and events == [{"requirements": ["nbt-alpha"]}]
    # A page opened now gets the packages in its state.
    bob = await ws(users["bob"], notebook, wait_state=False)
    state = (await bob.wait_state())[-1]["notebook"]["packages"]
    assert state["requirements"] == ["nbt-alpha"] and state["enabled"] is True and state["locked"][0]["name"] == "nbt-alpha"


@pytest.mark.django_db(transaction=True)
async def test_a_failed_change_leaves_the_notebook_and_its_process_as_they_were(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    assert (await set_packages(alice, ["nbt-beta==1.0"]))[-1]["type"] == "packages_updated"
    counter = await create(alice, "import os\ncounter = os.getpid()")
    assert (await run_and_wait(alice, counter))[-1]["status"] == "success"
    before = await stored_packages(notebook)
    for requirements, says in ((["nbt-sdist-only"], "Only source distributions"), (["nbt-beta==1.0", "numpy<1"], "conflicts with the server's own numpy")):
        seen = await set_packages(alice, requirements)
        assert seen[-1]["state"] == "error" and says in seen[-1]["message"], seen[-1]
    for bad in (["https://example.com/x.whl"], "seaborn", [f"p{i}" for i in range(51)], [1]):
        reply = await alice.request(type="set_packages", requirements=bad)
        assert reply["type"] == "error" and reply["code"] == "invalid_field", reply
    assert await stored_packages(notebook) == before
    # The process was never restarted: the namespace still holds what ran.
    reader = await create(alice, "same = counter == __import__('os').getpid()\nsame")
    assert (await run_and_wait(alice, reader))[-1]["status"] == "success"
    assert text_output(alice, reader) == "True"
    assert alice.state[counter]["status"] == "success"


@pytest.mark.django_db(transaction=True)
async def test_viewers_cannot_change_packages(ws, notebook, users):
    carol = await ws(users["carol"], notebook)
    reply = await carol.request(type="set_packages", requirements=["nbt-alpha"])
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    assert (await stored_packages(notebook))[0] == []


@pytest.mark.django_db(transaction=True)
async def test_the_environment_is_read_only_shared_and_the_index_out_of_reach(ws, notebook, users, package_index):
    other = await database_sync_to_async(Notebook.objects.create)(name="Another", owner=users["alice"])
    alice, again = await ws(users["alice"], notebook), await ws(users["alice"], other)
    for client in (alice, again):
        assert (await set_packages(client, ["nbt-gamma"]))[-1]["type"] == "packages_updated"
    probe = (
        "import nbt_gamma, nbt_gamma_extra, os, sys, urllib.request\n"
        "where = os.path.dirname(nbt_gamma.__file__)\n"
        "try:\n    open(os.path.join(where, 'mine.py'), 'w')\n    wrote = 'wrote'\nexcept OSError as exc:\n    wrote = type(exc).__name__ + ' ' + str(exc.errno)\n"
        f"try:\n    urllib.request.urlopen({package_index.url!r}, timeout=3)\n    index = 'reached'\nexcept OSError as exc:\n    index = 'unreachable'\n"
        "(where, nbt_gamma_extra.EXTRA, wrote, index, os.stat(nbt_gamma.__file__).st_ino)"
    )
    outputs = []
    for client in (alice, again):
        cell = await create(client, probe)
        assert (await run_and_wait(client, cell))[-1]["status"] == "success", client.state[cell]
        outputs.append(text_output(client, cell))
    assert outputs[0] == outputs[1]  # one directory, the same files (inode) for both notebooks
    assert "'/opt/notebook-environment/nbt_gamma', True, 'OSError 30', 'unreachable'" in outputs[0]  # EROFS


@pytest.mark.skipif(not os.environ.get("PACKAGES_REAL_INDEX"), reason="opt-in: PACKAGES_REAL_INDEX=1 installs from the real index (https://pypi.org/simple)")
async def test_a_real_package_from_the_real_index(tmp_path):
    envs = Environments(PackageSettings(root=str(tmp_path), index_url="https://pypi.org/simple", build_timeout=300))
    lock = await envs.resolve(["tabulate"])
    site = await envs.ensure(lock)
    result = await asyncio.create_subprocess_exec(sys.executable, "-c", "import tabulate; print(tabulate.__version__)", env={"PYTHONPATH": str(site)}, stdout=asyncio.subprocess.PIPE)
    out, _ = await result.communicate()
    assert out.strip() and SITE in str(site)


# --- files: exports keep the packages, imports read them back ---------------------------------------
def import_file(filename, text):
    from django.conf import settings

    from notebooks_app import importing

    return importing.read_notebook(filename, text.encode(), max_bytes=10**7, max_code_bytes=settings.MAX_CODE_BYTES)


@pytest.mark.django_db
def test_exports_keep_the_packages_and_imports_read_them_back(users):
    from notebooks_app import exporting, operations
    from notebooks_app.importing import ImportedCell

    notebook = operations.import_notebook(users["alice"], name="Deps", cells=[ImportedCell("python", "import nbt_alpha")], requirements=["nbt-alpha>=1", "scipy"])
    py = exporting.export_notebook(notebook, "py").content
    assert py.startswith('# /// script\n# dependencies = [\n#     "nbt-alpha>=1",\n#     "scipy",\n# ]\n# ///\n')
    ipynb = exporting.export_notebook(notebook, "ipynb").content
    assert '"reactive_notebooks": {\n   "requirements": [\n    "nbt-alpha>=1",' in ipynb
    for filename, text in (("deps.py", py), ("deps.ipynb", ipynb)):
        imported = import_file(filename, text)
        assert imported.requirements == ["nbt-alpha>=1", "scipy"], filename
        assert [cell.code for cell in imported.cells] == ["import nbt_alpha"], filename  # the block is not a cell


def test_pip_lines_and_marimo_script_blocks_become_the_packages():
    imported = import_file("a.ipynb", '{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": null, "source": "!pip install -q seaborn \'scipy>=1.11\' git+https://x/y.git\\n%pip install seaborn\\nimport seaborn"}]}')
    assert imported.requirements == ["seaborn", "scipy>=1.11"]
    assert any("git+https://x/y.git" in note and "left out" in note for note in imported.notes)
    marimo = (
        '# /// script\n# requires-python = ">=3.11"\n# dependencies = ["polars>=1", "marimo"]\n# ///\n'
        "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    x = 1\n    return (x,)\n"
    )
    imported = import_file("m.py", marimo)
    assert imported.requirements == ["polars>=1", "marimo"] and [c.code for c in imported.cells] == ["x = 1"]


@pytest.mark.django_db(transaction=True)
async def test_an_imported_notebook_installs_its_packages_when_it_first_runs(ws, users):
    from notebooks_app import operations
    from notebooks_app.importing import ImportedCell

    notebook = await database_sync_to_async(operations.import_notebook)(users["alice"], name="Imported", cells=[ImportedCell("python", "import nbt_alpha\nnbt_alpha.VALUE")], requirements=["nbt-alpha"])
    alice = await ws(users["alice"], notebook)
    cell = alice.order[0]
    seen = await run_and_wait(alice, cell)
    assert seen[-1]["status"] == "success", alice.state[cell]
    assert "resolving" in {e["state"] for e in seen if e["type"] == "packages_progress"}
    assert [e["locked"] for e in seen if e["type"] == "packages_updated"] == [[{"name": "nbt-alpha", "version": "1.0"}, {"name": "nbt-beta", "version": "2.0"}]]
    assert text_output(alice, cell) == "'alpha'"
    requirements, lock, events = await stored_packages(notebook)
    assert requirements == ["nbt-alpha"] and "nbt-alpha==1.0" in lock and events == []  # the lock is bookkeeping, not an edit


@pytest.mark.django_db
def test_the_environments_command_lists_and_collects(users, settings, tmp_path, package_index):
    import io

    from django.core.management import call_command

    from notebooks_app import operations
    from notebooks_app.importing import ImportedCell

    settings.ENVIRONMENTS_DIR = tmp_path
    envs = environments(package_index, tmp_path)
    kept_lock = asyncio.run(envs.resolve(["nbt-alpha"]))
    orphan_lock = asyncio.run(envs.resolve(["nbt-gamma"]))
    for lock in (kept_lock, orphan_lock):
        asyncio.run(envs.ensure(lock))
    notebook = operations.import_notebook(users["alice"], name="Uses alpha", cells=[ImportedCell("python", "1")], requirements=["nbt-alpha"])
    Notebook.objects.filter(pk=notebook.pk).update(requirements_lock=kept_lock)
    out = io.StringIO()
    call_command("environments", stdout=out)
    assert "2 environments" in out.getvalue() and "used by a notebook: nbt-alpha 1.0, nbt-beta 2.0" in out.getvalue() and "unused: nbt-gamma 1.0" in out.getvalue()
    out = io.StringIO()
    call_command("environments", "gc", "--hours", "0", stdout=out)
    assert out.getvalue().startswith("Removed 1 unused environment, ") and "1 environment in" in out.getvalue() and "nbt-gamma" not in out.getvalue()


@pytest.mark.django_db(transaction=True)
async def test_two_editors_at_once_one_change_wins_and_the_other_hears_why(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    await alice.send(type="set_packages", requirements=["nbt-alpha"], requestId="alice-add")
    await bob.send(type="set_packages", requirements=["nbt-gamma"], requestId="bob-add")
    seen = await bob.wait_for(lambda e: e.get("requestId") == "bob-add" and (e["type"] == "packages_updated" or e.get("state") == "error"), 120, "bob's answer")
    bobs = seen[-1]
    seen = await alice.wait_for(lambda e: e.get("requestId") == "alice-add" and (e["type"] == "packages_updated" or e.get("state") == "error"), 120, "alice's answer")
    alices = seen[-1]
    requirements, _, events = await stored_packages(notebook)
    outcomes = {name: event["type"] == "packages_updated" for name, event in (("alice", alices), ("bob", bobs))}
    for event in (alices, bobs):
        if event["type"] == "packages_progress":
            assert "under way" in event["message"], event
    assert any(outcomes.values())  # never both refused
    assert len(events) == sum(outcomes.values())  # only what was built is saved, once each
    if outcomes == {"alice": True, "bob": False}:
        assert requirements == ["nbt-alpha"]
    else:  # bob's was built (alone, or after alice's)
        assert requirements == ["nbt-gamma"]


@pytest.mark.django_db(transaction=True)
async def test_two_notebooks_adding_the_same_packages_at_once_share_one_build(ws, notebook, users):
    from django.conf import settings

    others = [await database_sync_to_async(Notebook.objects.create)(name=f"Other {i}", owner=users["alice"]) for i in range(2)]
    clients = [await ws(users["alice"], nb) for nb in others]
    for index, client in enumerate(clients):
        await client.send(type="set_packages", requirements=["nbt-beta==1.0", "nbt-alpha"], requestId=f"same-{index}")
    for client in clients:
        await client.wait_for(lambda e: e["type"] == "packages_updated", 120, "installed")
    locks = {(await stored_packages(nb))[1] for nb in others}
    assert len(locks) == 1
    envs = Environments(PackageSettings(root=str(settings.ENVIRONMENTS_DIR)))
    assert envs.built(locks.pop()) is not None


@pytest.mark.django_db(transaction=True)
async def test_removing_a_package_takes_it_away_from_the_cells(ws, notebook, users):
    alice = await ws(users["alice"], notebook)
    assert (await set_packages(alice, ["nbt-gamma", "nbt-beta==1.0"]))[-1]["type"] == "packages_updated"
    cell = await create(alice, "import nbt_gamma\nnbt_gamma.VALUE")
    assert (await run_and_wait(alice, cell))[-1]["status"] == "success"
    seen = await set_packages(alice, ["nbt-beta==1.0"])
    assert seen[-1]["locked"] == [{"name": "nbt-beta", "version": "1.0"}]
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e.get("cellId") == cell and e["status"] == "error", 60, "the cell fails without its package")
    assert "No module named 'nbt_gamma'" in str(alice.state[cell]["error"])
    seen = await set_packages(alice, [])
    assert seen[-1]["type"] == "packages_updated" and seen[-1]["locked"] == []
    requirements, lock, events = await stored_packages(notebook)
    assert requirements == [] and lock == "" and [e["requirements"] for e in events] == [["nbt-gamma", "nbt-beta==1.0"], ["nbt-beta==1.0"], []]


@pytest.mark.django_db(transaction=True)
async def test_the_notebook_module_gives_way_to_a_package_called_notebook(ws, notebook, users, package_index):
    """`reactive_notebook` always works; `notebook` is its alias until the notebook's packages
    bring a real `notebook` (Jupyter's), which then wins."""
    package_index.add_wheel("notebook", "7.0", {"notebook/__init__.py": 'JUPYTER = "yes"\n'})
    alice = await ws(users["alice"], notebook)
    probe = await create(alice, "import reactive_notebook, notebook\n(hasattr(reactive_notebook, 'ui'), getattr(notebook, 'JUPYTER', 'alias'))")
    assert (await run_and_wait(alice, probe))[-1]["status"] == "success", alice.state[probe]
    assert text_output(alice, probe) == "(True, 'alias')"
    assert (await set_packages(alice, ["notebook"]))[-1]["type"] == "packages_updated"
    await alice.wait_for(lambda e: e["type"] == "cell_status" and e.get("cellId") == probe and e["status"] == "success", 60, "the probe reruns")
    assert text_output(alice, probe) == "(True, 'yes')"
