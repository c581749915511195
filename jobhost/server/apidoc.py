"""The API reference (docs/api.md), generated from the OpenAPI document.

``python -m jobhost.server.apidoc > docs/api.md``; a test checks the file is up to date.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

HEADER = """# JobHost API reference

Generated from the OpenAPI document (`/openapi.json`, browsable at `/docs`) by
`python -m jobhost.server.apidoc > docs/api.md`; do not edit by hand.

Every error has the body `ErrorBody`: `{"error": {"code", "message", "details"}}`.
Authentication: `Authorization: Bearer <token>`, or the session cookie `jobhost_session`
plus the `X-CSRF-Token` header on writes. A path that exists answers a wrong method
with 405 and `Allow`.
"""


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    if "anyOf" in schema:
        return " or ".join(_type(part) for part in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"map of {_type(extra)}" if isinstance(extra, dict) else "object"
    if kind is None:
        return "any"
    suffix = f" ({schema['format']})" if "format" in schema else ""
    return f"{kind}{suffix}"


def _security(operation: dict[str, Any]) -> str:
    security = operation.get("security") or []
    if not security:
        return "none"
    names = {
        "bearerToken": "bearer token",
        "sessionCookie": "session cookie",
        "csrfHeader": "X-CSRF-Token",
    }
    options = [
        " + ".join(names[n] for n in option) or "none (allowed addresses)" for option in security
    ]
    return ", or ".join(options)


def _operation(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    # The summary only: descriptions come from docstrings, which change more often than
    # the contract does (the full text is in /openapi.json and /docs).
    if operation.get("summary"):
        lines += [operation["summary"], ""]
    lines.append(f"- Authentication: {_security(operation)}")
    for parameter in operation.get("parameters", []):
        required = "required" if parameter.get("required") else "optional"
        kind = _type(parameter.get("schema", {}))
        lines.append(f"- `{parameter['name']}` ({parameter['in']}, {required}): {kind}")
    body = operation.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        lines.append(f"- Body ({media}): {_type(content.get('schema', {}))}")
    successes, errors = [], []
    for code, response in operation.get("responses", {}).items():
        if "$ref" in response:
            errors.append(code)
            continue
        content = response.get("content", {})
        shown = ", ".join(f"{_type(c.get('schema', {}))} ({m})" for m, c in content.items())
        events = response.get("x-events")
        if events:
            shown += "; events: " + ", ".join(f"`{n}` {_type(s)}" for n, s in events.items())
        successes.append(f"`{code}` {shown or '(no body)'}")
    lines.append(f"- Answers: {'; '.join(successes)}")
    if errors:
        lines.append(f"- Errors (`ErrorBody`): {', '.join(errors)}")
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    properties = schema.get("properties", {})
    if not properties:
        return [*lines, _type(schema), ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | required |", "|---|---|---|"]
    for field, spec in properties.items():
        lines.append(f"| `{field}` | {_type(spec)} | {'yes' if field in required else 'no'} |")
    return [*lines, ""]


def render(document: dict[str, Any]) -> str:
    """The reference as Markdown: operations by tag in document order, then the schemas."""
    by_tag: dict[str, list[str]] = {}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            tag = (operation.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).extend(_operation(path, method, operation))
    lines = [HEADER]
    for tag, entries in by_tag.items():
        lines += [f"## {tag}", "", *entries]
    lines += ["## Schemas", ""]
    for name, schema in sorted(document["components"]["schemas"].items()):
        lines += _schema(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    from jobhost.config import Settings
    from jobhost.server import create_app

    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(apps_roots=[Path(scratch)], data_dir=Path(scratch) / "data")
        sys.stdout.write(render(create_app(settings).openapi()))


if __name__ == "__main__":
    main()
