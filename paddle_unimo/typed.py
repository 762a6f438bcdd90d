"""The one type checker of every config: the model's ``UNIMOConfig``, the trainer's ``TrainConfig``, a task's
data/decode/eval sections and the objectives' configs.

A config is a dataclass. ``from_dict(cls, values, where)`` builds one from a mapping (a YAML section, a JSON
file, ``-o`` overrides): unknown keys are an error listing the known ones, every value is checked against its
field's annotation, and numbers written in scientific notation are numbers (PyYAML reads ``3e-5`` as the string
``'3e-5'``; here it is the float 3e-05). Ranges and choices live in the field's metadata (``bounded``), so one
function checks them all, and every message names the place: ``file: section.key: what``.
"""
from __future__ import annotations

import dataclasses
import numbers
import re
import types
import typing
from typing import Any, Dict, Mapping

from .fileio import DataError

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class ConfigError(DataError):
    """A config value of the wrong type, out of range, or a key the config does not have."""


class MissingPackage(ImportError):
    """An optional package a chosen feature needs is not installed; the message says what to install."""


def join(where: str, key) -> str:
    """The place of ``key`` inside ``where``: ``file.yaml: train`` + ``lr`` -> ``file.yaml: train.lr``; a
    ``where`` ending in ':' (a file) takes the key after a space: ``file.yaml:`` + ``train`` -> ``file.yaml: train``."""
    if not where:
        return str(key)
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def _at(where: str) -> str:
    return where[:-1] if where.endswith(":") else where


def bounded(default=dataclasses.MISSING, *, min=None, max=None, choices=None, default_factory=dataclasses.MISSING,
            above=None):
    """A dataclass field with a checked range: ``min <= value <= max``, ``value > above``, or one of ``choices``."""
    meta = {k: v for k, v in (("min", min), ("max", max), ("choices", choices), ("above", above)) if v is not None}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def _name(annotation) -> str:
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                "dict": "a mapping", "list": "a list"}.get(annotation.__name__, annotation.__name__)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_name(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_name(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    return str(annotation)


def coerce(value, annotation, where: str):
    """``value`` checked against ``annotation`` (int, float, bool, str, Optional, list/tuple, dict, a
    dataclass); returns it converted (a float field takes an int or a number string; a dataclass a mapping)."""
    if annotation is Any:
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{_at(where)}: expected {_name(annotation)}, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        return from_dict(annotation, value, where)
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_at(where)}: expected {_name(annotation)}, got {value!r}")
        item = args[0] if args else Any
        items = [coerce(v, item, f"{_at(where)}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or annotation) is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_at(where)}: expected a mapping, got {value!r}")
        item = args[1] if len(args) == 2 else Any
        return {k: coerce(v, item, join(where, k)) for k, v in value.items()}
    if annotation is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):  # numpy scalars too
            return float(value)
    elif annotation is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif annotation is bool or annotation is str:
        if isinstance(value, annotation):
            return value
    else:
        raise TypeError(f"{_at(where)}: unsupported annotation {annotation!r}")
    raise ConfigError(f"{_at(where)}: expected {_name(annotation)}, got {value!r}")


def _check_range(value, meta: Mapping, where: str) -> None:
    if value is None or not meta:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{_at(where)}: {value!r} is not one of {list(meta['choices'])}")
    low, high, above = meta.get("min"), meta.get("max"), meta.get("above")
    if (low is not None and value < low) or (high is not None and value > high) or \
            (above is not None and value <= above):
        allowed = " and ".join(s for s in (f">= {low}" if low is not None else "", f"> {above}" if above is not None
                                           else "", f"<= {high}" if high is not None else "") if s)
        raise ConfigError(f"{_at(where)}: {value!r} is out of range (allowed: {allowed})")


def check_fields(obj, where: str) -> None:
    """Checks (and converts) every field of the dataclass instance ``obj`` in place; call it from
    ``__post_init__``. A field's ``bounded`` metadata gives its range."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        place = join(where, f.name)
        value = coerce(getattr(obj, f.name), hints[f.name], place)
        _check_range(value, f.metadata, place)
        object.__setattr__(obj, f.name, value)


def check(obj, where: str = ""):
    """``check_fields`` and then the config's own cross-field ``validate(where)`` when it has one; returns ``obj``."""
    check_fields(obj, where)
    if hasattr(obj, "validate"):
        obj.validate(where)
    return obj


def from_dict(cls, values, where: str = "", ignore=frozenset()):
    """``cls(**values)`` with unknown keys refused (listing the known ones) and every value checked.

    ``where`` prefixes every message (e.g. ``config.yaml: train``); keys in ``ignore`` are dropped silently.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{_at(where)}: expected a mapping of keys to values, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in values if k not in known and k not in ignore)
    if unknown:
        raise ConfigError(f"{_at(where)}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key in known:
            place = join(where, key)
            kwargs[key] = coerce(value, hints[key], place)
    missing = sorted(k for k, f in known.items() if k not in kwargs and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{_at(where)}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return check(cls(**kwargs), where)


def to_dict(obj) -> Dict[str, Any]:
    """The plain-data form of a config dataclass (nested dataclasses as mappings, tuples as lists)."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(obj)
