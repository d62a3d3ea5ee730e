"""`--set key=value` settings, scoped to their owner, for one run or a whole grid.

A key is written `k` (a method setting), `protocol.k`, `recipe.k`, or `<name>.k` for the method or
protocol called `<name>` (`mixup.alpha`, `adversarial.n_examples`). `Scoped` holds them by scope;
`Settings` is what one run gets: the method's, the protocol's and the recipe's values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import UserError

Scoped = dict[str, dict[str, str]]  # scope ("method", "protocol", "recipe" or a name) -> {k: v}
SCOPES = ("method", "protocol", "recipe")


@dataclass(frozen=True)
class Settings:
    """The `--set` values of one run, by owner (strings, converted against the typed configs)."""

    method: Mapping[str, str] = field(default_factory=dict)
    protocol: Mapping[str, str] = field(default_factory=dict)
    recipe: Mapping[str, str] = field(default_factory=dict)


def parse(pairs: Iterable[str] | None) -> Scoped:
    """["alpha=0.4", "protocol.n_examples=100"] -> {"method": {"alpha": "0.4"}, "protocol": ...}."""
    scoped: Scoped = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {pair!r} is not key=value; write e.g. --set alpha=0.4")
        scope, dot, name = key.partition(".")
        scope, name = (scope, name) if dot else ("method", key)
        scoped.setdefault(scope, {})[name] = value.strip()
    return scoped


def for_run(scoped: Scoped, method: str, protocol: str) -> Settings:
    """The settings of one run: every scope must name this run's method or protocol."""
    unknown = set(scoped) - {*SCOPES, method, protocol}
    if unknown:
        raise UserError(f"--set {sorted(unknown)[0]}.…: neither recipe, protocol, nor this run's "
                        f"method ({method}) or protocol ({protocol})")
    return Settings({**scoped.get("method", {}), **scoped.get(method, {})},
                    {**scoped.get("protocol", {}), **scoped.get(protocol, {})},
                    dict(scoped.get("recipe", {})))


def for_cell(scoped: Scoped, method: str, method_config: type, protocol: str,
             protocol_config: type, grid_methods: Iterable[str], grid_protocols: Iterable[str]
             ) -> Settings:
    """The settings of one cell of a grid: a bare `k` (or `protocol.k`) goes to the grid's methods
    (protocols) that have a setting k, and must fit at least one of them; `<name>.k` goes to that
    method or protocol only."""
    names = {*grid_methods, *grid_protocols}
    unknown = set(scoped) - {*SCOPES, *names}
    if unknown:
        raise UserError(f"--set {sorted(unknown)[0]}.…: neither recipe, protocol, nor a swept "
                        f"method or protocol ({', '.join(sorted(names))})")
    return Settings({**_fitting(scoped.get("method", {}), method_config),
                     **scoped.get(method, {})},
                    {**_fitting(scoped.get("protocol", {}), protocol_config),
                     **scoped.get(protocol, {})},
                    dict(scoped.get("recipe", {})))


def check_fits(scoped: Scoped, method_configs: Iterable[type], protocol_configs: Iterable[type]
               ) -> None:
    """Every bare method (protocol) setting of a grid must be a field of one of its methods
    (protocols)."""
    for scope, configs in (("method", list(method_configs)), ("protocol", list(protocol_configs))):
        known = {f.name for config in configs for f in dataclasses.fields(config)}
        for key in scoped.get(scope, {}):
            if key not in known:
                written = key if scope == "method" else f"protocol.{key}"
                raise UserError(f"--set {written}: none of the swept {scope}s has a setting "
                                f"{key!r}; check the spelling")


def _fitting(values: Mapping[str, str], config: type) -> dict[str, str]:
    fields = {f.name for f in dataclasses.fields(config)}
    return {k: v for k, v in values.items() if k in fields}
