"""Executions: launch specs, the state journal, restart policy, processes and their output."""
