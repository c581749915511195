"""The web server: REST API, sign-in, live output, and the static UI.

``create_app`` and ``jobhost_lifespan`` load on first use, so ``jobhost.server.schemas``
(the response models the client shares) can be imported without FastAPI and the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobhost.server.app import create_app, jobhost_lifespan

__all__ = ["create_app", "jobhost_lifespan"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from jobhost.server import app

        return getattr(app, name)
    raise AttributeError(f"module 'jobhost.server' has no attribute {name!r}")
