"""The package's import graph: no cycles, and internal imports at module top unless the module is costly.

Read from the source (``ast``), not by importing: an import inside a function is an edge too, since a cycle
hidden that way still ties the two modules together (issue 29).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agentrefine_lg"

# Internal modules that stay imported inside functions: they import an engine, torch or TextWorld at their top,
# and most uses of the package never need them.
LAZY = ("agentrefine_lg.synthesis.grounded", "agentrefine_lg.serving.local_model", "agentrefine_lg.serving.server",
        "agentrefine_lg.eval.sciworld", "agentrefine_lg.eval.agentboard", "agentrefine_lg.eval.agentboard_envs")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module a dotted import target lives in (``a.b.func`` -> ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, bool, int]]:
    """(internal module imported, at module top?, line) of every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            owner = _owner(name) if name.startswith("agentrefine_lg") else None
            if owner and owner != module:
                out.append((owner, id(node) in top, node.lineno))
    return out


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_package_has_no_import_cycle_even_through_imports_inside_functions():
    edges = {m: {target for target, _, _ in _imports(m)} for m in MODULES}
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    # the detector itself, on a graph with one: a -> b at the top, b -> a inside a function
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_internal_modules_do_not_import_the_package_root():
    # the root re-exports everything; a module importing it would depend on every other module
    offenders = [f"{m}:{line}" for m in MODULES for target, _, line in _imports(m)
                 if target == "agentrefine_lg" and m != "agentrefine_lg"]
    assert offenders == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_cheap_internal_imports_are_at_module_top(module):
    lazy = [f"{target} (line {line})" for target, top, line in _imports(module)
            if not top and not any(target == m or target.startswith(m + ".") for m in LAZY)
            and not (module == "agentrefine_lg" and target.startswith("agentrefine_lg.synthesis.grounded"))]
    assert lazy == [], f"{module} imports these inside functions; import them at the top"


def test_modules_that_moved_keep_their_old_import_paths():
    import importlib
    import warnings

    import agentrefine_lg
    from agentrefine_lg.serving import chat_model as moved_chat_model
    from agentrefine_lg.synthesis import runner as moved_runner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old_chat = importlib.import_module("agentrefine_lg.chat_model")
        old_runner = importlib.import_module("agentrefine_lg.runner")
        from agentrefine_lg.grounded.script import GROUNDING_KEY as old_key  # a moved package's submodule
    from agentrefine_lg.synthesis.grounded.script import GROUNDING_KEY

    assert old_chat is moved_chat_model and old_runner is moved_runner  # the same module, not a second copy
    assert old_key is GROUNDING_KEY
    assert callable(agentrefine_lg.chat_model) and agentrefine_lg.chat_model is moved_chat_model.chat_model
    assert moved_runner.__spec__.name == "agentrefine_lg.synthesis.runner"  # it still knows its real name


def test_an_old_path_warns_where_it_moved():
    import importlib
    import sys

    sys.modules.pop("agentrefine_lg.teachers", None)
    with pytest.warns(DeprecationWarning, match="agentrefine_lg.synthesis.teachers"):
        importlib.import_module("agentrefine_lg.teachers")
