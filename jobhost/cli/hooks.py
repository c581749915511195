"""``jobhost hook create|rotate|show JOB``: a job's webhook, on the server.

The URL and the signing secret are printed once, when made; the server keeps neither.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from jobhost.catalog.definition import parse_job_id
from jobhost.cli.common import handle_errors, out, print_json

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
JobArg = Annotated[str, typer.Argument(metavar="JOB_ID", help="App/Job")]

app = typer.Typer(
    help='A job\'s webhook: a secret URL that starts it (job.json needs "webhook").',
    no_args_is_help=True,
)


def _made(ctx: typer.Context, job_id: str, rotate: bool, as_json: bool) -> None:
    from jobhost.cli.remote import client_for
    from jobhost.client import plain

    parse_job_id(job_id)
    with client_for(ctx) as client:
        made = plain(client.create_hook(job_id, rotate=rotate))
        base = client.base_url
    made["url"] = base.rstrip("/") + str(made["url_path"])
    if as_json:
        print_json(made)
        return
    out.print(f"Webhook of {job_id} {'rotated' if rotate else 'created'}; shown this once:")
    out.print(f"  URL: {made['url']}", markup=False)
    if made.get("signing_secret"):
        out.print(f"  Signing secret: {made['signing_secret']}", markup=False)
        out.print("  Sign each body: X-Hub-Signature-256: sha256=<hex HMAC-SHA256>", markup=False)
    out.print(f"  Calls allowed: {made['rate_per_minute']} a minute", markup=False)


@app.command("create")
@handle_errors
def create_cmd(ctx: typer.Context, job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Make the job's webhook and print its URL (and signing secret) once."""
    _made(ctx, job_id, False, as_json)


@app.command("rotate")
@handle_errors
def rotate_cmd(ctx: typer.Context, job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Give the webhook a new URL (and secret); the old ones stop working at once."""
    _made(ctx, job_id, True, as_json)


@app.command("show")
@handle_errors
def show_cmd(ctx: typer.Context, job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Whether the job has a webhook, who made it and when, and its rules."""
    from jobhost.cli.remote import client_for
    from jobhost.client import plain

    parse_job_id(job_id)
    with client_for(ctx) as client:
        hook: dict[str, Any] = plain(client.hook(job_id))
    if as_json:
        print_json(hook)
        return
    if not hook["exists"]:
        out.print(f"{job_id} has no webhook yet: jobhost hook create {job_id}", markup=False)
        return
    signed = "signed (hmac-sha256)" if hook["signature"] else "unsigned"
    out.print(
        f"{job_id}: webhook by {hook['created_by']} at {hook['created_at']}, {signed}, "
        f"{hook['rate_per_minute']} calls a minute",
        markup=False,
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="hook")
