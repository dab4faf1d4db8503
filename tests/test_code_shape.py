"""The code's shape, as benchmarks/code_metrics.py measures it: no import cycles in minivae/, no
function longer than a screen (60 lines), no closure in the training loop. And the measures can fail."""

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
