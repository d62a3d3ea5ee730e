"""What `robustbench-lite list` shows, read from the source files without importing them.

Importing a method or a protocol imports torch (seconds); `list` only reads: for every class or
function registered with `@<REGISTRY>.register("name")` in the built-in modules (and for every
installed plugin's entry point, in its module's file), its docstring's first line and, for methods
and protocols, its nested `Config`: each setting's name, type, default as written, declared range
(`setting(...)`) and comment (on the field's line or the comment lines just above it). The
registries stay the owners at run time; a test holds this view equal to them.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import tokenize
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

PACKAGES = {"methods": ("robustbench_lite.methods", "METHODS", "robustbench_lite.methods"),
            "protocols": ("robustbench_lite.protocols", "PROTOCOLS", "robustbench_lite.protocols"),
            "datasets": ("robustbench_lite.bench.datasets", "DATASETS", "robustbench_lite.datasets"),
            "backbones": ("robustbench_lite.bench.backbones", "BACKBONES",
                          "robustbench_lite.backbones")}


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str
    default: str
    allowed: str = ""
    comment: str = ""

    def line(self) -> str:
        allowed = f" ({self.allowed})" if self.allowed else ""
        comment = f"  # {self.comment}" if self.comment else ""
        return f"{self.name}: {self.kind} = {self.default}{allowed}{comment}"


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    source: str  # "builtin" or the plugin's "dist==version (module:object)"
    settings: tuple[Setting, ...] = field(default_factory=tuple)


def entries(section: str) -> list[Entry]:
    """The entries of one registry ("methods", "protocols", "datasets", "backbones"), by name."""
    package, registry, group = PACKAGES[section]
    found = {}
    for path in _module_files(package):
        for entry in _registered(path, registry):
            found[entry.name] = entry
    for plugin in entry_points(group=group):
        if plugin.name not in found:
            found[plugin.name] = _plugin(plugin)
    return [found[name] for name in sorted(found)]


def _module_files(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return sorted(p for folder in spec.submodule_search_locations
                      for p in Path(folder).glob("*.py"))
    return [Path(spec.origin)]


def _registered(path: Path, registry: str, only: str | None = None) -> list[Entry]:
    """Entries registered in `path` with `@<registry>.register("name")` (or the object `only`)."""
    text = path.read_text(encoding="utf-8")
    tree, comments = ast.parse(text), _comments(text)
    constants = _constants(tree, path)
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        names = [_registered_name(d, registry, constants) for d in node.decorator_list]
        names = [n for n in names if n]
        if only is not None and node.name == only:
            names = names or [only]
        for name in names:
            out.append(Entry(name, _first_line(ast.get_docstring(node)), "builtin",
                             _settings(node, comments, constants)))
    return out


def _constants(tree: ast.Module, path: Path, follow: bool = True) -> dict[str, str]:
    """Module-level names bound to literals (and, one import deep, the literals they import)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = repr(ast.literal_eval(node.value))
            except ValueError:
                pass
        elif follow and isinstance(node, ast.ImportFrom):
            source = _imported_file(node, path)
            if source is not None and source.is_file():
                imported = _constants(ast.parse(source.read_text(encoding="utf-8")), source, False)
                out.update({a.asname or a.name: imported[a.name] for a in node.names
                            if a.name in imported})
    return out


def _registered_name(decorator: ast.expr, registry: str, constants: dict[str, str]
                     ) -> str | None:
    """The name in `@<registry>.register("name")` (or `register(NAME)`, NAME a module constant)."""
    if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
            and decorator.func.attr == "register" and isinstance(decorator.func.value, ast.Name)
            and decorator.func.value.id == registry and decorator.args):
        return None
    arg = decorator.args[0]
    if isinstance(arg, ast.Constant):
        return str(arg.value)
    if isinstance(arg, ast.Name) and arg.id in constants:
        return ast.literal_eval(constants[arg.id])
    return None


def _imported_file(node: ast.ImportFrom, path: Path) -> Path | None:
    """The file of a relative import, or of an absolute one from this package (found, not run)."""
    if node.level:
        return path.parent.joinpath(*[".."] * (node.level - 1),
                                    *(node.module or "").split(".")).with_suffix(".py")
    if not (node.module or "").startswith("robustbench_lite."):
        return None
    try:
        spec = importlib.util.find_spec(node.module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin else None


def _settings(node: ast.AST, comments: dict[int, tuple[str, bool]], names: dict[str, str]
              ) -> tuple[Setting, ...]:
    config = next((n for n in getattr(node, "body", []) if isinstance(n, ast.ClassDef)
                   and n.name == "Config"), None)
    if config is None:
        return ()
    out = []
    for item in config.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        default, allowed = _default(item.value)
        default = names.get(default, default)
        out.append(Setting(item.target.id, ast.unparse(item.annotation), default, allowed,
                           _comment(item.lineno, comments)))
    return tuple(out)


def _default(value: ast.expr | None) -> tuple[str, str]:
    """(the default as written, the declared range) of a field's value."""
    if value is None:
        return "(required)", ""
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id == "setting" and value.args):
        words = {k.arg: ast.literal_eval(k.value) for k in value.keywords}
        return ast.unparse(value.args[0]), _describe_range(words)
    return ast.unparse(value), ""


def _describe_range(words: dict) -> str:
    low, high = words.get("low"), words.get("high")
    parts = []
    if low is not None and high is not None:
        parts.append(f"in {'(' if words.get('low_open') else '['}{low}, {high}"
                     f"{')' if words.get('high_open') else ']'}")
    elif low is not None:
        parts.append(f"{'>' if words.get('low_open') else '>='} {low}")
    elif high is not None:
        parts.append(f"{'<' if words.get('high_open') else '<='} {high}")
    if words.get("nonempty"):
        parts.append("at least one")
    return ", ".join(parts)


def _comments(text: str) -> dict[int, tuple[str, bool]]:
    """{line: (comment text, alone on its line?)} of every comment in `text`."""
    out, code_lines = {}, set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            out[token.start[0]] = (token.string.lstrip("#").strip(),
                                   token.start[0] not in code_lines)
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(token.start[0])
    return out


def _comment(line: int, comments: dict[int, tuple[str, bool]]) -> str:
    """The comment on `line`, else the comment lines right above it, joined."""
    if line in comments:
        return comments[line][0]
    above = []
    while comments.get(line - 1 - len(above), ("", False))[1]:
        above.insert(0, comments[line - 1 - len(above)][0])
    return " ".join(above)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


def _plugin(plugin) -> Entry:
    dist = getattr(plugin, "dist", None)
    source = f"{dist.name}=={dist.version} ({plugin.value})" if dist else plugin.value
    module, _, obj = plugin.value.partition(":")
    try:
        spec = importlib.util.find_spec(module)
        found = _registered(Path(spec.origin), "", only=obj) if spec and spec.origin else []
    except (ImportError, OSError, SyntaxError, ValueError):
        found = []
    if not found:
        return Entry(plugin.name, "plugin (its source could not be read)", source)
    return Entry(plugin.name, found[0].description, source, found[0].settings)
