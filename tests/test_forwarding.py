"""Stops and restarts for a run another instance owns reach that owner through the store.

Two engines on one SQLite data dir here (one machine: no NOTIFY, the owner reads requests
on its heartbeat); two real servers on PostgreSQL are in ``test_several_servers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobhost.errors import Conflict
from jobhost.models import AuditQuery, ExecutionStatus, Principal
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job
from tests.test_ownership import SLEEPER, started_and_printing

FAST_LEASE = {"lease_heartbeat_seconds": 0.2, "lease_ttl_seconds": 2.0}
OPS = Principal(username="ops", roles=frozenset(), superuser=False)


def write_jobs(apps: Path) -> None:
    write_job(apps, "Demo", "Sleeper", {"Name": "Sleeper"}, script_text=SLEEPER)
    write_job(
        apps,
        "Demo",
        "Keyed",
        {"Name": "Keyed", "template_variables": {"Key": {"secret": True, "default": "k"}}},
        script_text=SLEEPER,
    )


@pytest.mark.timeout(300)
async def test_a_stop_through_another_engine_reaches_the_owner(
    apps: Path, engine_factory: EngineFactory
) -> None:
    write_jobs(apps)
    async with engine_factory(**FAST_LEASE) as owner, engine_factory(**FAST_LEASE) as other:
        execution = await started_and_printing(owner, "Demo/Sleeper")
        (answered,) = await other.stop(OPS, execution_id=execution.id)
        assert answered.id == execution.id
        final = await owner.wait(execution.id)
        audit = await other.audit_log(AuditQuery(action="job.stop"))
    assert (final.status, final.stopped_by, final.owner) == (
        ExecutionStatus.STOPPED,
        "ops",
        owner.instance_id,
    )
    (entry,) = audit.items
    assert (entry.user, entry.details["forwarded_to"]) == ("ops", owner.instance_id)


@pytest.mark.timeout(300)
async def test_a_restart_with_secret_values_is_not_passed_through_the_store(
    apps: Path, engine_factory: EngineFactory
) -> None:
    write_jobs(apps)
    async with engine_factory(**FAST_LEASE) as owner, engine_factory(**FAST_LEASE) as other:
        execution = await started_and_printing(owner, "Demo/Keyed")
        with pytest.raises(Conflict) as refused:
            await other.restart(execution_id=execution.id, variables={"Key": "s3cret-value"})
        assert "a restart with secret values (Key) is not passed through the store" in (
            refused.value.message
        )
        still = await other.status(execution.id)
        assert still.status is ExecutionStatus.RUNNING
        await owner.stop(execution_id=execution.id)
        await owner.wait(execution.id)


@pytest.mark.timeout(300)
async def test_a_job_wide_stop_reaches_the_runs_other_servers_own(
    apps: Path, engine_factory: EngineFactory
) -> None:
    write_jobs(apps)
    async with engine_factory(**FAST_LEASE) as owner, engine_factory(**FAST_LEASE) as other:
        execution = await started_and_printing(owner, "Demo/Sleeper")
        stopped = await other.stop(OPS, job_id="Demo/Sleeper")
        assert [e.id for e in stopped] == [execution.id]
        final = await owner.wait(execution.id)
        with pytest.raises(Conflict, match="has no running execution to stop"):
            await other.stop(OPS, job_id="Demo/Sleeper")
    assert (final.status, final.stopped_by) == (ExecutionStatus.STOPPED, "ops")
