"""The shape of the code, checked: the import contracts (.importlinter), no import circle
in any package, and no import inside a function without a comment saying why."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("portal", "onboarding", "releases", "costs")
REASON_MARK = "# import here:"


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "kept, 0 broken." in result.stdout


def _cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    edges = {
        m: sorted(n for n in graph.find_modules_directly_imported_by(m) if n in modules)
        for m in modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
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
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(edges[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_takes_part_in_an_import_circle(package):
    graph = grimp.build_graph(package, cache_dir=None)
    assert _cycles(graph, package) == []


def _late_imports(path: Path) -> list[str]:
    """Imports inside functions without a `# import here: why` comment on or above them."""
    source = path.read_text()
    lines = source.splitlines()
    found = []

    class Visitor(ast.NodeVisitor):
        depth = 0

        def visit_FunctionDef(self, node: ast.AST) -> None:
            self.depth += 1
            self.generic_visit(node)
            self.depth -= 1

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
            if self.depth:
                here = lines[node.lineno - 1]
                # The comment stands on the line, or above the block of imports it begins.
                above = node.lineno - 2
                while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
                    above -= 1
                if REASON_MARK not in here and (above < 0 or REASON_MARK not in lines[above]):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {here.strip()}")

        visit_ImportFrom = visit_Import

    Visitor().visit(ast.parse(source))
    return found


def test_an_import_inside_a_function_says_why():
    files = [
        path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    ]
    late = [line for path in files for line in _late_imports(path)]
    assert late == [], (
        "add '# import here: <why>' above each, or move it to the top:\n" + "\n".join(late)
    )


def test_the_circle_finder_finds_a_circle(tmp_path, monkeypatch):
    """The check above could pass by finding nothing: show it finds a planted circle."""
    package = tmp_path / "circled"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circled import b\n")
    (package / "b.py").write_text("from circled import c\n")
    (package / "c.py").write_text("from circled import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("circled", cache_dir=None)
    assert _cycles(graph, "circled") == [["circled.a", "circled.b", "circled.c"]]
