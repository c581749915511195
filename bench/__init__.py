"""Benchmarks: ``python -m bench.<name>`` prints the figures of one area."""
