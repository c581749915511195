"""Parsing of HealthCheck's ``Urls`` and ``Ports``; shared by the init-job and the check."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class UrlTarget:
    url: str
    expected: str | None


@dataclass(frozen=True)
class PortTarget:
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def items(text: str) -> list[str]:
    """New lines separate items when there are any (so texts may hold commas); else commas."""
    parts = text.splitlines() if "\n" in text.strip() else text.split(",")
    return [part.strip() for part in parts if part.strip()]


def parse_urls(text: str) -> list[UrlTarget]:
    targets = []
    for item in items(text):
        url, _, expected = item.partition("|")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Urls: {url.strip()!r} is not an http:// or https:// URL")
        targets.append(UrlTarget(url.strip(), expected.strip() or None))
    return targets


def parse_ports(text: str) -> list[PortTarget]:
    targets = []
    for item in items(text):
        host, _, port = item.rpartition(":")
        host = host.strip().removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"Ports: {item!r} is not host:port with a port from 1 to 65535")
        targets.append(PortTarget(host, int(port)))
    return targets
