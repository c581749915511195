"""The API's routers, one module per area, in the order they are mounted."""

from __future__ import annotations

import importlib
import importlib.util

from fastapi import APIRouter

from jobhost.server.routes import audit, auth, health, jobs, legacy, output, users

# Areas built alongside the server (schedules, notifications) live in their own
# modules under this package; they are mounted when present.
OPTIONAL = ("jobhost.server.routes.schedules", "jobhost.server.routes.notifications")


def routers() -> list[APIRouter]:
    found = [health.router, auth.router, users.router, jobs.router, output.router]
    for name in OPTIONAL:
        if importlib.util.find_spec(name) is not None:
            module = importlib.import_module(name)
            router = getattr(module, "router", None)
            if isinstance(router, APIRouter):
                found.append(router)
    found += [audit.router, legacy.router]
    return found
