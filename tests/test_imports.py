"""Import structure: no cycles between the project's modules, and a JAX-free torch stage.

Both checks read or import the source only (no model is built), so they are fast."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("unimdm_jax", "llm_torch")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imports(tree: ast.Module, inside_functions: bool, is_package: bool):
    """Import statements executed when the module is imported, plus, with ``inside_functions``,
    those inside a def (they run later but are still a dependency: a function-local import
    hides a cycle, it does not remove it). ``if TYPE_CHECKING:`` blocks never run. A package's
    module ``__getattr__`` (the public API, loaded on first attribute access) is left out."""

    def walk(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not inside_functions:
                continue
            if is_package and isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from walk(node.orelse)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            yield from walk(ast.iter_child_nodes(node))

    yield from walk(tree.body)


def import_graph(root: Path = ROOT, inside_functions: bool = False) -> dict[str, set[str]]:
    """module -> the project modules it imports at module level (and inside functions with
    ``inside_functions``); a submodule import also runs its parent packages' __init__."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def add(source: str, target: str):
        # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c; the source's own parent
        # packages are skipped: Python has started them before the source itself
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in modules and name != source and not source.startswith(name + "."):
                graph[source].add(name)

    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path)), inside_functions, is_package):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(name, alias.name)
                continue
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            add(name, target)
            for alias in node.names:  # `from pkg import submodule`
                if f"{target}.{alias.name}" in modules:
                    add(name, f"{target}.{alias.name}")
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_the_project_modules():
    graph = import_graph()
    assert "unimdm_jax.schema.record" in graph and "llm_torch.predict" in graph
    assert "unimdm_jax.objective" in graph["unimdm_jax.reverse_diffusion"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_cycles_hidden_by_function_local_imports():
    cycle = find_cycle(import_graph(inside_functions=True))
    assert cycle is None, "import cycle through a function-local import: " + " -> ".join(cycle)


JAX_POISON = """
import importlib.abc, sys

class NoJax(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "jaxlib", "flax", "jraph", "optax", "orbax"):
            raise ImportError(f"{name} imported in a JAX-free install")
        return None

sys.meta_path.insert(0, NoJax())
import unimdm_jax, unimdm_jax.schema, llm_torch.constraints, llm_torch.predict, llm_torch.prompts
import llm_torch.dataset, llm_torch.evaluate, llm_torch.neighbours
from unimdm_jax.schema import SymmetryRecord
print("ok")
"""


def test_torch_stage_and_schema_import_without_jax():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", JAX_POISON], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


REMOTE_POISON = """
import importlib.abc, sys

class NoHostOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pymatgen", "pyxtal", "spglib", "pandas", "torch", "transformers"):
            raise ImportError(f"{name} imported on the JAX-only path")
        return None

sys.meta_path.insert(0, NoHostOnly())
import unimdm_jax.remote, unimdm_jax.dataset_sampling, unimdm_jax.train, unimdm_jax.data.preprocess, unimdm_jax.checkpoint
print("ok")
"""  # noqa: E501 - the script's one-line import is kept verbatim


def test_remote_run_imports_without_pymatgen_pandas_or_torch():
    """``python -m unimdm_jax.remote run`` runs on a lent accelerator with JAX but without the
    host's structure libraries (``unimdm_jax.remote``'s docstring)."""
    pytest.importorskip("jax")  # an install of the torch stage alone has no JAX
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_POISON], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
