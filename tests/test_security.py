"""The permission rule (full truth table) and credential hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobhost.catalog.definition import JobDefinition
from jobhost.catalog.discovery import Job
from jobhost.errors import PermissionDenied
from jobhost.models import Action, Execution, ExecutionStatus, Principal, Trigger
from jobhost.security import (
    can,
    can_on_execution,
    hash_password,
    hash_token,
    needs_rehash,
    new_csrf_token,
    new_session_id,
    new_token,
    require,
    verify_password,
)

SUPERUSER = Principal("root", frozenset({"admin"}), superuser=True)
HOLDER = Principal("olga", frozenset({"Operators", "other"}))
NON_HOLDER = Principal("nina", frozenset({"viewers"}))
NOBODY = Principal("anon")

ROLE_FIELD = {action: f"roles_{action.value}" for action in Action}


def job_with(action: Action, roles: list[str] | None) -> Job:
    fields: dict[str, object] = {"ScriptRelativePath": "run.py"}
    if roles is not None:
        fields[ROLE_FIELD[action]] = roles
    definition = JobDefinition.model_validate(fields)
    return Job("App/Job", "App", "Job", Path("/nonexistent"), definition)


def expected(who: Principal, action: Action, roles: list[str] | None) -> bool:
    if who.superuser:
        return True
    if roles is None:  # field absent
        return action != Action.SCHEDULE
    if roles == []:
        return True
    return who is HOLDER  # holds "operators" (role names compare case-insensitively)


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("who", [SUPERUSER, HOLDER, NON_HOLDER, NOBODY], ids=lambda p: p.username)
@pytest.mark.parametrize(
    "roles", [None, [], ["operators", "admin"]], ids=["absent", "empty", "set"]
)
def test_truth_table(action: Action, who: Principal, roles: list[str] | None) -> None:
    job = job_with(action, roles)
    assert can(who, job, action) is expected(who, action, roles)
    assert can(who, job.definition, action) is expected(who, action, roles)


def test_explicit_empty_roles_start_list_lets_anyone_start() -> None:
    definition = JobDefinition.model_validate({"ScriptRelativePath": "r.py", "roles_start": None})
    assert can(NOBODY, definition, Action.START)


@pytest.mark.parametrize("action", list(Action))
def test_invalid_job_is_for_superusers_only(action: Action) -> None:
    broken = Job("App/Bad", "App", "Bad", Path("/nonexistent"), None, errors=("bad",))
    assert can(SUPERUSER, broken, action)
    assert not can(HOLDER, broken, action)
    assert not can(NOBODY, None, action)


def execution(user: str | None) -> Execution:
    return Execution(
        id="e1", job_id="App/Job", status=ExecutionStatus.RUNNING, trigger=Trigger.USER, user=user
    )


@pytest.mark.parametrize("action", [Action.VIEW, Action.STOP])
def test_owner_may_always_view_and_stop(action: Action) -> None:
    locked = job_with(action, ["operators"])
    assert can_on_execution(NON_HOLDER, locked, execution("nina"), action)
    assert can_on_execution(NON_HOLDER, None, execution("nina"), action)
    assert not can_on_execution(NON_HOLDER, locked, execution("someone"), action)
    assert can_on_execution(HOLDER, locked, execution("someone"), action)
    assert not can_on_execution(NON_HOLDER, None, execution("someone"), action)
    assert can_on_execution(SUPERUSER, None, execution("someone"), action)


def test_owner_may_not_restart_without_the_role() -> None:
    locked = job_with(Action.RESTART, ["operators"])
    assert not can_on_execution(NON_HOLDER, locked, execution("nina"), Action.RESTART)


def test_require_names_the_roles() -> None:
    job = job_with(Action.START, ["operators", "admin"])
    require(HOLDER, job, Action.START)
    with pytest.raises(PermissionDenied) as caught:
        require(NON_HOLDER, job, Action.START)
    assert caught.value.message == (
        "'nina' may not start 'App/Job': requires one of the roles operators, admin"
    )
    assert caught.value.status_code == 403


def test_require_explains_superuser_only_cases() -> None:
    with pytest.raises(PermissionDenied) as caught:
        require(HOLDER, job_with(Action.SCHEDULE, None), Action.SCHEDULE)
    assert caught.value.message == (
        "'olga' may not schedule 'App/Job': roles_schedule is not set, "
        "so only superusers may schedule it"
    )
    broken = Job("App/Bad", "App", "Bad", Path("/nonexistent"), None, errors=("bad",))
    with pytest.raises(PermissionDenied, match="the job's definition is invalid"):
        require(HOLDER, broken, Action.VIEW)


def test_password_hashing() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert hash_password("correct horse") != hashed  # salted
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "Correct horse")
    assert not verify_password("not a hash", "correct horse")
    assert not needs_rehash(hashed)
    weak = "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$tV0mS1NRwjRa2JrEt0RXyPiWbbBPI9YNZ3AOo2VT4gk"
    assert needs_rehash(weak)


def test_tokens_and_session_ids() -> None:
    token = new_token()
    assert token.startswith("jh_")
    assert len(token) > 40
    assert new_token() != token
    digest = hash_token(token)
    assert len(digest) == 64
    assert digest == hash_token(token)
    assert token not in digest
    assert new_session_id() != new_session_id()
    assert len(new_csrf_token()) >= 40
