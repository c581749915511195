"""Admin verbs against a server: users, API tokens and the audit trail.

The server decides who may do what (users and audit need a superuser); these verbs
parse, call ``jobhost.client`` and render.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from jobhost.cli.common import err, handle_errors, out, print_json, state
from jobhost.cli.remote import JsonOpt, connect
from jobhost.client import API, Client, plain


def client_for(ctx: typer.Context) -> Client:
    return connect(state(ctx).remote())


# --------------------------------------------------------------------- users
users_app = typer.Typer(help="Users and their roles (superusers only).", no_args_is_help=True)


def _new_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("list")
@handle_errors
def users_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every user, with roles."""
    with client_for(ctx) as client:
        users = plain(client.users())
    if as_json:
        print_json(users)
        return
    table = Table("User", "Roles", "Disabled", "Created")
    for user in users:
        table.add_row(
            str(user["username"]),
            ", ".join(user.get("roles") or []),
            "yes" if user.get("disabled") else "",
            str(user.get("created_at") or "")[:19].replace("T", " "),
        )
    out.print(table)


@users_app.command("add")
@handle_errors
def users_add(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(metavar="USERNAME")],
    role: Annotated[list[str] | None, typer.Option("--role", help="A role (repeatable).")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a user (the password is prompted for, or read from stdin)."""
    password = _new_password(password_stdin)
    with client_for(ctx) as client:
        user = plain(client.create_user(username, password, role or []))
    _show_user(user, "Created", as_json)


def _show_user(user: dict[str, Any], verb: str, as_json: bool) -> None:
    if as_json:
        print_json(user)
        return
    roles = ", ".join(user.get("roles") or []) or "no roles"
    state_text = " (disabled)" if user.get("disabled") else ""
    out.print(f"{verb} {user['username']}: {roles}{state_text}", markup=False)


@users_app.command("set-roles")
@handle_errors
def users_set_roles(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(metavar="USERNAME")],
    roles: Annotated[list[str] | None, typer.Argument(metavar="[ROLE]...")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace a user's roles (none given: no roles)."""
    with client_for(ctx) as client:
        user = plain(client.update_user(username, roles=roles or []))
    _show_user(user, "Updated", as_json)


@users_app.command("set-password")
@handle_errors
def users_set_password(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(metavar="USERNAME")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
) -> None:
    """Set a user's password."""
    password = _new_password(password_stdin)
    with client_for(ctx) as client:
        user = plain(client.update_user(username, password=password))
    _show_user(user, "Updated", False)


@users_app.command("disable")
@handle_errors
def users_disable(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(metavar="USERNAME")],
    enable: Annotated[bool, typer.Option("--enable", help="Enable the user again.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Disable a user (they can no longer sign in or use their tokens)."""
    with client_for(ctx) as client:
        user = plain(client.update_user(username, disabled=not enable))
    _show_user(user, "Enabled" if enable else "Disabled", as_json)


@users_app.command("delete")
@handle_errors
def users_delete(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(metavar="USERNAME")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a user."""
    if not yes and not typer.confirm(f"Delete user {username!r}?"):
        raise typer.Exit(1)
    with client_for(ctx) as client:
        client.delete_user(username)
    out.print(f"Deleted {username}", markup=False)


# --------------------------------------------------------------------- tokens
tokens_app = typer.Typer(help="API tokens for scripts and the CLI.", no_args_is_help=True)


@tokens_app.command("list")
@handle_errors
def tokens_list(
    ctx: typer.Context,
    all_users: Annotated[bool, typer.Option("--all", help="Every user's (admins).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Your tokens (never their values)."""
    with client_for(ctx) as client:
        tokens = plain(client.tokens(all_users=all_users))
    if as_json:
        print_json(tokens)
        return
    table = Table("ID", "Name", "User", "Created", "Expires", "Last used", "Revoked")
    for token in tokens:
        table.add_row(
            str(token["id"]),
            str(token.get("name") or ""),
            str(token.get("username") or ""),
            str(token.get("created_at") or "")[:19].replace("T", " "),
            str(token.get("expires_at") or "never")[:19].replace("T", " "),
            str(token.get("last_used_at") or "")[:19].replace("T", " "),
            "yes" if token.get("revoked") else "",
        )
    out.print(table)


@tokens_app.command("create")
@handle_errors
def tokens_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    expires_in_days: Annotated[int | None, typer.Option("--expires-in-days", min=1)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; its value is printed this once only."""
    with client_for(ctx) as client:
        created = plain(client.create_token(name, expires_in_days))
    if as_json:
        print_json(created)
        return
    err.print(f"Token {created['id']} ({name}); copy it now, it is not shown again:")
    sys.stdout.write(f"{created['token']}\n")


@tokens_app.command("revoke")
@handle_errors
def tokens_revoke(
    ctx: typer.Context, token_id: Annotated[str, typer.Argument(metavar="TOKEN_ID")]
) -> None:
    """Revoke a token (yours, or anyone's for admins)."""
    with client_for(ctx) as client:
        client.revoke_token(token_id)
    out.print(f"Revoked {token_id}", markup=False)


# --------------------------------------------------------------------- audit
@handle_errors
def audit_cmd(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    user: Annotated[str | None, typer.Option("--user")] = None,
    action: Annotated[str | None, typer.Option("--action", help="e.g. job.start")] = None,
    target: Annotated[str | None, typer.Option("--target", help="e.g. App/Job")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit trail, newest first (superusers only)."""
    with client_for(ctx) as client:
        page = plain(client.audit(user=user, action=action, target=target, limit=limit))
    events = list(page["events"])
    if as_json:
        print_json(events)
        return
    table = Table("At", "User", "Action", "Target", "Outcome", "Address")
    for event in events:
        outcome = str(event.get("outcome") or "")
        table.add_row(
            str(event.get("at") or "")[:19].replace("T", " "),
            str(event.get("user") or ""),
            str(event.get("action") or ""),
            str(event.get("target") or ""),
            f"[red]{outcome}[/red]" if outcome != "ok" else outcome,
            str(event.get("address") or ""),
        )
    out.print(table)


@handle_errors
def passwd_cmd(
    ctx: typer.Context,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the current, then the new password, one a line."
        ),
    ] = False,
) -> None:
    """Change your own password on the server (the current one is asked).

    Your other browser sessions are signed out; API tokens, this CLI's included, stay."""
    if password_stdin:
        current = sys.stdin.readline().rstrip("\r\n")
        new = sys.stdin.readline().rstrip("\r\n")
    else:
        current = typer.prompt("Current password", hide_input=True)
        new = _new_password(False)
    with client_for(ctx) as client:
        body = {"current_password": current, "new_password": new}
        answer = client.call("POST", f"{API}/auth/password", body=body)
    err.print(str(answer.get("message", "Password changed")), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)
    app.command("passwd")(passwd_cmd)
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
