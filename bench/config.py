"""Typed settings: frozen dataclasses whose defaults are the paper's values, with declared ranges.

`--set key=value` values are parsed as plain literals of the field's type (no expressions), so a
typo or a wrong type is a clear error rather than a silent default. A field declared with
`setting(default, low=..., high=...)` carries its allowed range, checked by `validate`; checks that
tie fields together live in the dataclass's `__post_init__`, which raises `ValueError` (the suite
turns it into a one-line error naming the setting, as it does for a plugin's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from .errors import UserError

_INT = re.compile(r"^[+-]?\d{1,18}$")
_FLOAT = re.compile(r"^[+-]?(\d{1,30}(\.\d{0,30})?|\.\d{1,30})([eE][+-]?\d{1,3})?$")


_UNSET = object()


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """A method without hyperparameters."""


@dataclass(frozen=True)
class Range:
    """An interval of allowed values (for a tuple field: of each element)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: Any) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and
                    (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


def setting(default: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, nonempty: bool = False,
            later: bool = False) -> Any:
    """A dataclass field with its allowed range: `setting(64, low=1)`, `setting(0.1, low=0,
    low_open=True)`; for a tuple, each element must lie in the range (and `nonempty`: one at least).
    `later`: added after run ids were fixed, so it enters `identity` only when set (a run made
    before the field existed keeps its id)."""
    return dataclasses.field(default=default, metadata={
        "range": Range(low, high, low_open, high_open), "nonempty": nonempty, "later": later})


def identity(config: Any) -> dict[str, Any]:
    """The settings as they key run ids: every field, less the `later` ones at their default."""
    later = {f.name: f.default for f in dataclasses.fields(config) if f.metadata.get("later")}
    return {k: v for k, v in config_dict(config).items() if later.get(k, _UNSET) != v}


def apply_overrides(config: Any, overrides: dict[str, str], owner: str, prefix: str = "") -> Any:
    """A copy of the dataclass `config` with string overrides converted to the field types, then
    checked (`validate`). `owner` names it in messages ("method mixup"), `prefix` is how its keys
    are written on the command line ("protocol.", "recipe.")."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes = {}
    for key, text in overrides.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise UserError(f"--set {prefix}{key}: {owner} has no setting {key!r}; its settings: "
                            f"{known}")
        changes[key] = _convert(text, hints[key], f"--set {prefix}{key}={text}")
    try:
        updated = dataclasses.replace(config, **changes)
    except (ValueError, TypeError, UserError) as err:
        written = " ".join(f"--set {prefix}{k}={v}" for k, v in overrides.items())
        raise UserError(f"{owner}: {str(err).strip().splitlines()[0]}"
                        + (f" ({written})" if written else "")) from None
    validate(updated, owner, prefix)
    return updated


def default_config(cls: type, owner: str) -> Any:
    """`cls()`, with a plugin's failing `__post_init__` as a one-line error."""
    try:
        return cls()
    except (ValueError, TypeError, UserError) as err:
        raise UserError(f"{owner}: its default settings are invalid: {err}") from None


def validate(config: Any, owner: str, prefix: str = "") -> None:
    """Every field declared with `setting(...)` within its range (a tuple: each element)."""
    for f in dataclasses.fields(config):
        allowed = f.metadata.get("range")
        if allowed is None:
            continue
        value = getattr(config, f.name)
        items = value if isinstance(value, tuple) else (value,)
        where = f"--set {prefix}{f.name}={_show(value)}"
        if f.metadata.get("nonempty") and not items:
            raise UserError(f"{where}: {owner} needs at least one value for {f.name}")
        for item in items:
            if item is not None and not allowed.admits(item):
                raise UserError(f"{where}: {owner} needs {f.name} {allowed.describe()}"
                                + (" (each value)" if isinstance(value, tuple) else ""))


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _convert(text: str, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(text, inner[0], where)
    if hint is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise UserError(f"{where}: expected true or false")
    if origin is tuple:
        inner = text.strip()
        if inner[:1] + inner[-1:] in ("()", "[]"):
            inner = inner[1:-1]
        items = [s.strip() for s in inner.split(",")]
        items = [s for s in items if s]
        kind = args[0] if args else str
        return tuple(_convert(s, kind, where) for s in items)
    if origin is typing.Literal:
        if text not in args:
            raise UserError(f"{where}: expected one of {', '.join(map(str, args))}")
        return text
    if hint is int:
        if not _INT.match(text):
            raise UserError(f"{where}: expected an integer (at most 18 digits), e.g. 10")
        return int(text)
    if hint is float:
        return _float(text, where)
    return text


def _float(text: str, where: str) -> float:
    """A decimal or scientific literal, or a fraction `a/b` of two (8/255); finite."""
    parts = text.split("/")
    if len(parts) > 2 or not all(_FLOAT.match(p.strip()) for p in parts):
        raise UserError(f"{where}: expected a number such as 0.1, 1e-3 or 8/255")
    numerator, *rest = (float(p) for p in parts)
    if rest and rest[0] == 0:
        raise UserError(f"{where}: the fraction divides by zero")
    value = numerator / rest[0] if rest else numerator
    if not math.isfinite(value):
        raise UserError(f"{where}: expected a finite number")
    return value


def config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def stable_hash(payload: Any, length: int = 12) -> str:
    """Hex digest of a JSON-serialisable payload, independent of key order."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
