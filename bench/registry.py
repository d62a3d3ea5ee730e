"""Small, strict name registries with lazy entry-point plugins.

A duplicate name is an error; an unknown name is an error listing the known ones (and the closest
match). Third-party classes come in through an entry-point group and are imported only when named.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from .errors import UserError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def is_valid_name(name: str) -> bool:
    """Whether `name` can name a registry entry (and a run file's method or backbone part)."""
    return bool(_NAME.match(name))


class Registry(Generic[T]):
    """Maps names to objects of one kind.

    Args:
        kind: what the registry holds, used in messages ("method").
        builtins: module that registers the built-in entries when imported (lazily, on first use).
        group: entry-point group through which plugins register, or None for no plugins.
        check: validates an object before it is registered; raises TypeError when unfit.
    """

    def __init__(self, kind: str, builtins: str | None = None, group: str | None = None,
                 check: Callable[[object], None] | None = None) -> None:
        self.kind = kind
        self._builtins = builtins
        self._group = group
        self._check = check
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._loaded_builtins = False

    def register(self, name: str, source: str = "builtin") -> Callable[[T], T]:
        """Decorator that registers an object under `name`."""

        def add(obj: T) -> T:
            self.add(name, obj, source)
            return obj

        return add

    def add(self, name: str, obj: T, source: str = "builtin") -> None:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must match {_NAME.pattern}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered "
                             f"(by {self._sources[name]}); pick another name")
        if self._check is not None:
            self._check(obj)
        self._entries[name] = obj
        self._sources[name] = source

    def get(self, name: str) -> T:
        """The object registered as `name`; a plugin is imported here, and only this one."""
        self._load_builtins()
        if name in self._entries:
            return self._entries[name]
        plugin = self._plugin(name)
        if plugin is None:
            raise UserError(self._unknown(name))
        obj = plugin.load()
        dist = getattr(plugin, "dist", None)
        source = f"{dist.name}=={dist.version}" if dist is not None else plugin.value
        self.add(name, obj, source)
        return obj

    def names(self) -> list[str]:
        """Built-in and plugin names, sorted; plugins are not imported."""
        self._load_builtins()
        return sorted(set(self._entries) | set(self._plugin_names()))

    def is_loaded(self, name: str) -> bool:
        self._load_builtins()
        return name in self._entries

    def plugin_origin(self, name: str) -> str:
        """'dist==version (module:object)' of a plugin, without importing it."""
        plugin = self._plugin(name)
        if plugin is None:
            raise UserError(self._unknown(name))
        dist = getattr(plugin, "dist", None)
        return f"{dist.name}=={dist.version} ({plugin.value})" if dist else plugin.value

    def source(self, name: str) -> str:
        self.get(name)
        return self._sources[name]

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def _load_builtins(self) -> None:
        if not self._loaded_builtins and self._builtins:
            self._loaded_builtins = True
            importlib.import_module(self._builtins)

    def _plugins(self):
        return entry_points(group=self._group) if self._group else ()

    def _plugin_names(self) -> list[str]:
        return [ep.name for ep in self._plugins()]

    def _plugin(self, name: str):
        found = [ep for ep in self._plugins() if ep.name == name]
        if len(found) > 1:
            raise UserError(f"{self.kind} {name!r} is provided by several plugins "
                            f"({', '.join(ep.value for ep in found)}); uninstall all but one")
        return found[0] if found else None

    def _unknown(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(known)}.{hint}"
