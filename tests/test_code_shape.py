"""The code's shape, as benchmarks/code_metrics.py measures it: no import cycles in minivae/, no
function longer than a screen (60 lines, 45 in the core), no closure in the training loop, and a core
that only computes. And the measures can fail."""

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def metrics():
    spec = importlib.util.spec_from_file_location("code_metrics", ROOT / "benchmarks" / "code_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_minivae_has_no_import_cycle(metrics):
    assert metrics.measure()["cycles"] == []


def test_no_function_in_minivae_is_longer_than_60_lines(metrics):
    long = [(name, n) for _, name, n, _ in metrics.measure()["functions"] if n > 60]
    assert long == []


def test_no_function_in_the_core_is_longer_than_45_lines(metrics):
    long = [(name, n) for module, name, n, _ in metrics.measure()["functions"]
            if module.startswith("minivae.core") and n > 45]
    assert long == []


CORE_MAY_IMPORT = {"__future__", "math", "typing", "dataclasses", "itertools"}


def core_problems(source: str) -> list[str]:
    """What a core module does besides computing: a raise, or an import of anything but the math
    libraries above, the backend and the core itself (annotation-only imports aside)."""
    tree = ast.parse(source)
    annotations_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                        and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    problems = []
    for node in ast.walk(tree):
        if id(node) in annotations_only:
            continue
        if isinstance(node, ast.Raise):
            problems.append(f"line {node.lineno}: raise")
        elif isinstance(node, ast.Import):
            problems += [f"line {node.lineno}: import {a.name}" for a in node.names
                         if a.name.split(".")[0] not in CORE_MAY_IMPORT]
        elif isinstance(node, ast.ImportFrom):
            inside = node.level == 1 or (node.level == 2 and node.module == "backend")
            if not inside and (node.level or (node.module or "").split(".")[0] not in CORE_MAY_IMPORT):
                problems.append(f"line {node.lineno}: from {'.' * node.level}{node.module} import")
    return problems


def test_the_core_only_computes():
    found = {path.name: core_problems(path.read_text()) for path in (ROOT / "minivae" / "core").glob("*.py")}
    assert {name: problems for name, problems in found.items() if problems} == {}
    assert len(found) >= 7


def test_the_core_check_finds_a_raise_a_file_and_a_progress_bar():
    assert core_problems("from .layers import sigmoid\nfrom ..backend import namespace_of\n") == []
    assert core_problems("def f(x):\n    if x < 0:\n        raise ValueError('x')\n") == ["line 3: raise"]
    assert core_problems("from ..files import write_atomic\nimport tqdm\nfrom ..memory import require\n") == [
        "line 1: from ..files import", "line 2: import tqdm", "line 3: from ..memory import"]


def test_the_training_loop_defines_no_function_inside_a_function(metrics):
    nested = [name for module, name, _, is_nested in metrics.measure()["functions"]
              if is_nested and module == "minivae.train"]
    assert nested == []


def test_the_measures_find_a_cycle_a_nested_function_and_a_validation_line(metrics):
    import ast
    assert metrics.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert metrics.cycles({"a": {"b"}, "b": set()}) == []
    source = ("def outer(x):\n    def inner():\n        return x\n    if x < 0:\n        raise ValueError('x')\n"
              "    return inner()\n")
    tree = ast.parse(source)
    assert [(name, n, nested) for _, name, n, nested in metrics.functions(tree, "m")] == [
        ("m.outer", 6, False), ("m.outer.inner", 2, True)]
    assert metrics.validation_lines(tree) == {4, 5}
