"""Alembic environment for JobHost's store; run through ``SqlStore.migrate()``, never by hand.

``migrate()`` passes its own open connection (already holding the migration lock) in
``config.attributes["connection"]``; this file only runs the revisions on it.

Adding a table or a column (schedules, schedule fires, notification deliveries, ...):

1. describe the table at ``head``: in ``jobhost/store/tables.py``, or in the feature's
   own module under ``jobhost/store/`` (e.g. ``schedules.py``) attached to
   ``tables.metadata``;
2. add ``versions/NNNN_<what>.py`` with ``revision = "NNNN"`` and ``down_revision`` set
   to the previous revision (``"0001"`` for the first addition), whose ``upgrade()``
   uses ``op.create_table``/``op.add_column`` with explicit types — never import the
   live table objects, a revision must keep meaning what it meant when written;
3. on SQLite, column changes other than adding run inside ``op.batch_alter_table``
   (``render_as_batch`` is on here);
4. ``tests/test_store.py::test_migrations_match_tables`` fails until the two agree.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from jobhost.store.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError(
        "JobHost migrations run through SqlStore(url).migrate(), "
        "which supplies the database connection; the alembic command line is not used"
    )
_run(_connection)
