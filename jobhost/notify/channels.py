"""Where notifications go: email over SMTP, or an HTTP POST to a webhook.

Channels are named in the server's configuration (``settings.channels``), never in
job.json; SMTP server and credentials come from ``settings.smtp_*`` (the password
also from ``JOBHOST_SMTP_PASSWORD``)::

    [channels.ops]
    type = "email"
    to = ["ops@example.com"]          # default recipients when a rule gives no "to"

    [channels.chat]
    type = "webhook"
    url = "https://hooks.example.com/jobhost"
    secret = "..."                    # X-JobHost-Signature: sha256=<hmac of the body>
    timeout_seconds = 5

Both take ``retries`` (attempts in all, default 5) and ``backoff_seconds`` (the first
wait between attempts, doubled each time: 1, 2, 4, 8 s by default).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import mimetypes
import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from jobhost.config import Settings
from jobhost.errors import BadRequest

SIGNATURE_HEADER = "X-JobHost-Signature"
SMTP_TIMEOUT_SECONDS = 30.0
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024


class DeliveryError(Exception):
    """One attempt failed; the message is what the delivery row records as ``last_error``."""


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(default=5, ge=1, le=100)
    backoff_seconds: float = Field(default=1.0, ge=0)

    def delay(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt: exponential backoff."""
        return float(self.backoff_seconds * 2 ** max(0, attempts - 1))


class EmailChannel(_Channel):
    type: Literal["email"]
    to: list[str] = Field(default_factory=list)

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class WebhookChannel(_Channel):
    type: Literal["webhook"]
    url: str
    secret: str | None = None
    timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value


Channel = Annotated[EmailChannel | WebhookChannel, Field(discriminator="type")]
_CHANNEL = TypeAdapter[EmailChannel | WebhookChannel](Channel)


def parse_channels(raw: dict[str, dict[str, Any]]) -> dict[str, EmailChannel | WebhookChannel]:
    """Validate ``settings.channels``; one ``BadRequest`` naming every problem."""
    channels: dict[str, EmailChannel | WebhookChannel] = {}
    problems: list[str] = []
    for name, config in raw.items():
        try:
            channels[name] = _CHANNEL.validate_python(config)
        except ValidationError as exc:
            for error in exc.errors():
                loc = ".".join(str(part) for part in error["loc"][1:])
                where = f"channels.{name}" + (f".{loc}" if loc else "")
                if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                    got = config.get("type") if isinstance(config, dict) else config
                    problems.append(f"{where}.type must be 'email' or 'webhook', got {got!r}")
                elif error["type"] == "missing":
                    problems.append(f"{where} is required")
                elif error["type"] == "extra_forbidden":
                    problems.append(f"{where} is not a known field")
                elif error["type"] == "value_error":
                    problems.append(f"{where} {error['ctx']['error']}")
                else:
                    message = str(error["msg"])
                    problems.append(f"{where}: {message}, got {error.get('input')!r}")
    if problems:
        raise BadRequest("Invalid notification channels: " + "; ".join(problems))
    return channels


# ----------------------------------------------------------------------- email
def build_email(settings: Settings, recipient: str, payload: dict[str, Any]) -> EmailMessage:
    """The email: the text body, plus the result files the rule attaches."""
    message = EmailMessage()
    message["Subject"] = payload["subject"]
    message["From"] = settings.smtp_from
    message["To"] = recipient
    message.set_content(payload["text"])
    for name in payload.get("attachments") or []:
        path = Path(name)
        try:
            if path.stat().st_size > MAX_ATTACHMENT_BYTES:
                continue  # the link in the text still leads to the run
            data = path.read_bytes()
        except OSError:
            continue  # gone since the run ended: send the rest
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        maintype, subtype = kind.split("/", 1)
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return message


def _smtp_send(settings: Settings, message: EmailMessage) -> None:
    if not settings.smtp_host:
        raise DeliveryError("smtp_host is not configured: set it (or JOBHOST_SMTP_HOST)")
    host, port = settings.smtp_host, settings.smtp_port
    try:
        smtp: smtplib.SMTP
        if settings.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(
                host, port, timeout=SMTP_TIMEOUT_SECONDS, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT_SECONDS)
        with smtp:
            if settings.smtp_security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"SMTP {host}:{port}: {exc}") from exc


async def send_email(settings: Settings, recipient: str, payload: dict[str, Any]) -> None:
    """Send one email; smtplib blocks, so it runs in a worker thread."""
    message = await asyncio.to_thread(build_email, settings, recipient, payload)
    await asyncio.to_thread(_smtp_send, settings, message)


# --------------------------------------------------------------------- webhook
def webhook_body(delivery_id: str, payload: dict[str, Any]) -> bytes:
    """The POSTed JSON: the payload without server-side file paths, plus the delivery ID
    (receivers can use it to drop the duplicate a retry may cause)."""
    body = {key: value for key, value in payload.items() if key != "attachments"}
    body["delivery_id"] = delivery_id
    return json.dumps(body, sort_keys=True, default=str).encode()


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the body>``, the value of ``X-JobHost-Signature``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_webhook(
    client: httpx.AsyncClient, channel: WebhookChannel, delivery_id: str, payload: dict[str, Any]
) -> None:
    """POST the payload; any non-2xx answer or transport error is a failed attempt."""
    body = webhook_body(delivery_id, payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "JobHost",
        "X-JobHost-Event": str(payload.get("event", "")),
        "X-JobHost-Delivery": delivery_id,
    }
    if channel.secret:
        headers[SIGNATURE_HEADER] = signature(channel.secret, body)
    try:
        response = await client.post(
            channel.url, content=body, headers=headers, timeout=channel.timeout_seconds
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"POST {channel.url}: {type(exc).__name__}: {exc}") from exc
    if not response.is_success:
        text = " ".join(response.text.split())[:200]
        raise DeliveryError(f"POST {channel.url}: HTTP {response.status_code} {text}".rstrip())
