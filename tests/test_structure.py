"""The layout of the package: the wings exist, imports form no circle, and no module outside a wing
reaches into the wing's private names."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"bench": "robustbench_lite.bench", "methods": "robustbench_lite.methods",
            "protocols": "robustbench_lite.protocols"}
WINGS = ("robustbench_lite.bench.attacks", "robustbench_lite.bench.corruptions",
         "robustbench_lite.bench.models",
         "robustbench_lite.bench.datasets")


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> list[tuple[str, str, bool]]:
    """(imported module, imported name or '', at module level?) for every import of `path`."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:  # `from package import module`
                    out.append((full, "", id(node) in top))
                else:
                    out.append((base, alias.name, id(node) in top))
        elif isinstance(node, ast.Import):
            out += [(alias.name, "", id(node) in top) for alias in node.names]
    return [item for item in out if item[0] in known]


def test_the_wings_exist():
    modules = _modules()
    for wing in WINGS:
        assert wing in modules, wing
        assert any(m.startswith(wing + ".") for m in modules), wing
    assert "robustbench_lite.bench.corruptions.engine" in modules
    assert "robustbench_lite.bench.attacks.pgd" in modules
    assert "robustbench_lite.bench.datasets.cifar" in modules


def test_module_level_imports_form_no_circle():
    modules = _modules()
    graph = {m: sorted({target for target, _, top in _imports(m, p, set(modules)) if top})
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_no_module_outside_a_wing_imports_its_private_names():
    modules = _modules()
    offences = []
    for module, path in modules.items():
        for target, name, _ in _imports(module, path, set(modules)):
            for wing in WINGS:
                inside = module == wing or module.startswith(wing + ".")
                private = name.startswith("_") or any(
                    part.startswith("_") for part in target[len(wing):].split("."))
                if target.startswith(wing) and not inside and private:
                    offences.append(f"{module} imports {target}.{name}")
    assert offences == [], offences
