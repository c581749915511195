"""supervisord: ``startProcess`` / ``stopProcess`` of a program (``/bin/sleep``) over XML-RPC.

Starts ``supervisord -n`` with a throwaway config (a unix socket in a scratch folder) and a
program with ``startsecs=0`` (running as soon as spawned, the fair comparison), then times
``--cycles`` start (wait=True) and stop (wait=True) calls, with an untimed 50 ms pause
between them so the stop does not race the child's exec. Stops supervisord by pid.
"""

from __future__ import annotations

import argparse
import sys
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer import emit, latency_ms, log, scratch, start, stop, venv_bin
from supervisor.xmlrpc import SupervisorTransport

CONFIG = """\
[unix_http_server]
file={folder}/supervisor.sock
[supervisord]
logfile={folder}/supervisord.log
pidfile={folder}/supervisord.pid
childlogdir={folder}
nodaemon=true
loglevel=warn
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[program:sleep]
command=/bin/sleep 3600
autostart=false
autorestart=false
startsecs=0
stopsignal=TERM
"""


def _proxy(socket_path: Path) -> xmlrpc.client.ServerProxy:
    transport = SupervisorTransport(None, None, f"unix://{socket_path}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    folder = scratch("supervisor")
    config = folder / "supervisord.conf"
    config.write_text(CONFIG.format(folder=folder))
    process = start([venv_bin("supervisord"), "-c", str(config)], folder / "out.log")
    deadline = time.monotonic() + args.timeout
    starts: list[float] = []
    stops: list[float] = []
    try:
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"supervisord did not come up; see {folder}")
            try:
                proxy = _proxy(folder / "supervisor.sock")
                if proxy.supervisor.getState()["statename"] == "RUNNING":
                    break
            except OSError:
                time.sleep(0.05)
        for n in range(args.cycles + 3):
            if time.monotonic() > deadline:
                break
            begun = time.perf_counter()
            proxy.supervisor.startProcess("sleep", True)
            started = time.perf_counter()
            time.sleep(0.05)
            stopping = time.perf_counter()
            proxy.supervisor.stopProcess("sleep", True)
            stopped = time.perf_counter()
            if n >= 3:  # the first cycles warm up
                starts.append(started - begun)
                stops.append(stopped - stopping)
    finally:
        stop(process)
    figures = {"start": latency_ms(starts), "stop": latency_ms(stops)}
    log("supervisord", figures)
    emit(figures)


if __name__ == "__main__":
    main()
