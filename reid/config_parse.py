"""Config parsing helpers behind :mod:`reid.config`: typed coercion of YAML / ``--set`` values against the dataclass
schema, with one-line :class:`ConfigError` messages, and ``${VAR}`` path expansion. Generic: nothing here knows the
schema's sections (``cluster.eps``, a number or ``auto``, is the one key with a rule of its own).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import typing
from typing import Any, Literal

import yaml

from reid.errors import ConfigError


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list of {typing.get_args(tp)[0].__name__}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotated type ``tp``; returns the value converted where lossless."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if key == "cluster.eps":
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"cluster.eps: expected 'auto' or a number in (0, 1), got {value!r}")
        if not 0 < value < 1:
            raise ConfigError(f"cluster.eps: expected 'auto' or a number in (0, 1), got {value!r}")
        return float(value)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}"
                              + (suggest(str(value), [str(a) for a in typing.get_args(tp)])))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item_tp,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 and 1.0e30 (no dot or no exponent sign) as strings
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise bad
        return value
    return value


def parse_override_value(raw: str) -> Any:
    """``--set`` values are YAML scalars: ``0.5`` -> float, ``true`` -> bool, ``[1,2]`` -> list."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def build_section(cls: type, values: dict[str, Any], prefix: str) -> Any:
    types_ = field_types(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in types_:
            raise ConfigError(f"unknown key '{key}'" + suggest(key, [f"{prefix}{n}" for n in types_]))
        tp = types_[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of {list(field_types(tp))}, got {value!r}")
            kwargs[name] = build_section(tp, value, f"{key}.")
        else:
            kwargs[name] = _coerce(key, value, tp)
    return cls(**kwargs)


def deep_copy(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: deep_copy(v) for k, v in values.items()}
    if isinstance(values, list):
        return [deep_copy(v) for v in values]
    return values


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_path(value: str) -> str:
    """Expand ``${VAR}`` / ``${VAR:-default}`` and ``~`` in a config path (no shell involved).

    Raises ConfigError when a variable without default is unset.
    """

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable '{name}' used in path {value!r} is not set")

    return os.path.expanduser(_VAR.sub(replace, value))
