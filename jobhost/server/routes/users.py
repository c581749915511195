"""User administration (superusers only)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from jobhost.errors import BadRequest, Conflict, NotFound
from jobhost.models import ApiToken, User
from jobhost.server.auth import SuperIdentity, authenticator_of, client_address, engine_of
from jobhost.server.schemas import UserList, UserOut, answers

router = APIRouter(prefix="/api/v1/users", tags=["users"])

USERNAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
ROLE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
MIN_PASSWORD = 8


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=USERNAME)
    password: str = Field(min_length=MIN_PASSWORD, max_length=1024)
    roles: list[str] = Field(default_factory=list, max_length=100)


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str | None = Field(default=None, min_length=MIN_PASSWORD, max_length=1024)
    roles: list[str] | None = Field(default=None, max_length=100)
    disabled: bool | None = None


def _check_roles(roles: list[str]) -> frozenset[str]:
    bad = [r for r in roles if not re.fullmatch(ROLE, r)]
    if bad:
        raise BadRequest(
            f"Invalid role name(s) {', '.join(map(repr, bad))}: use letters, digits, "
            "'_', '.', ':' and '-' (up to 64 characters)"
        )
    return frozenset(roles)


async def _get(request: Request, username: str) -> User:
    engine = engine_of(request)
    user: User | None = await engine.journal.call(engine.store.get_user, username)
    if user is None:
        raise NotFound(f"No user {username!r}")
    return user


@router.get("", **answers(UserList))
async def list_users(identity: SuperIdentity, request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    users: list[User] = await engine.journal.call(engine.store.list_users)
    return {"users": [u.to_api() for u in users]}


@router.post("", **answers(UserOut, 201))
async def create_user(body: NewUser, identity: SuperIdentity, request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    roles = _check_roles(body.roles)
    if await engine.journal.call(engine.store.get_user, body.username) is not None:
        raise Conflict(f"A user {body.username!r} already exists; PATCH it to change it")
    user = User(
        username=body.username,
        password_hash=await authenticator_of(request).passwords.hash(body.password),
        roles=roles,
        created_at=engine.clock(),
    )
    await engine.journal.call(engine.store.save_user, user)
    await engine.audit(
        "user.create",
        identity.principal,
        user.username,
        address=client_address(request),
        details={"roles": sorted(roles)},
    )
    return user.to_api()


@router.patch("/{username}", **answers(UserOut))
async def update_user(
    username: str, body: UserChange, identity: SuperIdentity, request: Request
) -> dict[str, Any]:
    engine = engine_of(request)
    user = await _get(request, username)
    me = identity.principal.username
    if body.disabled and username == me:
        raise Conflict("You cannot disable your own account; ask another admin")
    roles = _check_roles(body.roles) if body.roles is not None else user.roles
    if username == me and not engine.settings.is_superuser(roles):
        raise Conflict("You cannot remove your own admin role; ask another admin")
    auth = authenticator_of(request)
    changed = User(
        username=user.username,
        password_hash=await auth.passwords.hash(body.password)
        if body.password
        else user.password_hash,
        roles=roles,
        disabled=user.disabled if body.disabled is None else body.disabled,
        created_at=user.created_at,
    )
    await engine.journal.call(engine.store.save_user, changed)
    auth.identities.forget_user(username)  # also ends their open streams
    if changed.disabled or body.password:
        # A disabled user, or one whose password changed, must sign in again.
        await engine.journal.call(engine.store.delete_user_sessions, username)
    revoked_tokens: list[str] = []
    if body.password:
        # A reset is for a compromised account: every credential goes, API tokens too.
        tokens: list[ApiToken] = await engine.journal.call(engine.store.list_tokens, username)
        for token in tokens:
            if not token.revoked:
                await engine.journal.call(engine.store.revoke_token, token.id)
                revoked_tokens.append(token.id)
        auth.identities.forget_user(username)
    details: dict[str, Any] = {"fields": sorted(body.model_fields_set)}
    if body.password:
        details["revoked_tokens"] = len(revoked_tokens)
    if body.roles is not None:
        details["roles"] = sorted(roles)
    if body.disabled is not None:
        details["disabled"] = body.disabled
    await engine.audit(
        "user.update",
        identity.principal,
        username,
        address=client_address(request),
        details=details,
    )
    answer = changed.to_api()
    if body.password:
        answer["revoked"] = {"sessions": "all", "tokens": revoked_tokens}
        answer["message"] = (
            f"Password reset: every session and all {len(revoked_tokens)} API token(s) of "
            f"{username!r} were revoked; they must sign in with the new password"
        )
    return answer


@router.delete("/{username}", status_code=204, response_class=Response)
async def delete_user(username: str, identity: SuperIdentity, request: Request) -> Response:
    engine = engine_of(request)
    await _get(request, username)
    if username == identity.principal.username:
        raise Conflict("You cannot delete your own account; ask another admin")
    await engine.journal.call(engine.store.delete_user_sessions, username)
    await engine.journal.call(engine.store.delete_user, username)
    authenticator_of(request).identities.forget_user(username)
    await engine.audit("user.delete", identity.principal, username, address=client_address(request))
    return Response(status_code=204)
