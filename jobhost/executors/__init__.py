"""Executors: ``local`` runs processes on this machine; ``celery`` hands them to workers."""
