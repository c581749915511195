"""Scanning real job folders: valid and invalid entries, duplicates, rescans, hot reload."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from jobhost.catalog.discovery import Catalog, rescan, scan
from jobhost.catalog.watch import watch_catalog
from jobhost.errors import JobNotFound
from jobhost.models import Principal
from tests.jobfolders import touch_later, write_job


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    root = tmp_path / "apps"
    root.mkdir()
    return root


def only_error(catalog: Catalog, job_id: str) -> str:
    job = catalog[job_id]
    assert not job.valid
    assert job.definition is None
    assert len(job.errors) == 1, job.errors
    return job.errors[0]


def test_valid_jobs_are_discovered_in_id_order(apps: Path) -> None:
    write_job(apps, "Web", "Zeta")
    write_job(apps, "Backup", "Nightly", init=("init-job.py", "print('{}')\n"))
    catalog = scan([apps])
    assert list(catalog) == ["Backup/Nightly", "Web/Zeta"]
    job = catalog.require("Backup/Nightly")
    assert job.valid
    assert job.errors == ()
    assert (job.app, job.name, job.folder) == ("Backup", "Nightly", apps / "Backup/jobs/Nightly")
    assert job.script == apps / "Backup/jobs/Nightly/run.py"
    assert job.init_script == apps / "Backup/jobs/Nightly/init-job.py"
    assert catalog["Web/Zeta"].init_script is None
    assert [j.id for j in catalog.valid()] == ["Backup/Nightly", "Web/Zeta"]
    assert catalog.invalid() == []


def test_require_unknown_job(apps: Path) -> None:
    with pytest.raises(JobNotFound) as caught:
        scan([apps]).require("Nope/Nothing")
    assert caught.value.message == "No job 'Nope/Nothing' in the catalog"


def test_missing_roots_and_odd_entries_are_ignored(apps: Path, tmp_path: Path) -> None:
    (apps / "NoJobsFolder").mkdir()
    (apps / "Web" / "jobs").mkdir(parents=True)
    (apps / "Web" / "jobs" / "README.md").write_text("not a folder")
    (apps / "Web" / "jobs" / ".hidden").mkdir()
    (apps / "Web" / "jobs" / "__pycache__").mkdir()
    assert len(scan([tmp_path / "absent", apps])) == 0


def test_bad_json_names_line_and_column(apps: Path) -> None:
    write_job(apps, "App", "Broken", '{\n  "Name": "x",\n  "ScriptRelativePath": run.py\n}')
    assert only_error(scan([apps]), "App/Broken") == (
        "apps/App/jobs/Broken/job.json: not valid JSON: Expecting value at line 3 column 25"
    )


def test_non_object_json(apps: Path) -> None:
    write_job(apps, "App", "List", "[1, 2]")
    assert only_error(scan([apps]), "App/List") == (
        "apps/App/jobs/List/job.json: must hold a JSON object, got an array"
    )


def test_missing_job_json(apps: Path) -> None:
    (apps / "App" / "jobs" / "Empty").mkdir(parents=True)
    assert only_error(scan([apps]), "App/Empty") == (
        "apps/App/jobs/Empty: job.json is missing; every job folder needs one"
    )


def test_utf8_bom_is_accepted(apps: Path) -> None:
    folder = write_job(apps, "App", "Bom")
    (folder / "job.json").write_bytes(b"\xef\xbb\xbf" + (folder / "job.json").read_bytes())
    assert scan([apps])["App/Bom"].valid


def test_missing_script(apps: Path) -> None:
    write_job(apps, "App", "NoScript", {"ScriptRelativePath": "gone.py"}, script=None)
    assert only_error(scan([apps]), "App/NoScript") == (
        "apps/App/jobs/NoScript/job.json: ScriptRelativePath 'gone.py' "
        "does not exist in the job folder"
    )


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("../../etc/passwd", "ScriptRelativePath must stay inside the job folder"),
        ("/etc/passwd", "ScriptRelativePath must be relative to the job folder"),
    ],
)
def test_escaping_script_paths(apps: Path, relative: str, message: str) -> None:
    write_job(apps, "App", "Escape", {"ScriptRelativePath": relative}, script=None)
    assert message in only_error(scan([apps]), "App/Escape")


def test_symlink_out_of_the_folder(apps: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("print('x')\n")
    folder = write_job(apps, "App", "Link", {"ScriptRelativePath": "run.py"}, script=None)
    (folder / "run.py").symlink_to(outside)
    sub = folder / "lib"
    sub.symlink_to(tmp_path)
    write_job(apps, "App", "SubLink", {"ScriptRelativePath": "lib/outside.py"}, script=None)
    (apps / "App/jobs/SubLink/lib").symlink_to(tmp_path)
    catalog = scan([apps])
    assert only_error(catalog, "App/Link") == (
        "apps/App/jobs/Link/job.json: ScriptRelativePath 'run.py' resolves outside the job folder"
    )
    assert "resolves outside the job folder" in only_error(catalog, "App/SubLink")


def test_symlink_inside_the_folder_is_fine(apps: Path) -> None:
    folder = write_job(apps, "App", "Inner", {"ScriptRelativePath": "run.py"}, script="real.py")
    (folder / "run.py").symlink_to(folder / "real.py")
    assert scan([apps])["App/Inner"].valid


def test_script_that_nothing_can_run(apps: Path) -> None:
    write_job(apps, "App", "Xyz", {"ScriptRelativePath": "job.xyz"}, script="job.xyz")
    assert only_error(scan([apps]), "App/Xyz") == (
        "apps/App/jobs/Xyz/job.json: job.xyz: not executable, and no interpreter is known "
        "for .xyz (chmod +x it, or use .py, .sh or .ps1)"
    )


def test_script_that_is_a_directory(apps: Path) -> None:
    folder = write_job(apps, "App", "Dir", {"ScriptRelativePath": "sub"}, script=None)
    (folder / "sub").mkdir()
    assert "ScriptRelativePath 'sub' is not a file" in only_error(scan([apps]), "App/Dir")


def test_bad_cron_and_bad_variable_spec_together(apps: Path) -> None:
    write_job(
        apps,
        "App",
        "Many",
        {"default_schedule": "every day", "template_variables": {"N": {"type": "int"}}},
    )
    errors = scan([apps])["App/Many"].errors
    assert len(errors) == 2
    assert errors[0].startswith("apps/App/jobs/Many/job.json: default_schedule cron expression")
    assert "template_variables.N.type must be one of" in errors[1]


def test_invalid_folder_names_are_listed_not_dropped(apps: Path) -> None:
    write_job(apps, "My App", "Job")
    write_job(apps, "App", "-dash")
    catalog = scan([apps])
    assert only_error(catalog, "My App/Job") == (
        "apps/My App/jobs/Job: folder name 'My App' may only contain letters, digits, '_', "
        "'.' and '-', and must start with a letter or digit"
    )
    assert "folder name '-dash'" in only_error(catalog, "App/-dash")
    assert {job.id for job in catalog.invalid()} == {"My App/Job", "App/-dash"}


def test_duplicate_ids_first_root_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "apps", tmp_path / "more"
    write_job(first, "App", "Same", {"Name": "first"})
    write_job(second, "App", "Same", {"Name": "second"})
    catalog = scan([first, second])
    winner = catalog["App/Same"]
    assert winner.definition is not None
    assert winner.definition.Name == "first"
    assert winner.warnings == (
        "apps/App/jobs/Same: job ID 'App/Same' is also defined by more/App/jobs/Same, "
        "which is ignored",
    )
    (loser,) = catalog.invalid()
    assert loser.folder == second / "App/jobs/Same"
    assert loser.errors == (
        "more/App/jobs/Same: job ID 'App/Same' is already defined by apps/App/jobs/Same; "
        "this folder is ignored (rename one of them)",
    )


def test_unknown_fields_warn_and_show(apps: Path) -> None:
    write_job(apps, "App", "Extra", {"owner": "ops"})
    job = scan([apps])["App/Extra"]
    assert job.valid
    assert job.to_api()["extra_fields"] == {"owner": "ops"}
    assert job.to_api()["warnings"] == [
        "apps/App/jobs/Extra/job.json: unknown field 'owner' is kept but not used "
        "(check its spelling)"
    ]


def test_to_api_shape_and_permissions(apps: Path) -> None:
    write_job(
        apps,
        "Metrics",
        "Collect",
        {
            "Name": "Collect every {{Interval}} s",
            "Description": "metrics",
            "default_schedule": "*/5 * * * *",
            "roles_start": ["ops"],
            "roles_stop": ["admin"],
            "template_variables": {
                "Interval": {"type": "integer", "default": 60},
                "ApiKey": {"secret": True, "default": "s3cr3t"},
            },
        },
    )
    job = scan([apps])["Metrics/Collect"]
    api = job.to_api(Principal("olga", frozenset({"ops"})))
    assert "s3cr3t" not in json.dumps(api)
    assert api["name"] == "Collect every {{Interval}} s"
    assert api["schedule"] == "*/5 * * * *"
    assert api["roles"] == {
        "start": ["ops"],
        "stop": ["admin"],
        "restart": [],
        "view": None,
        "schedule": None,
    }
    assert api["permissions"] == {
        "start": True,
        "stop": False,
        "restart": True,
        "view": True,
        "schedule": False,
    }
    assert api["variables"][1] == {
        "name": "ApiKey",
        "description": "",
        "type": "string",
        "default": "***",
        "required": False,
        "pattern": None,
        "choices": None,
        "min": None,
        "max": None,
        "secret": True,
        "choices_from": None,
    }
    assert (api["valid"], api["has_init_script"], api["max_concurrent"]) == (True, False, 1)
    assert "permissions" not in job.to_api()


def test_invalid_job_to_api(apps: Path) -> None:
    write_job(apps, "App", "Bad", "{")
    api = scan([apps])["App/Bad"].to_api(Principal("olga", frozenset({"ops"})))
    assert api["valid"] is False
    assert api["name"] == "Bad"
    assert api["variables"] == []
    assert api["permissions"]["view"] is False


def test_rescan_reuses_unchanged_jobs(apps: Path) -> None:
    write_job(apps, "App", "Keep")
    changed = write_job(apps, "App", "Change")
    before = scan([apps])
    assert rescan(before, [apps]) is before  # nothing changed: the same snapshot

    (changed / "job.json").write_text(json.dumps({"ScriptRelativePath": "run.py", "Name": "new"}))
    touch_later(changed / "job.json")
    write_job(apps, "App", "Added")
    after = rescan(before, [apps])
    assert after["App/Keep"] is before["App/Keep"]
    definition = after["App/Change"].definition
    assert definition is not None
    assert definition.Name == "new"
    assert "App/Added" in after


def test_rescan_with_changed_paths_only_looks_there(apps: Path) -> None:
    keep = write_job(apps, "App", "Keep")
    edit = write_job(apps, "App", "Edit")
    before = scan([apps])
    (keep / "job.json").write_text("{ broken")
    (edit / "run.py").unlink()
    after = rescan(before, [apps], changed=[edit / "run.py"])
    assert after["App/Keep"] is before["App/Keep"]  # not named as changed: not re-read
    assert "does not exist" in only_error(after, "App/Edit")


def test_rescan_sees_removed_folders(apps: Path) -> None:
    gone = write_job(apps, "App", "Gone")
    before = scan([apps])
    for child in gone.iterdir():
        child.unlink()
    gone.rmdir()
    after = rescan(before, [apps], changed=[gone])
    assert "App/Gone" not in after
    assert len(after) == 0


async def test_watch_publishes_new_folders(apps: Path) -> None:
    write_job(apps, "App", "First")
    current = scan([apps])
    first = current["App/First"]
    published: asyncio.Queue[Catalog] = asyncio.Queue()

    def on_change(catalog: Catalog) -> None:
        nonlocal current
        current = catalog
        published.put_nowait(catalog)

    stop = asyncio.Event()
    watcher = asyncio.create_task(
        watch_catalog([apps], lambda: current, on_change, stop, debounce_ms=50)
    )
    try:
        # Keep writing until the watcher has started and reported the new folder.
        async def until_seen() -> Catalog:
            while True:
                write_job(apps, "App", "Second", {"Name": f"v{os.getpid()}"})
                try:
                    catalog = await asyncio.wait_for(published.get(), 2)
                except TimeoutError:
                    continue
                if "App/Second" in catalog:
                    return catalog

        catalog = await asyncio.wait_for(until_seen(), 30)
        assert catalog["App/Second"].valid
        assert catalog["App/First"] is first  # untouched folders are reused, not re-read
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 10)


async def test_watch_without_roots_waits_for_stop(tmp_path: Path) -> None:
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(
        watch_catalog([tmp_path / "absent"], lambda: Catalog(), lambda c: None, stop), 5
    )


def test_rescan_sees_a_script_made_executable(apps: Path) -> None:
    folder = write_job(apps, "App", "Tool", {"ScriptRelativePath": "tool"}, script="tool")
    before = scan([apps])
    assert "tool: not executable" in only_error(before, "App/Tool")
    (folder / "tool").chmod(0o755)  # changes neither the folder nor the file's mtime
    after = rescan(before, [apps])
    assert after["App/Tool"].valid
    assert after["App/Tool"].script == folder / "tool"


def test_rescan_sees_a_script_created_in_a_sub_folder(apps: Path) -> None:
    folder = write_job(apps, "App", "Deep", {"ScriptRelativePath": "bin/run.sh"}, script=None)
    (folder / "bin").mkdir()
    before = scan([apps])
    assert only_error(before, "App/Deep") == (
        "apps/App/jobs/Deep/job.json: "
        "ScriptRelativePath 'bin/run.sh' does not exist in the job folder"
    )
    (folder / "bin" / "run.sh").write_text("echo hi\n")  # the job folder's mtime stays
    after = rescan(before, [apps])
    assert after["App/Deep"].valid
    assert after["App/Deep"].script == folder / "bin" / "run.sh"


def test_rescan_sees_an_edit_that_restores_the_mtime(apps: Path) -> None:
    folder = write_job(apps, "App", "Edit", {"Name": "aaaa"})
    before = scan([apps])
    st = (folder / "job.json").stat()
    text = (folder / "job.json").read_text().replace('"aaaa"', '"bbbb"')
    (folder / "job.json").write_text(text)  # same size
    os.utime(folder / "job.json", ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` would
    definition = rescan(before, [apps])["App/Edit"].definition
    assert definition is not None
    assert definition.Name == "bbbb"


def test_the_same_job_json_in_two_folders_names_each_folder(apps: Path) -> None:
    write_job(apps, "App", "One", "[1, 2]")
    write_job(apps, "App", "Two", "[1, 2]")
    catalog = scan([apps])
    assert only_error(catalog, "App/One") == (
        "apps/App/jobs/One/job.json: must hold a JSON object, got an array"
    )
    assert only_error(catalog, "App/Two") == (
        "apps/App/jobs/Two/job.json: must hold a JSON object, got an array"
    )


def test_a_repeated_scan_sees_a_rewrite_of_the_same_size_at_once(apps: Path) -> None:
    folder = write_job(apps, "App", "Same", {"Name": "aaaa"})
    assert scan([apps])["App/Same"].valid
    text = (folder / "job.json").read_text().replace('"aaaa"', "1234")
    (folder / "job.json").write_text(text + "  ")  # "aaaa" → 1234 is two bytes shorter
    assert only_error(scan([apps]), "App/Same") == (
        "apps/App/jobs/Same/job.json: Name must be a string, got 1234"
    )


def test_oversized_job_json_is_an_error_not_a_read(apps: Path) -> None:
    write_job(apps, "App", "Huge", '{"Name": "' + "x" * (1024 * 1024) + '"}')
    assert only_error(scan([apps]), "App/Huge") == (
        "apps/App/jobs/Huge/job.json: larger than 1048576 bytes"
    )


def test_jobs_are_immutable_values(apps: Path) -> None:
    write_job(apps, "App", "Fixed")
    job = scan([apps])["App/Fixed"]
    with pytest.raises(AttributeError) as caught:
        job.name = "Other"
    assert str(caught.value) == "Job is immutable; use Job.replace(...) to change 'name'"
    broken = job.replace(definition=None, errors=("bad",))
    assert (broken.valid, broken.errors, broken.folder) == (False, ("bad",), job.folder)
    assert job.valid
    assert job == scan([apps])["App/Fixed"]
