"""The package's architecture, read from the source: no import cycle, and each layer imports only
the layers below it (core/__init__.py lists them). Imports inside functions count too (a lazy
import is still a dependency); those under `if TYPE_CHECKING:` do not (they never run)."""
from __future__ import annotations

import ast
import os

import pytest

from conftest import ROOT

PKG = os.path.join(ROOT, "mobilesam_ros")
# what each core layer may import from the rest of core (itself always); ops and structures are
# peers (instances pack masks with ops; ops' filters take instances) but modules must not cycle
ALLOWED = {
    "structures": {"ops"},
    "ops": {"structures", "config"},  # geometry3d's Extract3DConfig, overlay's alpha live in config
    "io": {"modeling"},  # checkpoints build the networks they load into
    "modeling": set(),  # nn.Modules only: nothing of pre/post-processing or running
    "runtime": {"io", "modeling", "ops", "structures", "config"},
    "engine": {"io", "modeling", "ops", "structures", "runtime", "config"},
    # measuring and labelling run the engine's predictors; nothing below may import them
    "eval": {"engine", "io", "modeling", "ops", "structures", "runtime", "config"},
    "config": set(),  # every default (core/config.py): standard library only
    "errors": set(),  # the user-error types (core/errors.py): a leaf every layer may raise
}
for _deps in ALLOWED.values():
    _deps.add("errors")


def _modules() -> dict[str, str]:
    mods = {}
    for d, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return mods


MODULES = _modules()


def _imports(path: str) -> set[str]:
    """Package modules imported anywhere in the file, except under `if TYPE_CHECKING:`."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}: relative import (the package imports absolutely)"
                out.add(child.module)
                out.update(f"{child.module}.{a.name}" for a in child.names)
            elif isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            visit(child)

    with open(path, encoding="utf-8") as fh:
        visit(ast.parse(fh.read(), path))
    return {m for m in out if m in MODULES}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative enough here)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            connect(v)
    return found


def test_the_tests_see_the_whole_package():
    assert len(MODULES) > 60 and "mobilesam_ros.core.engine.predictor" in MODULES
    assert "mobilesam_ros.core.modeling.tiny_vit" in GRAPH["mobilesam_ros.core.modeling.sam"]


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_cycle_detector_finds_a_planted_cycle():
    planted = {k: set(v) for k, v in GRAPH.items()}
    planted["mobilesam_ros.core.ops.transforms"].add("mobilesam_ros.core.engine.predictor")
    assert any("mobilesam_ros.core.ops.transforms" in c for c in _cycles(planted))


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[:2] != ["mobilesam_ros", "core"] or len(parts) < 3:
        return ".".join(parts[:2])
    return parts[2]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_core_layers_import_only_layers_below(layer):
    wrong = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if _layer(m) == layer
                   for d in deps if _layer(d) != layer and _layer(d) not in ALLOWED[layer]
                   and d != "mobilesam_ros.core")
    assert wrong == []


def test_core_never_imports_the_adapters():
    """The node, the CLI and distillation use the core; the core uses none of them."""
    wrong = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if m.startswith("mobilesam_ros.core")
                   for d in deps if not d.startswith("mobilesam_ros.core"))
    assert wrong == []
