"""Peer benchmarks for ``make bench-peers``: each script runs in the peers' own virtualenv."""
