"""``jobhost instances``, ``drain`` and ``resume``: who owns the runs, and upgrades.

``instances`` reads the store directly when no server is configured (it opens no engine
and touches no run); ``drain`` and ``resume`` always go to the server.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from jobhost.cli.common import err, handle_errors, open_store, out, print_json, state
from jobhost.cli.remote import client_for


def _show(instances: list[dict[str, Any]], current: str | None, as_json: bool) -> None:
    if as_json:
        print_json(instances)
        return
    table = Table("Instance", "Kind", "Host", "PID", "Started", "Lease until", "State")
    for item in instances:
        state_text = "draining" if item["draining"] else ("alive" if item["alive"] else "expired")
        mark = " (this server)" if item["id"] == current else ""
        table.add_row(
            item["id"][:12] + mark,
            item["kind"],
            item["host"],
            str(item["pid"]),
            item["started_at"],
            item["lease_expires_at"],
            state_text,
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    @app.command("instances")
    @handle_errors
    def instances_cmd(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")] = False,
    ) -> None:
        """The servers and local runs registered on this store, with their leases."""
        if state(ctx).remote() is not None:
            with client_for(ctx) as client:
                body = client.call("GET", "/api/v1/instances")
            _show(body["instances"], body.get("current"), as_json)
            return
        from jobhost.models import utcnow
        from jobhost.store import instances

        store = open_store(ctx)
        try:
            now = utcnow()
            found = [instance.to_api(now) for instance in instances.list_instances(store)]
        finally:
            store.close()
        _show(found, None, as_json)

    @app.command("drain")
    @handle_errors
    def drain_cmd(
        ctx: typer.Context,
        wait: Annotated[
            float | None,
            typer.Option("--wait", min=0, help="Seconds to let running runs finish (no limit)."),
        ] = None,
        leave: Annotated[
            bool,
            typer.Option("--leave", help="Exit at once; the next server re-adopts the runs."),
        ] = False,
    ) -> None:
        """Drain the server for an upgrade: no new starts or fires, then it exits 0."""
        with client_for(ctx) as client:
            body = client.call(
                "POST", "/api/v1/admin/drain", body={"wait_seconds": wait, "leave": leave}
            )
        if leave:
            err.print("Draining: the server exits now and leaves its runs to the next one")
        else:
            limit = f"up to {wait:g} s" if wait is not None else "however long they take"
            err.print(f"Draining: {body['running']} running runs may finish ({limit}), then exit")

    @app.command("resume")
    @handle_errors
    def resume_cmd(ctx: typer.Context) -> None:
        """End a drain: the server starts runs and fires schedules again."""
        with client_for(ctx) as client:
            client.call("POST", "/api/v1/admin/resume")
        err.print("Resumed: the server starts runs again")
