"""The API's routers, one module per area, in the order they are mounted."""

from __future__ import annotations

import importlib
import importlib.util

from fastapi import APIRouter

from jobhost.server.routes import audit, auth, health, jobs, legacy, output, users

# Areas built alongside the server (schedules, notifications) live in their own
# modules under this package; they are mounted when present.
OPTIONAL = (
    "jobhost.server.routes.schedules",
    "jobhost.server.routes.notifications",
    "jobhost.server.routes.admin",
    "jobhost.server.routes.cluster",
    "jobhost.server.routes.hooks",
)


def routers() -> list[APIRouter]:
    # Routes are matched in order, one by one, on every request: the routers polled
    # hardest (status, running, history, output) go first. Their prefixes do not
    # overlap the others', so the order changes no answer.
    found = [jobs.router, output.router, health.router, auth.router, users.router]
    for name in OPTIONAL:
        if importlib.util.find_spec(name) is not None:
            module = importlib.import_module(name)
            router = getattr(module, "router", None)
            if isinstance(router, APIRouter):
                found.append(router)
    found += [audit.router, legacy.router]
    return found
