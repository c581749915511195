"""docs/monitoring: the alert rules load and behave (promtool), and every metric the rules
and the dashboard use is one the server really exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobhost.server.metrics import Metrics
from tests.conftest import require_service
from tests.serverfixtures import Harness

MONITORING = Path(__file__).resolve().parent.parent / "docs" / "monitoring"
NAME = re.compile(r"\b(?:jobhost|process)_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


async def exposed_names(metrics: Metrics) -> set[str]:
    """Every sample name the exposition declares (from its TYPE lines, so a labelled
    family that has no sample yet still counts)."""
    body, _ = await metrics.render(None)
    names: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_rules_cover_what_an_operator_alerts_on() -> None:
    found = {rule["alert"]: rule for rule in rules()}
    assert set(found) >= {
        "JobHostJobFailingRepeatedly",
        "JobHostJobOverdue",
        "JobHostSchedulerLate",
        "JobHostRunsLost",
    }
    for name, rule in found.items():
        assert rule["annotations"]["summary"], name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
    assert "jobhost_job_schedule_interval_seconds" in found["JobHostJobOverdue"]["expr"]


async def test_rules_and_dashboard_use_only_exposed_metrics(harness: Harness) -> None:
    exposed = await exposed_names(harness.app.state.metrics)
    used = {name for rule in rules() for name in NAME.findall(rule["expr"])}
    used |= {name for expr in dashboard_exprs() for name in NAME.findall(expr)}
    assert "jobhost_job_last_success_timestamp_seconds" in used
    assert used - exposed == set()


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = shutil.which("promtool")
    require_service(promtool is not None, "promtool is not installed (Debian: prometheus)")
    assert promtool is not None
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            [promtool, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout
