"""Per-run isolation with real processes and real cgroups: limits, accounting, descendants,
``run_as``. cgroup tests skip (with the reason) where no cgroup is writable; CI requires one.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import select
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from jobhost.engine import JobHost
from jobhost.execution.cgroups import Isolation
from jobhost.models import Execution, ExecutionStatus, Principal
from tests.conftest import require_service
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job
from tests.serverfixtures import Harness, harness_fixture  # noqa: F401

ALICE = Principal(username="alice", roles=frozenset({"admin"}), superuser=True)

# Ignores SIGTERM (and so do its children: an ignored signal stays ignored across exec),
# starts one grandchild with ``setsid`` and one with ``setsid -f``, each in a session of
# its own, outside the job's process group.
ESCAPER = """trap '' TERM
setsid sleep 300 &
echo "pid $!"
setsid -f sh -c 'echo "pid $$"; exec sleep 301'
while :; do sleep 1; done
"""


def cgroups_available() -> None:
    isolation = Isolation.detect()
    require_service(isolation.kind != "rlimits", f"no writable cgroup: {isolation.note}")


def require_root() -> None:
    require_service(os.geteuid() == 0, "run_as needs the tests to run as root")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def wait_gone(pid: int, timeout: float = 30.0) -> bool:
    """True once ``pid`` has exited (awaited on its pidfd), False after ``timeout``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, _settle, done)
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return not alive(pid)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return True


async def output_pids(engine: JobHost, execution_id: str, count: int) -> list[int]:
    seen = ""
    async for chunk in engine.follow(execution_id):
        seen += chunk.data.decode()
        pids = [int(line.split()[1]) for line in seen.splitlines() if line.startswith("pid ")]
        if len(pids) >= count and seen.endswith("\n"):
            return pids
    raise AssertionError(f"the job ended before printing {count} pids: {seen!r}")


def stored_run(engine: JobHost, execution_id: str) -> Execution:
    """The history row as the store holds it (what a later reader of history sees)."""
    stored = engine.store.get_execution(execution_id)
    assert stored is not None
    return stored


async def run(engine: JobHost, job_id: str) -> Execution:
    return await asyncio.wait_for(engine.wait((await engine.start(job_id, {}, ALICE)).id), 120)


# ---------------------------------------------------------------- descendants


@pytest.mark.parametrize("isolation", ["cgroup", "rlimits"])
async def test_stop_kills_setsid_grandchildren_that_ignore_sigterm(
    apps: Path, engine_factory: EngineFactory, isolation: str
) -> None:
    if isolation == "cgroup":
        cgroups_available()
    write_job(
        apps,
        "Demo",
        "Escape",
        {"Name": "Escape", "stop_grace_seconds": 0.5},
        script="run.sh",
        script_text=ESCAPER,
    )
    async with engine_factory(isolation=isolation) as engine:
        started = await engine.start("Demo/Escape", {}, ALICE)
        pids = await output_pids(engine, started.id, 2)
        await engine.stop(ALICE, execution_id=started.id)
        final = await asyncio.wait_for(engine.wait(started.id), 60)
        gone = [await wait_gone(pid) for pid in pids]
    assert final.status is ExecutionStatus.STOPPED
    assert final.exit_signal == 9
    assert gone == [True, True], [pid for pid in pids if alive(pid)]


@pytest.mark.parametrize("isolation", ["cgroup", "rlimits"])
async def test_timeout_kills_setsid_grandchildren_that_ignore_sigterm(
    apps: Path, engine_factory: EngineFactory, isolation: str
) -> None:
    if isolation == "cgroup":
        cgroups_available()
    script = ESCAPER.replace("while :; do sleep 1; done", "echo ready; while :; do sleep 1; done")
    write_job(
        apps,
        "Demo",
        "Escape",
        {"Name": "Escape", "limits": {"max_runtime": "3s"}, "stop_grace_seconds": 0.5},
        script="run.sh",
        script_text=script,
    )
    async with engine_factory(isolation=isolation) as engine:
        started = await engine.start("Demo/Escape", {}, ALICE)
        pids = await output_pids(engine, started.id, 2)
        final = await asyncio.wait_for(engine.wait(started.id), 60)
        gone = [await wait_gone(pid) for pid in pids]
    assert final.status is ExecutionStatus.TIMED_OUT
    assert final.error == "Timed out after 3.0 s"
    assert gone == [True, True], [pid for pid in pids if alive(pid)]


async def test_a_job_ending_on_its_own_takes_its_escaped_grandchildren_along(
    apps: Path, engine_factory: EngineFactory
) -> None:
    cgroups_available()
    # ``head`` ends the pipeline once the grandchild has said its pid: the job ends then.
    script = "setsid -f sh -c 'echo \"pid $$\"; exec sleep 302' | head -n 1\n"
    write_job(apps, "Demo", "Leaves", {"Name": "Leaves"}, script="run.sh", script_text=script)
    async with engine_factory() as engine:
        started = await engine.start("Demo/Leaves", {}, ALICE)
        pids = await output_pids(engine, started.id, 1)
        final = await asyncio.wait_for(engine.wait(started.id), 60)
        gone = await wait_gone(pids[0])
    assert final.status is ExecutionStatus.SUCCEEDED
    assert gone


# ---------------------------------------------------------------- limits and accounting


async def test_a_job_past_memory_max_is_oom_killed_and_recorded_so(
    apps: Path, engine_factory: EngineFactory
) -> None:
    cgroups_available()
    script = "blocks = []\nwhile True:\n    blocks.append(bytearray(8 * 1024 * 1024))\n"
    write_job(
        apps, "Demo", "Hog", {"Name": "Hog", "limits": {"memory_max": "64M"}}, script_text=script
    )
    async with engine_factory() as engine:
        final = await run(engine, "Demo/Hog")
        stored = stored_run(engine, final.id)
    assert final.status is ExecutionStatus.FAILED
    assert final.error == "killed: out of memory (limit 64M)"
    assert final.exit_signal == 9
    assert stored.error == "killed: out of memory (limit 64M)"
    assert stored.peak_rss_bytes is not None
    assert stored.peak_rss_bytes <= 64 * 1024 * 1024


async def test_pids_max_stops_a_fork_bomb(apps: Path, engine_factory: EngineFactory) -> None:
    cgroups_available()
    # Bounded either way: at most 200 forks, each child sleeping until the run is killed.
    script = (
        "import os, sys, time\n"
        "made = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except BlockingIOError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    made += 1\n"
        "print('forked', made, flush=True)\n"
    )
    write_job(
        apps, "Demo", "Bomb", {"Name": "Bomb", "limits": {"pids_max": 16}}, script_text=script
    )
    async with engine_factory() as engine:
        final = await run(engine, "Demo/Bomb")
        text = (await engine.read_output(final.id, ALICE)).data.decode()
    assert final.status is ExecutionStatus.SUCCEEDED
    made = int(text.split("forked", 1)[1].split()[0])
    assert made < 16, text


@pytest.mark.parametrize("isolation", ["cgroup", "rlimits"])
async def test_a_sleep_records_a_peak_memory_of_a_few_megabytes(
    apps: Path, engine_factory: EngineFactory, isolation: str
) -> None:
    if isolation == "cgroup":
        cgroups_available()
    write_job(apps, "Demo", "Nap", {"Name": "Nap"}, script="run.sh", script_text="sleep 0.2\n")
    async with engine_factory(isolation=isolation) as engine:
        final = await run(engine, "Demo/Nap")
        stored = stored_run(engine, final.id)
    assert final.status is ExecutionStatus.SUCCEEDED
    # Once the server's own size (165 MB), then the runner's (20-40 MB): the kernel counts
    # the spawner's memory at exec. The cgroup's peak, or the spawn trampoline, fix it.
    assert stored.peak_rss_bytes is not None
    assert 0 < stored.peak_rss_bytes < 10 * 1024 * 1024, stored.peak_rss_bytes
    assert stored.cpu_seconds is not None


@pytest.mark.parametrize("isolation", ["cgroup", "rlimits"])
async def test_a_job_that_allocates_100_mb_records_at_least_that(
    apps: Path, engine_factory: EngineFactory, isolation: str
) -> None:
    if isolation == "cgroup":
        cgroups_available()
    script = "block = bytes(range(256)) * (400 * 1024)  # 100 MiB, every page written\n"
    write_job(apps, "Demo", "Big", {"Name": "Big"}, script_text=script)
    async with engine_factory(isolation=isolation) as engine:
        final = await run(engine, "Demo/Big")
        stored = stored_run(engine, final.id)
    assert final.status is ExecutionStatus.SUCCEEDED
    assert stored.peak_rss_bytes is not None
    assert stored.peak_rss_bytes >= 100 * 1024 * 1024, stored.peak_rss_bytes


# ---------------------------------------------------------------- run_as


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder other users may enter (pytest's own temporary folders are root's only)."""
    path = Path(tempfile.mkdtemp(prefix="jobhost-run-as-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_run_as_nobody_runs_as_nobody_with_its_home_and_files(
    open_dir: Path, engine_factory: EngineFactory
) -> None:
    require_root()
    nobody = pwd.getpwnam("nobody")
    apps = open_dir / "apps"
    script = (
        'echo "uid $(id -u) gid $(id -g) home $HOME umask $(umask) nice $(nice)"\n'
        'touch "$JOBHOST_STATE_DIR/made"\n'
        'echo \'{"ok": true}\' > "$JOBHOST_RESULT_PATH"\n'
    )
    write_job(
        apps,
        "Demo",
        "Who",
        # With a limit set before exec, the account is switched there too (after it).
        {"Name": "Who", "run_as": {"user": "nobody", "umask": "027"}, "limits": {"nice": 3}},
        script="run.sh",
        script_text=script,
    )
    for path in (apps, *apps.rglob("*")):
        path.chmod(0o755)
    async with engine_factory(apps_roots=[apps], data_dir=open_dir / "data") as engine:
        final = await run(engine, "Demo/Who")
        text = (await engine.read_output(final.id, ALICE)).data.decode()
        state = engine.settings.state_dir / "Demo" / "Who"
        log = engine.settings.logs_dir / f"{final.id}.log"
        owners = (state.stat().st_uid, log.stat().st_uid, (state / "made").stat().st_uid)
    assert final.status is ExecutionStatus.SUCCEEDED, (final.error, text)
    assert f"uid {nobody.pw_uid} gid {nobody.pw_gid} home {nobody.pw_dir} umask 0027 nice 3" in text
    assert owners == (nobody.pw_uid,) * 3
    assert final.result == {"ok": True}


async def test_run_as_from_app_json_applies_to_every_job_of_the_app(
    open_dir: Path, engine_factory: EngineFactory
) -> None:
    require_root()
    apps = open_dir / "apps"
    write_job(apps, "Shared", "Who", {"Name": "Who"}, script="run.sh", script_text="id -un\n")
    (apps / "Shared" / "app.json").write_text('{"run_as": "nobody"}')
    for path in (apps, *apps.rglob("*")):
        path.chmod(0o755)
    async with engine_factory(apps_roots=[apps], data_dir=open_dir / "data") as engine:
        final = await run(engine, "Shared/Who")
        text = (await engine.read_output(final.id, ALICE)).data.decode()
    assert final.status is ExecutionStatus.SUCCEEDED, final.error
    assert text.strip() == "nobody"


async def test_run_as_an_unknown_user_fails_the_run_with_the_fix(
    apps: Path, engine_factory: EngineFactory
) -> None:
    require_root()
    write_job(apps, "Demo", "Ghost", {"Name": "Ghost", "run_as": "no-such-user-x"})
    async with engine_factory() as engine:
        final = await run(engine, "Demo/Ghost")
    assert final.status is ExecutionStatus.FAILED
    assert final.error is not None
    assert "run_as user 'no-such-user-x' does not exist on this machine" in final.error


def test_run_as_is_refused_when_the_server_is_not_root() -> None:
    from jobhost.execution.confinement import RunAsRefused, resolve
    from jobhost.models import RunAs

    if os.geteuid() == 0:
        pid = os.fork()
        if pid == 0:  # the check itself, in a child that gave up root
            os.setuid(65534)
            try:
                resolve(RunAs("nobody"))
            except RunAsRefused as exc:
                os._exit(
                    0 if "needs the server to run as root (it runs as uid 65534)" in str(exc) else 2
                )
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    else:
        with pytest.raises(RunAsRefused, match="needs the server to run as root"):
            resolve(RunAs("nobody"))


# ---------------------------------------------------------------- reporting


async def test_healthz_says_how_runs_are_isolated(harness: Harness) -> None:
    admin = await harness.admin()
    run = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
    await harness.wait(run["id"])  # the runner, which spawns runs, has started
    health = (await harness.client().get("/healthz")).json()
    assert health["details"]["isolation"] == Isolation.detect().describe()
    assert health["details"]["isolation"].startswith(("cgroup v2 (", "cgroup v1 (", "rlimits"))


def test_without_cgroups_the_description_says_why() -> None:
    isolation = Isolation.detect("rlimits")
    assert isolation.describe() == (
        "rlimits and an environment sweep (rlimits chosen in the settings)"
    )


@pytest.mark.parametrize("isolation", ["cgroup", "rlimits"])
async def test_nice_and_open_files_apply_to_the_run(
    apps: Path, engine_factory: EngineFactory, isolation: str
) -> None:
    if isolation == "cgroup":
        cgroups_available()
    limits = {"nice": 7, "open_files": 123}
    script = 'echo "files $(ulimit -n) nice $(nice)"\n'
    write_job(
        apps,
        "Demo",
        "Nice",
        {"Name": "Nice", "limits": limits},
        script="run.sh",
        script_text=script,
    )
    async with engine_factory(isolation=isolation) as engine:
        final = await run(engine, "Demo/Nice")
        text = (await engine.read_output(final.id, ALICE)).data.decode()
    assert final.status is ExecutionStatus.SUCCEEDED
    assert text.strip() == "files 123 nice 7"


async def test_cpu_quota_and_weight_are_the_runs_cgroup_settings(
    apps: Path, engine_factory: EngineFactory
) -> None:
    cgroups_available()
    if Isolation.detect().kind != "cgroup1":
        pytest.skip("reads the cgroup v1 cpu files")
    script = (
        'dir="/sys/fs/cgroup/cpu$(grep -E "^[0-9]+:cpu:" /proc/self/cgroup | cut -d: -f3)"\n'
        'echo "quota $(cat "$dir/cpu.cfs_quota_us") shares $(cat "$dir/cpu.shares")"\n'
    )
    limits = {"cpu_quota": "50%", "cpu_weight": 200}
    write_job(
        apps, "Demo", "Cpu", {"Name": "Cpu", "limits": limits}, script="run.sh", script_text=script
    )
    async with engine_factory() as engine:
        final = await run(engine, "Demo/Cpu")
        text = (await engine.read_output(final.id, ALICE)).data.decode()
    assert final.status is ExecutionStatus.SUCCEEDED
    assert text.strip() == "quota 50000 shares 2048"


def unified_hierarchy() -> str | None:
    """A cgroup v2 mount this test may write, even one without controllers (hybrid hosts)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2" and os.access(fields[1], os.W_OK):
            return fields[1]
    return None


async def test_cgroup_v2_tracks_and_kills_every_descendant(tmp_path: Path) -> None:
    """The v2 code path (join between fork and exec, cgroup.kill, cpu.stat) on whatever v2
    hierarchy is writable; limits need its controllers, which a hybrid host keeps in v1
    (here memory, pids and cpu are bound to v1 hierarchies: only hugetlb is left to v2)."""
    mount = unified_hierarchy()
    if mount is None:
        pytest.skip("no writable cgroup v2 hierarchy")
    from jobhost.execution.confinement import Confinement
    from jobhost.execution.process import ChildProcess
    from jobhost.models import LaunchSpec

    base = Path(mount) / f"jobhost-test-{os.getpid()}"
    base.mkdir()
    try:
        isolation = Isolation("cgroup2", {"": str(base)})
        script = "setsid -f sh -c 'echo \"pid $$\"; exec sleep 303' | head -n 1\n"
        spec = LaunchSpec(
            execution_id="v2run",
            job_id="Demo/V2",
            argv=["/bin/sh", "-c", script],
            cwd=str(tmp_path),
            env={"PATH": os.environ["PATH"]},
            log_path=str(tmp_path / "log"),
            result_path=str(tmp_path / "result"),
        )
        confinement = Confinement.prepare(isolation, spec)
        process = ChildProcess.spawn(spec.argv, spec.cwd, spec.env, confinement=confinement)
        assert confinement.group is not None
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        loop.add_reader(process.pidfd, _settle, exited)
        await asyncio.wait_for(exited, 60)
        loop.remove_reader(process.pidfd)
        output = os.read(process.output_fd, 4096).decode()
        grandchild = int(output.split()[1])
        # The escaped grandchild is in the run's cgroup (it inherited it from the job, which
        # joined it before its exec; the job itself may be gone already).
        assert grandchild in confinement.group.members()
        exit = process.reap()
        process.close()
        assert exit is not None
        assert exit.exit_code == 0
        # Spawned through the trampoline (which joined the cgroup): with no memory.peak
        # on this mount, the peak is the job's own ru_maxrss, not this process's size.
        assert exit.peak_rss_bytes < 16 * 1024 * 1024 < psutil.Process().memory_info().rss
        assert await wait_gone(grandchild)
    finally:
        for _ in range(100):
            try:
                for child in base.iterdir():
                    if child.is_dir():
                        child.rmdir()
                base.rmdir()
                break
            except OSError:
                await asyncio.sleep(0.05)


async def test_pids_max_of_one_still_lets_the_job_itself_start(
    apps: Path, engine_factory: EngineFactory
) -> None:
    cgroups_available()
    write_job(
        apps,
        "Demo",
        "One",
        {"Name": "One", "limits": {"pids_max": 1}},
        script="run",
        script_text="#!/bin/sh\nexec echo alone\n",
    )
    (apps / "Demo" / "jobs" / "One" / "run").chmod(0o755)
    async with engine_factory() as engine:
        final = await run(engine, "Demo/One")
        text = (await engine.read_output(final.id, ALICE)).data.decode()
    assert final.status is ExecutionStatus.SUCCEEDED, final.error
    assert text == "alone\n"


def test_v1_a_spawner_thread_puts_the_job_in_its_cgroup_and_goes_back_home(
    tmp_path: Path,
) -> None:
    """On v1 the spawning thread joins the run's cgroups only for the spawn: the job reads
    its run's cgroups as its first act, and the thread is back in its own right after."""
    isolation = Isolation.detect()
    if isolation.kind != "cgroup1":
        pytest.skip(f"no writable cgroup v1 hierarchy ({isolation.describe()})")
    from jobhost.execution.confinement import Confinement
    from jobhost.execution.process import ChildProcess
    from jobhost.models import LaunchSpec

    spec = LaunchSpec(
        execution_id="v1run",
        job_id="Demo/V1",
        argv=["/bin/cat", "/proc/self/cgroup"],
        cwd=str(tmp_path),
        env={"PATH": os.environ["PATH"]},
        log_path=str(tmp_path / "log"),
        result_path=str(tmp_path / "result"),
    )
    seen: dict[str, object] = {}

    def spawn_on_a_helper_thread() -> None:
        before = Path("/proc/thread-self/cgroup").read_text()
        confinement = Confinement.prepare(isolation, spec)
        process = ChildProcess.spawn(spec.argv, spec.cwd, spec.env, confinement=confinement)
        seen["thread_before"] = before
        seen["thread_after"] = Path("/proc/thread-self/cgroup").read_text()
        seen["process"] = process
        seen["confinement"] = confinement

    helper = threading.Thread(target=spawn_on_a_helper_thread)
    helper.start()
    helper.join()
    process = seen["process"]
    confinement = seen["confinement"]
    assert isinstance(process, ChildProcess)
    assert isinstance(confinement, Confinement)
    assert seen["thread_after"] == seen["thread_before"]
    os.set_blocking(process.output_fd, True)
    output = b""
    while chunk := os.read(process.output_fd, 4096):
        output += chunk
    assert select.select([process.pidfd], [], [], 60)[0], "the job did not end"
    exit = process.reap()
    process.close()
    assert confinement.group is not None
    lines = output.decode().splitlines()
    for controller, path in confinement.group.paths.items():
        own = [line for line in lines if line.split(":")[1] in controller_names(controller)]
        assert own, (controller, lines)
        assert own[0].endswith("/" + os.path.basename(path)), (controller, lines)
    assert exit is not None
    assert exit.exit_code == 0


def controller_names(controller: str) -> set[str]:
    """How ``/proc/<pid>/cgroup`` may name a v1 hierarchy that holds ``controller``."""
    return {controller, "cpu,cpuacct", "cpuacct,cpu"}
