"""The package's imports go one way, down the layers, and never in a circle.

Layers, low to high: the compiled core, backend, nn, lm, engine, repl (and lsp beside it), the
`predtext` command and the package's front door. A module may import its own layer or one
below it; the leaf modules (errors, command-line helpers, what a word is) may be imported from
anywhere and import nothing of predtext. Every import counts: at top level, inside a function,
under ``TYPE_CHECKING``, relative, and a module (not a package) named in full in a string (what
``importlib.import_module`` is handed by the lazy package doors and the command dispatcher).
The modules are read as source (``ast``), not imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src" / "predtext"

LEAVES = {"predtext.errors", "predtext.commandline", "predtext.text", "predtext.models"}
# (layer, rank): an import may go to a lower rank, or stay within its own layer; layers of one
# rank (repl and lsp; the command and the package's front door) do not import each other.
LAYERS = {"core": 0, "backend": 1, "nn": 2, "lm": 3, "engine": 4, "repl": 5, "lsp": 5,
          "cli": 6, "package": 6}


def layer_of(module: str) -> str:
    """The layer of a module of predtext, or "leaf"; KeyError for one the map does not place."""
    if module in LEAVES:
        return "leaf"
    parts = module.split(".")
    if module == "predtext":
        return "package"
    if module == "predtext._core":
        return "core"
    if parts[1] in LAYERS and parts[1] not in ("core", "package"):
        return parts[1]
    raise KeyError(f"{module} is in no layer: add it to the map in {Path(__file__).name}")


def modules_of(root: Path) -> dict[str, Path]:
    """``{module name: source file}`` for the package at ``root`` (a directory named predtext)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    if (root.parent / "core" / "_core.pyx").exists() or list(root.glob("_core*")):
        found.setdefault("predtext._core", root.parent / "core" / "_core.pyx")
    return found


def _resolve(name: str, known) -> str | None:
    """The known module that importing ``name`` loads last (its longest known prefix)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of predtext in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # Relative: level 1 is this module's package (the module itself for __init__).
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join(anchor + ([base] if base else []))
            # `from a import b` loads a.b when b is a module, else takes a name out of a.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                     for alias in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value in known and known[node.value].name != "__init__.py"
              and node.value != module):
            # A module named in full, for importlib (packages are left out: their names are
            # also the loggers' names).
            names = [node.value]
        for name in names:
            target = _resolve(name, known) if name.startswith("predtext") else None
            if target is not None and target != module:
                found.append((target, node.lineno))
    return found


def import_graph(root: Path = SOURCE) -> dict[str, list[tuple[str, int]]]:
    known = modules_of(root)
    return {module: imports_of(module, path, known) for module, path in known.items()
            if path.suffix == ".py"}


def upward_imports(graph) -> list[str]:
    """One line per import that goes up the layers, sideways, or out of a leaf module."""
    problems = []
    for module, imports in sorted(graph.items()):
        here = layer_of(module)
        for target, line in imports:
            there = layer_of(target)
            if here == "leaf":
                problems.append(f"{module}:{line} imports {target}: a leaf module imports "
                                "nothing of predtext")
            elif there == "leaf" or there == here:
                continue
            elif LAYERS[there] >= LAYERS[here]:
                problems.append(f"{module}:{line} ({here}) imports {target} ({there}): "
                                "imports go down the layers only")
    return problems


def cycles(graph) -> list[list[str]]:
    """The import circles: one cycle through each strongly connected group of modules
    (Tarjan's algorithm), as ``[a, b, ..., a]``."""
    edges = {m: sorted({t for t, _ in imports if t in graph}) for m, imports in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node):              # recursive: the package has ~60 modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in edges[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_cycle_in(group, edges) for group in groups]


def _cycle_in(group: set[str], edges) -> list[str]:
    """A shortest cycle through the group's first module (breadth-first, inside the group)."""
    start = min(group)
    came_from = {start: start}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in edges[node]:
                if successor == start:
                    chain = [node]
                    while chain[-1] != start:
                        chain.append(came_from[chain[-1]])
                    return chain[::-1] + [start]
                if successor in group and successor not in came_from:
                    came_from[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle in {sorted(group)}")


# ------------------------------------------------------------------ the package itself


def test_every_module_has_a_layer():
    for module in modules_of(SOURCE):
        layer_of(module)


def test_imports_go_down_the_layers_only():
    problems = upward_imports(import_graph())
    assert not problems, "\n".join(problems)


def test_no_module_imports_itself_back():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_reader_sees_the_package_imports():
    """The reader finds imports the rule is about: at top level, inside functions, by name."""
    graph = import_graph()
    lm_model = {target for target, _ in graph["predtext.lm.model"]}
    assert {"predtext.nn", "predtext.backend.cells", "predtext.lm.ngram"} <= lm_model
    assert "predtext.lm.generate" in lm_model                 # imported inside a method
    cli = {target for target, _ in graph["predtext.cli"]}
    assert {"predtext.repl.commands", "predtext.lm.commands", "predtext.engine.commands"} <= cli


# ----------------------------------------------------------------- the checker on a made-up package


def _package(tmp_path, files: dict[str, str]) -> Path:
    root = tmp_path / "predtext"
    for name, text in {"__init__.py": "", "nn/__init__.py": "", "lm/__init__.py": "",
                       "engine/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_an_upward_import_inside_a_function_is_found(tmp_path):
    root = _package(tmp_path, {
        "nn/layer.py": "def f():\n    from predtext.engine.thing import x\n",
        "engine/thing.py": "from predtext.nn import layer\nx = 1\n",
        "lm/ok.py": "from predtext.errors import E\nimport predtext.nn.layer\n",
        "errors.py": "class E(Exception):\n    pass\n",
    })
    problems = upward_imports(import_graph(root))
    assert len(problems) == 1 and problems[0].startswith("predtext.nn.layer:2 (nn) imports "
                                                         "predtext.engine.thing (engine)")


def test_a_relative_import_and_a_leaf_that_imports_are_found(tmp_path):
    root = _package(tmp_path, {
        "lm/a.py": "from ..engine import b\n",
        "engine/b.py": "",
        "text.py": "from predtext.lm import a\n",
    })
    problems = upward_imports(import_graph(root))
    assert any(p.startswith("predtext.lm.a:1 (lm) imports predtext.engine.b") for p in problems)
    assert any(p.startswith("predtext.text:1 imports predtext.lm.a: a leaf") for p in problems)


def test_a_circle_is_reported_with_its_path(tmp_path):
    root = _package(tmp_path, {
        "engine/a.py": "from predtext.engine.b import x\n",
        "engine/b.py": "def g():\n    from predtext.engine import c\n",
        "engine/c.py": "import predtext.engine.a\n",
        "engine/d.py": "from predtext.engine import a\n",
    })
    assert cycles(import_graph(root)) == [["predtext.engine.a", "predtext.engine.b",
                                           "predtext.engine.c", "predtext.engine.a"]]


def test_a_module_outside_the_map_is_named(tmp_path):
    with pytest.raises(KeyError, match="predtext.gpu"):
        layer_of("predtext.gpu.kernels")
