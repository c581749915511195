"""The per-machine runner: one small process per data dir that owns the job processes.

It outlives the server, so a restart or a crash of the server does not end running jobs;
the next server connects to it and re-adopts them. See docs/architecture.md ("Runs that
outlive the server") for the design, ``protocol`` for the wire format, ``service`` for
the process itself and ``jobhost.executors.runner`` for the server's side.
"""
