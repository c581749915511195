"""What the run policies outside the execution core cost a caller, against a real
``jobhost serve``:

    python -m bench.bench_policies

- ``plan_p50/p99_ms``: ``GET …/plan`` of a job without an init script (argv,
  environment, next fires, admission), one client, ``REQUESTS`` in a row;
- ``plan_init_p50_ms``: the same for a job whose init script (Python) runs each time;
- ``hook_p50/p99_ms`` and ``hook_signed_p50_ms``: a webhook call answered 202 (the
  run recorded and dispatched), unsigned and HMAC-signed;
- ``choices_cold_ms`` and ``choices_warm_p50_ms``: the job detail when its
  ``choices_from`` script (Python) runs, and when its list is cached.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.bench_http import PASSWORD, _free_port, _percentile, _token, _wait_healthy
from jobhost.hooks import sign

REQUESTS = 100


def _job(apps: Path, name: str, definition: dict[str, object], files: dict[str, str]) -> None:
    folder = apps / "Bench" / "jobs" / name
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"ScriptRelativePath": "run.sh", **definition}))
    (folder / "run.sh").write_text(":\n")
    for file, text in files.items():
        (folder / file).write_text(text)


def _write_apps(root: Path) -> Path:
    apps = root / "apps"
    variables = {"Site": {"description": "site", "default": "north"}}
    hook = {"enabled": True, "rate_per_minute": 100_000}
    base = {"max_concurrent": 0, "template_variables": variables}
    _job(apps, "Plain", {**base, "default_schedule": "*/5 * * * *", "webhook": hook}, {})
    _job(
        apps,
        "Signed",
        {**base, "webhook": {**hook, "signature": "hmac-sha256"}},
        {},
    )
    _job(apps, "Init", base, {"init-job.py": "import sys\nsys.stdout.write(sys.stdin.read())\n"})
    listed = {"Site": {"description": "site", "choices_from": {"script": "list.py"}}}
    _job(
        apps,
        "Choices",
        {"template_variables": listed},
        {"list.py": "print('north')\nprint('south')\n"},
    )
    return apps


def _timed(call: Callable[[], None], count: int) -> list[float]:
    took = []
    for _ in range(count):
        begun = time.perf_counter()
        call()
        took.append((time.perf_counter() - begun) * 1000)
    return took


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="jh-bench-policies-") as tmp:
        root = Path(tmp)
        port = _free_port()
        env = {
            **os.environ,
            "JOBHOST_ADMIN_PASSWORD": PASSWORD,
            "JOBHOST_CONFIG": str(root / "no-jobhost.toml"),
            "JOBHOST_WATCH": "false",
        }
        argv = [
            str(Path(sys.executable).with_name("jobhost")),
            *("--apps", str(_write_apps(root)), "--data-dir", str(root / "data")),
            *("serve", "--host", "127.0.0.1", "--port", str(port)),
        ]
        log = root / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, process, log)
            figures = _measure(base, _token(base))
        finally:
            process.terminate()
            process.wait(timeout=30)
    for name, value in figures.items():
        print(f"{name:>24}: {value:8.2f}")
    return figures


def _measure(base: str, token: str) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=60, headers=auth) as client:

        def plan(job: str) -> None:
            client.get(f"/api/v1/jobs/catalog/Bench/{job}/plan").raise_for_status()

        plain = _timed(lambda: plan("Plain"), REQUESTS)
        init = _timed(lambda: plan("Init"), REQUESTS // 4)
        made = client.post("/api/v1/jobs/catalog/Bench/Plain/hook").json()
        signed = client.post("/api/v1/jobs/catalog/Bench/Signed/hook").json()
        body = b'{"Site": "south"}'
        with httpx.Client(base_url=base, timeout=60) as outsider:

            def call() -> None:
                answer = outsider.post(made["url_path"], content=body)
                assert answer.status_code == 202, answer.text

            def call_signed() -> None:
                header = {"X-Hub-Signature-256": sign(signed["signing_secret"], body)}
                answer = outsider.post(signed["url_path"], content=body, headers=header)
                assert answer.status_code == 202, answer.text

            hooks = _timed(call, REQUESTS)
            signed_hooks = _timed(call_signed, REQUESTS)

        def detail() -> None:
            client.get("/api/v1/jobs/catalog/Bench/Choices").raise_for_status()

        cold = _timed(detail, 1)
        warm = _timed(detail, REQUESTS)
    return {
        "plan_p50_ms": statistics.median(plain),
        "plan_p99_ms": _percentile(plain, 99),
        "plan_init_p50_ms": statistics.median(init),
        "hook_p50_ms": statistics.median(hooks),
        "hook_p99_ms": _percentile(hooks, 99),
        "hook_signed_p50_ms": statistics.median(signed_hooks),
        "choices_cold_ms": cold[0],
        "choices_warm_p50_ms": statistics.median(warm),
    }


if __name__ == "__main__":
    run()
