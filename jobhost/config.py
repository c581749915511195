"""Settings: ``jobhost.toml`` in the working directory (or ``JOBHOST_CONFIG``), then ``JOBHOST_*``.

Environment wins over the file; command-line options win over both (the CLI passes
them as init arguments). ``JOBHOST_APPS`` takes several roots separated by ``:``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from jobhost.catalog.limits import Limits


class Settings(BaseSettings):
    """Every knob of a JobHost process, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="JOBHOST_", extra="forbid", populate_by_name=True)

    apps_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("apps")],
        validation_alias=AliasChoices("apps_roots", "JOBHOST_APPS", "JOBHOST_APPS_ROOTS"),
    )
    data_dir: Path = Path(".data")
    database_url: str | None = None  # None: SQLite file in data_dir

    host: str = "127.0.0.1"
    access_log: bool = False  # uvicorn's line per HTTP request
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None  # used in links (notifications); defaults to http://host:port

    superuser_roles: list[str] = Field(default_factory=lambda: ["admin"])
    admin_password: str | None = None  # first start only; else a one-time password is printed

    executor: Literal["local", "celery"] = "local"
    celery_broker_url: str = "redis://127.0.0.1:6379/0"

    max_output_bytes: int = Field(default=16 * 1024 * 1024, gt=1024)  # head + tail kept
    max_queue: int = Field(default=10_000, gt=0)  # pending commands before 429
    max_request_bytes: int = Field(default=1024 * 1024, gt=0)
    init_timeout_seconds: float = Field(default=10.0, gt=0)
    # What happens to running jobs when the server exits: "leave" them running for the
    # next server to re-adopt, or "stop" them (the behaviour before leases).
    shutdown_policy: Literal["stop", "leave"] = "leave"
    # Ownership: every instance renews its lease each heartbeat; a lease not renewed for
    # the TTL is expired and its runs are re-adopted or resolved (jobhost.execution.lease).
    lease_heartbeat_seconds: float = Field(default=5.0, gt=0)
    lease_ttl_seconds: float = Field(default=20.0, gt=0)
    # Several servers on one store (README "Scaling out"): the name of this machine as
    # runs and instances record it (default: the hostname; set it where machines share
    # one, e.g. containers), and the URL other servers reach this one at to read the
    # output of its runs (default: http://<bind address or node>:<port>).
    node_name: str | None = Field(default=None, min_length=1, max_length=253)
    cluster_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$")
    # Isolation (README "Isolation"): a cgroup per run where one is writable, else rlimits.
    isolation: Literal["auto", "cgroup", "rlimits"] = "auto"  # cgroup: refuse to start without
    limits: Limits = Field(default_factory=Limits)  # defaults under every job's own ``limits``

    # Concurrency groups: name → how many runs of all jobs naming it (job.json
    # ``concurrency_group``) may hold a process at once; a group not listed has no limit.
    groups: dict[str, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)

    retention_days: int | None = Field(default=None, gt=0)
    retention_per_job: int | None = Field(default=None, gt=0)

    session_hours: float = Field(default=12.0, gt=0)
    login_attempts_per_minute: int = Field(default=10, gt=0)  # per username, any address
    login_attempts_per_address_per_minute: int = Field(default=30, gt=0)  # any usernames
    max_pending_logins: int = Field(default=16, gt=0)  # password checks running or waiting
    # Proxies (addresses or CIDRs) whose X-Forwarded-For/-Proto are believed.
    trusted_proxies: list[str] = Field(default_factory=list)
    adhoc_enabled: bool = False
    adhoc_roles: list[str] = Field(default_factory=lambda: ["admin"])

    watch: bool = True  # hot reload of job folders
    scheduler_enabled: bool = True  # fire cron schedules (the local CLI turns this off)
    default_timezone: str = "UTC"
    misfire_grace_seconds: float = Field(default=60.0, ge=0)

    # /metrics answers these addresses (or networks) without sign-in; anyone else needs a
    # token of a superuser or of a user holding one of metrics_roles.
    metrics_allow: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    metrics_roles: list[str] = Field(default_factory=lambda: ["metrics"])

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "jobhost@localhost"
    # Notification channels by name (job.json's notify rules name one); see jobhost.notify.
    channels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    notifications_enabled: bool = True

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or CIDR (e.g. '10.0.0.5' or '10.0.0.0/8')"
                ) from None
        return value

    @field_validator("apps_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        return value

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"metrics_allow entry {entry!r} is not an address or network "
                    "(e.g. '127.0.0.1', '10.0.0.0/8', '::1')"
                ) from None
        return value

    @model_validator(mode="after")
    def _lease_outlives_heartbeat(self) -> Settings:
        if self.lease_ttl_seconds <= 2 * self.lease_heartbeat_seconds:
            raise ValueError(
                f"lease_ttl_seconds ({self.lease_ttl_seconds:g}) must be more than twice "
                f"lease_heartbeat_seconds ({self.lease_heartbeat_seconds:g}), so that one "
                "late heartbeat does not expire a live instance"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("JOBHOST_CONFIG", "jobhost.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL: the configured one, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'jobhost.db').resolve()}"

    @property
    def node(self) -> str:
        """This machine's name in the store (``node_name`` or the hostname)."""
        return self.node_name or socket.gethostname()

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    def is_superuser(self, roles: frozenset[str] | set[str]) -> bool:
        return not set(self.superuser_roles).isdisjoint(roles)
