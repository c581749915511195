"""Masking secret values by value: in every text JobHost stores or sends, and in output.

A secret variable's value is known to the host while its run is live. Wherever a text
could carry it — an error message, the result, a progress message, the captured
output, a notification — each occurrence is replaced by ``***`` (as GitHub Actions and
Jenkins mask secrets in their logs). Besides the value as written, its JSON-escaped and
Python-escaped forms are masked, so a value with a quote, a newline or a NUL is caught
in a message that quotes it too.

``OutputMasker`` does the same for a byte stream written in pieces: the bytes at the
end of a piece that could be the start of a secret are held back until the next piece
shows whether they are, so a value split across two reads is masked as well. What is
held back is at most the longest secret's length minus one byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from jobhost.models import Execution

MASK = "***"
_MASK = MASK.encode()


def forms(secrets: Iterable[str]) -> list[str]:
    """Every form of each non-empty secret that is masked, longest first (so a secret
    that contains another is never half-revealed)."""
    found: set[str] = set()
    for value in secrets:
        if not value:
            continue
        found.add(value)
        found.add(json.dumps(value)[1:-1])
        found.add(json.dumps(value, ensure_ascii=False)[1:-1])
        found.add(repr(value)[1:-1])
    return sorted((f for f in found if f), key=len, reverse=True)


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of each secret replaced by ``***``."""
    for value in forms(secrets):
        if value in text:
            text = text.replace(value, MASK)
    return text


def mask_value(value: Any, secrets: Sequence[str]) -> Any:
    """A JSON-like value (a result) with ``mask_text`` applied to every string in it,
    object keys included."""
    if not secrets:
        return value
    if isinstance(value, str):
        return mask_text(value, secrets)
    if isinstance(value, dict):
        return {mask_value(k, secrets): mask_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(item, secrets) for item in value]
    return value


def mask_execution(execution: Execution, secrets: Sequence[str]) -> Execution:
    """``execution`` with its error, result and progress message masked (variables are
    already stored redacted, by name)."""
    if not secrets:
        return execution
    error = mask_text(execution.error, secrets) if execution.error else execution.error
    message = execution.progress_message
    if message:
        message = mask_text(message, secrets)
    result = mask_value(execution.result, secrets)
    if (
        error == execution.error
        and message == execution.progress_message
        and result == execution.result
    ):
        return execution
    return execution.evolve(error=error, result=result, progress_message=message)


def mask_result(raw: bytes | None, secrets: Sequence[str]) -> bytes | None:
    """A result file's bytes with every secret masked: JSON is masked value by value (and
    stays JSON); anything else, which the server will refuse, as text."""
    if raw is None or not secrets:
        return raw
    try:
        parsed = json.loads(raw)
    except ValueError:
        return mask_text(raw.decode("utf-8", "replace"), secrets).encode()
    return json.dumps(mask_value(parsed, secrets), ensure_ascii=False).encode()


class OutputMasker:
    """Masks secrets in a byte stream fed in pieces (see the module docstring)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._values = [f.encode("utf-8", "replace") for f in forms(secrets)]
        self._pattern = (
            re.compile(b"|".join(re.escape(v) for v in self._values)) if self._values else None
        )
        self._longest = max((len(v) for v in self._values), default=0)
        self._held = b""

    @property
    def active(self) -> bool:
        return self._pattern is not None

    def feed(self, data: bytes) -> bytes:
        """The masked bytes that can be written now; what could still become a secret
        with the next piece is kept for the next ``feed`` (or ``flush``)."""
        if self._pattern is None:
            return data
        buffer = self._held + data if self._held else data
        # A match starting before ``safe`` is final: no longer secret could still match
        # there once more bytes arrive.
        safe = len(buffer) - self._longest + 1
        out: list[bytes] = []
        position = 0
        pending: int | None = None
        for match in self._pattern.finditer(buffer):
            if match.start() >= safe:
                pending = match.start()
                break
            out += (buffer[position : match.start()], _MASK)
            position = match.end()
        hold = self._hold_from(buffer, max(position, safe), pending)
        out.append(buffer[position:hold])
        self._held = buffer[hold:]
        return b"".join(out)

    def _hold_from(self, buffer: bytes, start: int, pending: int | None) -> int:
        """Where the bytes that may begin a secret start (the end when none do)."""
        limit = len(buffer) if pending is None else pending
        for index in range(start, limit):
            rest = buffer[index:]
            if any(value.startswith(rest) for value in self._values):
                return index
        return limit

    def flush(self) -> bytes:
        """The end of the stream: what was held back, masked."""
        held, self._held = self._held, b""
        if self._pattern is None or not held:
            return held
        return self._pattern.sub(_MASK, held)
