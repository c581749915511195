"""Command-line values without pydantic where typer would only use it to copy them.

typer turns every parameter's value into its Python type through a pydantic
``TypeAdapter`` built on first use, even for a value left unset. Importing pydantic's
validation machinery and building those adapters is about a seventh of a local
``jobhost history``. ``plain_values`` gives each parameter a coercion that answers the
plain cases itself (unset, text, a path, a whole number within its bounds, lists of
these) and hands every other value to typer's own coercion, so the values and the error
messages are typer's. Paths still go through typer's checks (``coerce_cli_path``).
``tests/test_cli_startup.py`` compares the two on every parameter of every verb.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

from typer._coercion import build_runtime_param
from typer._param_types import coerce_cli_path, routes_to_path


class PlainValues:
    """A parameter's coercion (typer's ``RuntimeParam`` interface), pydantic only when needed."""

    def __init__(self, descriptor: Any) -> None:
        self._descriptor = descriptor
        annotation = descriptor.annotation
        self._many = get_origin(annotation) is list
        self._item: Any = get_args(annotation)[0] if self._many else annotation
        self._info = descriptor.parameter_info
        self._typer: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # as typer: nothing given, no adapter needed
            return () if param.multiple or param.nargs == -1 else None
        if self._many and isinstance(value, list | tuple):
            items = [self._plain(item, param, ctx) for item in value]
            if all(item is not _OTHER for item in items):
                return items
        elif not self._many and (plain := self._plain(value, param, ctx)) is not _OTHER:
            return plain
        if self._typer is None:
            self._typer = build_runtime_param(self._descriptor)
        return self._typer.coerce(value, param=param, ctx=ctx)

    def _plain(self, value: Any, param: Any, ctx: Any) -> Any:
        item, info = self._item, self._info
        if item is str and isinstance(value, str) and info.parser is None:
            return value
        if item is int and info.parser is None and not info.clamp:
            number = _whole(value)
            if number is None or (info.min is not None and number < info.min):
                return _OTHER
            return _OTHER if info.max is not None and number > info.max else number
        if (
            item is Path
            and isinstance(value, str)
            and info.parser is None
            and info.path_type is None
            and routes_to_path(item, info)
        ):
            return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
        return _OTHER


_OTHER: Any = object()  # "not a plain case": typer's coercion decides


def _whole(value: Any) -> int | None:
    """A whole number written plainly (digits only), or None for anything to ask typer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def plain_values(command: Any, ctx: Any) -> None:
    """Give every parameter of ``command`` (its help option and its subcommands' too)
    ``PlainValues``; a typer without per-parameter coercion is left as it is."""
    for param in command.get_params(ctx):
        descriptor = getattr(param, "type_descriptor", None)
        if hasattr(param, "_runtime_param") and descriptor and descriptor.file_annotation is None:
            param._runtime_param = PlainValues(descriptor)
    for sub in getattr(command, "commands", {}).values():
        plain_values(sub, ctx)
