"""The web server: REST API, sign-in, live output, and the static UI."""

from jobhost.server.app import create_app, jobhost_lifespan

__all__ = ["create_app", "jobhost_lifespan"]
