"""How the code reads, measured: the longest functions, nested definitions, the share of a module's
code lines that check inputs or handle errors, and the import graph with its cycles.

    python benchmarks/code_metrics.py            # every module under minivae/
    python benchmarks/code_metrics.py --top 20   # more of the longest functions

A *code line* is a line holding part of a statement, not counting docstrings, comments and blank
lines. A line counts as *validation* when it lies in a function whose name starts with ``validate``,
``_validate``, ``_check`` or ``require`` (not ``check_``: the gradient checker's functions are
math), in a ``raise``, in a ``try``'s ``except`` clause, in an ``if`` whose body is only a
``raise``, or in an ``if validate:`` block. It is a measure of what a reader meets, not a proof: a
check written some other way is not counted.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minivae"
CHECK_PREFIXES = ("validate", "_validate", "_check", "require")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def docstring_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def code_lines(tree: ast.AST, source: str) -> set[int]:
    """Lines that hold part of a statement, less docstrings, comments and blank lines."""
    text = source.splitlines()
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            lines.update(range(node.lineno, node.end_lineno + 1))
    skip = docstring_lines(tree)
    return {n for n in lines if n not in skip and text[n - 1].strip()
            and not text[n - 1].strip().startswith("#")}


def _span(node) -> set[int]:
    return set(range(node.lineno, node.end_lineno + 1))


def validation_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(CHECK_PREFIXES):
            lines |= _span(node)
        elif isinstance(node, ast.Raise):
            lines |= _span(node)
        elif isinstance(node, ast.Try):
            for handler in node.handlers:
                lines |= _span(handler)
        elif isinstance(node, ast.If):
            only_raise = all(isinstance(s, ast.Raise) for s in node.body)
            is_validate_flag = isinstance(node.test, ast.Name) and node.test.id == "validate"
            if only_raise or is_validate_flag:
                lines |= set(range(node.lineno, node.body[-1].end_lineno + 1))
    return lines


def functions(tree: ast.AST, module: str):
    """(module, qualified name, lines, nested) for every function; nested: defined in a function."""
    out = []

    def visit(node, prefix, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                out.append((module, name, child.end_lineno - child.lineno + 1, in_function))
                visit(child, name, True)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}.{child.name}", in_function)
            else:
                visit(child, prefix, in_function)

    visit(tree, module, False)
    return out


def imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The minivae modules ``module`` imports, at the top or inside functions (not those under
    ``if TYPE_CHECKING:``, which only annotations read and Python never runs)."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[:len(base) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("minivae"):
                continue
            # "from . import optim" imports a module, "from .vae import forward" a name
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _is_module(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("minivae"))
    found.discard(module)
    return {m for m in found if _is_module(m)}


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def measure(package: Path = PACKAGE) -> dict:
    graph, all_functions, share = {}, [], {}
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        module = module_name(path)
        graph[module] = imports(tree, module, path.name == "__init__.py")
        all_functions += functions(tree, module)
        code = code_lines(tree, source)
        if code:
            share[module] = (len(code & validation_lines(tree)), len(code))
    return {"graph": graph, "cycles": cycles(graph), "functions": all_functions, "validation": share}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="how many of the longest functions to list")
    args = parser.parse_args(argv)
    m = measure()
    print(f"{args.top} longest functions (lines, nested marked *):")
    for _, name, n, nested in sorted(m["functions"], key=lambda f: -f[2])[:args.top]:
        print(f"  {n:>4}  {name}{' *' if nested else ''}")
    nested = [module for module, _, _, is_nested in m["functions"] if is_nested]
    print(f"nested function definitions: {len(nested)}")
    for module in sorted(set(nested)):
        print(f"  {module}: {nested.count(module)}")
    print("validation share of code lines:")
    for module, (v, n) in sorted(m["validation"].items(), key=lambda kv: -kv[1][0] / kv[1][1]):
        print(f"  {module:<34} {v:>4}/{n:<4} {100 * v / n:5.1f}%")
    print("imports (minivae modules only):")
    for module, targets in sorted(m["graph"].items()):
        print(f"  {module} -> {', '.join(sorted(t.removeprefix('minivae.') for t in targets)) or '-'}")
    print(f"import cycles: {len(m['cycles'])}")
    for component in m["cycles"]:
        print(f"  {' <-> '.join(component)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
