"""Sign-in, sign-out, the current user, and API tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from jobhost.errors import NotAuthenticated, NotFound, PermissionDenied
from jobhost.models import ApiToken, iso, new_id
from jobhost.security import hash_token, new_token
from jobhost.server.auth import (
    SESSION_COOKIE,
    CurrentIdentity,
    authenticator_of,
    client_address,
    deny,
    engine_of,
    secure_cookies,
)
from jobhost.server.routes.users import MIN_PASSWORD
from jobhost.server.schemas import Me, NewToken, PasswordChanged, SignedIn, TokenList, answers

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=1024)


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


def _me(identity: Any) -> dict[str, Any]:
    principal = identity.principal
    body: dict[str, Any] = {
        "username": principal.username,
        "roles": sorted(principal.roles),
        "superuser": principal.superuser,
    }
    if identity.session is not None:
        body["csrf_token"] = identity.session.csrf_token
    return body


@router.post("/login", **answers(SignedIn))
async def login(body: LoginBody, request: Request, response: Response) -> dict[str, Any]:
    engine = engine_of(request)
    auth = authenticator_of(request)
    limiter = request.app.state.login_limiter
    address = client_address(request)
    admitted = limiter.admit(body.username, address)  # counted now, before the check
    try:
        session_id, session, user = await auth.login(body.username, body.password)
    except NotAuthenticated:
        await engine.audit(
            "auth.login", body.username, body.username, outcome="failed", address=address
        )
        raise
    limiter.succeeded(body.username, address, admitted)
    await engine.audit("auth.login", user.username, user.username, address=address)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(engine.settings.session_hours * 3600),
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
    )
    principal = auth.principal_for(user)
    return {
        "username": principal.username,
        "roles": sorted(principal.roles),
        "superuser": principal.superuser,
        "csrf_token": session.csrf_token,
    }


@router.post("/password", **answers(PasswordChanged))
async def change_password(
    body: PasswordBody, identity: CurrentIdentity, request: Request
) -> dict[str, Any]:
    """Change your own password (the current one is required). Your other sessions end;
    this session and your API tokens stay."""
    engine = engine_of(request)
    username = identity.principal.username
    address = client_address(request)
    limiter = request.app.state.login_limiter
    admitted = limiter.admit(username, address)  # guessing the current one counts too
    try:
        await authenticator_of(request).change_password(
            identity, body.current_password, body.new_password
        )
    except PermissionDenied:
        await engine.audit(
            "user.password", identity.principal, username, outcome="failed", address=address
        )
        raise
    limiter.succeeded(username, address, admitted)
    await engine.audit("user.password", identity.principal, username, address=address)
    return {
        "username": username,
        "changed": True,
        "message": "Password changed; your other sessions were signed out (API tokens stay)",
    }


@router.post("/logout", status_code=204, response_class=Response)
async def logout(identity: CurrentIdentity, request: Request, response: Response) -> Response:
    await authenticator_of(request).logout(identity)
    await engine_of(request).audit(
        "auth.logout",
        identity.principal,
        identity.principal.username,
        address=client_address(request),
    )
    done = Response(status_code=204)
    done.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return done


@router.get("/me", **answers(Me))
async def me(identity: CurrentIdentity) -> dict[str, Any]:
    return _me(identity)


@router.get("/tokens", **answers(TokenList))
async def list_tokens(
    identity: CurrentIdentity,
    request: Request,
    all_users: Annotated[bool, Query(alias="all")] = False,
) -> dict[str, Any]:
    engine = engine_of(request)
    if all_users and not identity.principal.superuser:
        reason = "Only superusers may list every user's tokens (drop ?all=true)"
        await deny(request, identity.principal.username, reason)
        raise PermissionDenied(reason)
    owner = None if all_users else identity.principal.username
    tokens: list[ApiToken] = await engine.journal.call(engine.store.list_tokens, owner)
    return {"tokens": [t.to_api() for t in tokens]}


@router.post("/tokens", **answers(NewToken, 201))
async def create_token(
    body: TokenBody, identity: CurrentIdentity, request: Request
) -> dict[str, Any]:
    engine = engine_of(request)
    clear = new_token()
    now = engine.clock()
    token = ApiToken(
        id=new_id(),
        username=identity.principal.username,
        name=body.name,
        token_hash=hash_token(clear),
        created_at=now,
        expires_at=now + timedelta(days=body.expires_in_days) if body.expires_in_days else None,
    )
    await engine.journal.call(engine.store.save_token, token)
    await engine.audit(
        "token.create",
        identity.principal,
        token.id,
        address=client_address(request),
        details={"name": token.name, "expires_at": iso(token.expires_at)},
    )
    return {"id": token.id, "name": token.name, "token": clear, "expires_at": iso(token.expires_at)}


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
async def revoke_token(token_id: str, identity: CurrentIdentity, request: Request) -> Response:
    engine = engine_of(request)
    principal = identity.principal
    owner = None if principal.superuser else principal.username
    tokens: list[ApiToken] = await engine.journal.call(engine.store.list_tokens, owner)
    if not any(t.id == token_id for t in tokens):
        raise NotFound(f"No token {token_id!r} of yours")
    await engine.journal.call(engine.store.revoke_token, token_id)
    authenticator_of(request).identities.forget_token(token_id)
    await engine.audit("token.revoke", principal, token_id, address=client_address(request))
    return Response(status_code=204)
