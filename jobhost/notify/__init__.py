"""Notifications: job.json ``notify`` rules → email and webhook deliveries (see notifier)."""

from __future__ import annotations

from jobhost.notify.notifier import Notifier

__all__ = ["Notifier"]
