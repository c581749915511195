"""The Celery app of ``celery_peer.py``: Redis as broker (db 0) and result backend (db 1)."""

from __future__ import annotations

import os
import subprocess
import time

from celery import Celery

URL = os.environ["PEER_REDIS_URL"]

app = Celery("peer", broker=f"{URL}/0", backend=f"{URL}/1")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="peer.run_true")
def run_true() -> float:
    subprocess.run(["/bin/true"], check=True)
    return time.time()
