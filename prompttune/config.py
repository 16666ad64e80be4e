"""Frozen dataclass configs: every field documented, checked in __post_init__, unknown keys refused."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from typing import Any

from .errors import ConfigError


class ConfigBase:
    """Mixin for frozen dataclasses that hold a user's choices (never facts about the model)."""

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = ""):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            place = f"{where}: " if where else ""
            raise ConfigError(f"{place}unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                value = values[f.name]
                # JSON has no tuples: restore them so a loaded config equals the saved one.
                if isinstance(value, list):
                    value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
                kwargs[f.name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field}: {message}")


def check_optional_count(value, field: str) -> None:
    """A field that is a positive integer or None (not a bool, which Python counts as an int)."""
    check(
        value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0),
        field,
        f"must be a positive integer or null, got {value!r}",
    )


# ---- the command line, derived from a config's fields -----------------------------------------------


def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal that follows it), its base
    classes' fields included (a field a subclass documents again takes the subclass's)."""
    docs = {}
    for owner in reversed(cls.__mro__):
        if dataclasses.is_dataclass(owner) and owner is not cls:
            docs.update(_own_field_docs(owner))
    return {**docs, **_own_field_docs(cls)}


def _own_field_docs(cls) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _value_type(annotation) -> type:
    """int, float, str or bool from an annotation such as `int | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kinds) == 1:
            return _value_type(kinds[0])
    if annotation in (int, float, str, bool):
        return annotation
    raise TypeError(f"no command-line type for {annotation!r}")


def add_config_arguments(
    parser, cls, title: str | None = None, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None
) -> None:
    """One flag per field of the config dataclass `cls` (or those in `only`): `--field-name`, typed
    by its annotation (or by a `parse` function in its metadata, for values such as comma-separated
    lists), its docstring as the help, its `choices` metadata as the choices and its `flag` metadata
    as the flag's name where it is not the field's. A boolean field is
    a switch: `--name` where it defaults to false, `--no-name` where it defaults to true. A flag not
    given stays None, so the config's own default applies (`config_arguments`). A field added to the
    config appears on the command line by itself."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(title or f"{cls.__name__} (every field of it)")
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        kind = f.metadata.get("parse") or _value_type(hints[f.name])
        _add_flag(group, f, kind, docs.get(f.name, "") + _default_note(f, kind), f.metadata.get("choices"))


def _default_note(f, kind) -> str:
    """` (default X)` for a help text, where the field has a default worth saying (not a switch's)."""
    return "" if f.default in (None, dataclasses.MISSING) or kind is bool else f" (default {f.default})"


def _add_flag(group, f, kind, help_text: str, choices) -> None:
    """The flag of field `f`, parsed by `kind`: a switch for a boolean (`--no-name` where it
    defaults to true), else a typed option; not given, it stays None."""
    help_text = help_text.replace("%", "%%")
    name = f.metadata.get("flag", f.name.replace("_", "-"))
    if kind is bool:
        on = f.default is True
        group.add_argument(
            f"--no-{name}" if on else f"--{name}",
            dest=f.name,
            action="store_false" if on else "store_true",
            default=None,
            help=f"off (it is on by default): {help_text}" if on else help_text,
        )
        return
    group.add_argument(
        f"--{name}",
        dest=f.name,
        type=kind,
        choices=choices,
        default=None,
        metavar=None if choices else f.metadata.get("metavar", kind.__name__.upper()),
        help=help_text,
    )


def config_arguments(args, cls) -> dict[str, Any]:
    """The fields of `cls` given on the command line parsed by `add_config_arguments`."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def add_union_arguments(parser, classes, title: str, owner: str, only: tuple[str, ...] | None = None) -> None:
    """One flag per field that any of the config dataclasses `classes` has, each made as
    `add_config_arguments` makes it; its help says which of them take it (the value of their
    `owner` class attribute: a task's or a method's name), with each one's meaning and default where
    they differ. Fields of one name must parse alike; their choices are pooled, and each class
    checks its own. `only` keeps those fields alone."""
    hints = {cls: typing.get_type_hints(cls) for cls in classes}
    docs = {cls: field_docs(cls) for cls in classes}
    by_name: dict[str, list] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if only is None or f.name in only:
                by_name.setdefault(f.name, []).append((cls, f))
    group = parser.add_argument_group(title)
    for name, holders in by_name.items():
        kinds = {f.metadata.get("parse") or _value_type(hints[cls][f.name]) for cls, f in holders}
        if len(kinds) > 1:
            raise TypeError(f"field {name!r} parses differently in {[cls.__name__ for cls, _ in holders]}")
        kind = kinds.pop()
        meanings: dict[str, list[str]] = {}
        for cls, f in holders:
            meanings.setdefault(docs[cls].get(f.name, "") + _default_note(f, kind), []).append(getattr(cls, owner))
        if kind is bool and any(f.default is not False for _, f in holders):
            raise TypeError(f"switch {name!r} must default to false in every class")
        choices = list(dict.fromkeys(c for _, f in holders for c in f.metadata.get("choices") or ())) or None
        help_text = " ".join(f"[{', '.join(owners)}] {meaning}" for meaning, owners in meanings.items())
        _add_flag(group, holders[0][1], kind, help_text, choices)


def union_arguments(args, classes) -> dict[str, Any]:
    """The fields of any of `classes` given on the command line parsed by `add_union_arguments`."""
    given = {}
    for cls in classes:
        given.update(config_arguments(args, cls))
    return given
