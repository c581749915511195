"""``jobhost serve`` migrates its store in a child process, so the server never holds
Alembic; the child takes the URL on stdin and its failure is reported in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobhost.store.sql import SqlStore

PROBE = (
    "import sys\n"
    "from jobhost.store.sql import SqlStore\n"
    "store = SqlStore(sys.stdin.read())\n"
    "store.migrate_apart()\n"
    "print(store.at_head(), 'alembic' in sys.modules)\n"
)


def test_the_store_reaches_the_head_without_alembic_in_this_process(db_url: str) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", PROBE], input=db_url, capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["True", "False"]
    store = SqlStore(db_url)
    try:
        store.migrate_apart()  # at the head already: nothing to do, no child
        assert store.at_head()
    finally:
        store.close()


def test_a_migration_that_fails_says_why_in_one_line() -> None:
    store = SqlStore("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    try:
        with pytest.raises(RuntimeError, match=r"^Migrating the store failed: .*(refused|connect)"):
            store.migrate_apart()
    finally:
        store.close()


def test_serve_on_an_unreachable_store_says_so_and_exits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBHOST_")}
    env["JOBHOST_DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"
    env["JOBHOST_CONFIG"] = str(tmp_path / "none.toml")
    argv = [sys.executable, "-c", "from jobhost.cli import main; main()"]
    argv += ["--apps", str(tmp_path), "--data-dir", str(tmp_path / "data"), "serve"]
    ran = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 2
    assert ran.stderr.startswith("error: Migrating the store failed: ")
    assert "Connection refused" in ran.stderr
    assert "Traceback" not in ran.stderr
