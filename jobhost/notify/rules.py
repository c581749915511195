"""The ``notify`` rules of job.json: when a job's runs are announced, and to whom.

A rule is ``{"on": [...events], "channel": "<name>", "to"?: str | [str],
"after_failures"?: N, "attach_result"?: bool}``. Channels are named in the server's
configuration (``settings.channels``), not in job.json, so a job folder never holds an
SMTP password or a webhook secret; an unknown channel name is only a warning at load
(the same folder may be served by hosts with different channels).
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class Event(StrEnum):
    """What a rule can fire on."""

    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    SUCCEEDED = "succeeded"
    RECOVERED = "recovered"  # the first success after a failure
    MISSED = "missed"  # a scheduled fire that did not run
    RETRYING = "retrying"  # an attempt ended and job.json ``retry`` will run another


# Outcomes that count as a failure for ``after_failures`` and ``recovered``.
FAILURES = frozenset({Event.FAILED, Event.TIMED_OUT, Event.LOST})
EVENT_NAMES = ", ".join(event.value for event in Event)


class NotifyRule(BaseModel):
    """One validated rule; ``after_failures`` only gates the failure events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: tuple[Event, ...] = Field(min_length=1)
    channel: str = Field(min_length=1)
    to: tuple[str, ...] = ()
    after_failures: int = Field(default=1, ge=1)
    attach_result: bool = False

    @field_validator("on", mode="before")
    @classmethod
    def _known_events(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            for item in value:
                if item not in Event.__members__.values():
                    raise ValueError(f"{item!r} is not one of {EVENT_NAMES}")
        return value

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


def _problem(index: int, error: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    where = f"notify[{index}]" + (f".{loc}" if loc else "")
    got = error.get("input")
    kind = error["type"]
    if kind == "value_error":
        return f"{where}: {error['ctx']['error']}"
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        return f"{where} is not a known field (on, channel, to, after_failures, attach_result)"
    if kind in ("too_short", "string_too_short"):
        return f"{where} must not be empty, got {got!r}"
    if kind == "greater_than_equal":
        return f"{where} must be at least 1, got {got!r}"
    if kind == "model_type":
        return f"{where} must be an object, got {got!r}"
    if kind in ("tuple_type", "string_type"):
        return f"{where} must be a string or a list of strings, got {got!r}"
    if kind.startswith("bool_"):
        return f"{where} must be true or false, got {got!r}"
    if kind.startswith("int_"):
        return f"{where} must be an integer, got {got!r}"
    message = str(error["msg"])
    return f"{where} {message[:1].lower() + message[1:]}, got {got!r}"


def parse_rules(data: list[dict[str, Any]]) -> list[NotifyRule]:
    """The rules of a definition that already passed ``notify_problems``."""
    return [NotifyRule.model_validate(item) for item in data]


def notify_problems(data: Any) -> list[str]:
    """Every problem of a job.json ``notify`` value, one message each (empty when valid)."""
    if not isinstance(data, list):
        return [f"notify must be a list of rules, got {type(data).__name__}"]
    problems: list[str] = []
    for index, item in enumerate(data):
        try:
            NotifyRule.model_validate(item)
        except ValidationError as exc:
            problems += [_problem(index, error) for error in exc.errors()]
    return problems


def unknown_channels(data: list[dict[str, Any]], channels: Collection[str]) -> list[str]:
    """Warnings for rules naming a channel this host does not configure."""
    known = ", ".join(sorted(channels)) or "none configured"
    return [
        f"notify[{index}].channel: no channel {item.get('channel')!r} is configured on this "
        f"host (channels: {known}); the rule is ignored until one is"
        for index, item in enumerate(data)
        if isinstance(item, dict) and item.get("channel") not in channels
    ]
