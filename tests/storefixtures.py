"""Store fixtures, for the store's contract suite and for any test that needs a database.

Load them explicitly where used, with a module-level line in the test module::

    pytest_plugins = ["tests.storefixtures"]

- ``db_url``: a fresh, empty (unmigrated) database URL, parametrized "sqlite" (a file in
  ``tmp_path``) and "postgres" (a schema of its own on the test server, dropped after).
- ``store``: a migrated ``SqlStore`` on ``db_url``.
- ``sqlite_url`` / ``postgres_url``: one backend only.

PostgreSQL comes from ``JOBHOST_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://root@127.0.0.1:5432/test``). When it is unreachable the postgres
cases are skipped, except when ``CI`` is set: there they fail, so a broken service
cannot turn the suite green.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from jobhost.store import SqlStore

POSTGRES_URL = os.environ.get(
    "JOBHOST_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


@cache
def _postgres_error() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can (checked once per run)."""
    engine = sa.create_engine(POSTGRES_URL, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "not available"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        engine.dispose()
    return None


def require_postgres() -> None:
    """Skip (locally) or fail (when ``CI`` is set) if the test PostgreSQL is unreachable."""
    error = _postgres_error()
    if error is None:
        return
    message = f"PostgreSQL is not reachable at {POSTGRES_URL} ({error})"
    if os.environ.get("CI"):
        raise RuntimeError(f"{message}; CI requires it")
    pytest.skip(f"{message}; start it or set JOBHOST_TEST_POSTGRES_URL")


def schema_url(base_url: str, schema: str) -> str:
    """``base_url`` with every connection's search_path set to ``schema``."""
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobhost.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections live in a fresh schema, dropped with its rows afterwards."""
    require_postgres()
    schema = f"jh_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, poolclass=sa.NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield schema_url(POSTGRES_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh empty database on each backend in turn."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    """A migrated store on each backend in turn; closed afterwards."""
    sql_store = SqlStore(db_url)
    sql_store.migrate()
    try:
        yield sql_store
    finally:
        sql_store.close()
