"""Typed hyperparameters: frozen dataclasses whose defaults are the paper's values.

`--set key=value` overrides are parsed against the field types, so a typo or a wrong type is a
clear error rather than a silent default.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import types
import typing
from typing import Any

from .errors import UserError


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """A method without hyperparameters."""


def apply_overrides(config: Any, overrides: dict[str, str], owner: str) -> Any:
    """A copy of the dataclass `config` with string overrides converted to the field types."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes = {}
    for key, text in overrides.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise UserError(f"--set {key}: {owner} has no setting {key!r}; its settings: {known}")
        changes[key] = _convert(text, hints[key], f"--set {key}={text}")
    return dataclasses.replace(config, **changes)


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
        items = [s for s in text.strip("()[] ").split(",") if s.strip()]
        kind = args[0] if args else str
        return tuple(_convert(s.strip(), kind, where) for s in items)
    if typing.get_origin(hint) is typing.Literal:
        if text not in args:
            raise UserError(f"{where}: expected one of {', '.join(map(str, args))}")
        return text
    if hint in (int, float):
        try:
            value = ast.literal_eval(text) if "/" not in text else _fraction(text)
            return hint(value) if hint is float or float(value).is_integer() else _bad(where, hint)
        except (ValueError, SyntaxError):
            _bad(where, hint)
    return text


def _fraction(text: str) -> float:
    num, den = text.split("/")
    return float(num) / float(den)


def _bad(where: str, hint: Any):
    raise UserError(f"{where}: expected a value of type {hint.__name__}")


def config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def stable_hash(payload: Any, length: int = 12) -> str:
    """Hex digest of a JSON-serialisable payload, independent of key order."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
