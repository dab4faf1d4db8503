"""What crosses between the grader and the process that runs a learner's answer: plain data only.

An answer may return anything: an array, a tuple of them, a float32 scalar, a list, a generator, an
ndarray subclass with its own ``__sub__``, a complex or an object array. ``plain`` turns it into
data the grader can judge without running any of the learner's code again: base-class NumPy arrays
of numbers (copied), Python numbers, strings, None, and tuples, lists and dicts of those. Anything
else becomes an ``Odd`` that says what it was. ``write``/``read`` carry plain data through a folder
as JSON and ``.npy`` files (``allow_pickle=False``: never pickle), both ways: the grader's inputs to
the child and the child's answers back. ``read`` trusts nothing it reads: sizes, names, kinds and
depth are checked, and anything out of line is an ``Odd`` or a ``ValueError``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import write_atomic

MAX_ARRAY_BYTES = 64 << 20   # far above any answer here (the largest is 3.2 MB)
MAX_ITEMS = 10_000           # items of one list, tuple or dict
MAX_DEPTH = 32
MAX_TEXT = 10_000            # characters of one string
MAX_JSON = 8 << 20           # bytes of one reply's JSON
NUMBER_KINDS = "biuf"        # bool, int, unsigned, float: what an answer's array may hold
_ARRAY_FILE = re.compile(r"^a\d{1,6}\.npy$")


@dataclass(frozen=True)
class Odd:
    """Something the grader cannot take as a number: ``what`` it was, in words."""
    what: str


@dataclass(frozen=True)
class ModelSpec:
    """A SmallModel to build where the answer runs (the grader sends its defining numbers)."""
    params: dict


@dataclass(frozen=True)
class ConfigSpec:
    """A VAEConfig to build where the answer runs."""
    fields: dict


def plain(value, depth: int = 0):
    """``value`` as plain data (arrays copied into base-class ndarrays); never raises."""
    try:
        return _plain(value, depth)
    except BaseException as e:  # noqa: BLE001 - an object whose attributes raise is still an answer
        return Odd(f"an object that could not be read ({type(e).__name__})")


def _plain(v, depth):
    if depth > MAX_DEPTH:
        return Odd(f"data nested more than {MAX_DEPTH} levels deep")
    t = type(v)  # type(), not isinstance: an object's __class__ can claim to be anything
    if v is None or t is bool:
        return v
    if t is int:
        return v if abs(v) < 2 ** 63 else Odd("an integer too large to be a float")
    if t is float:
        return v
    if t is str:
        return v[:MAX_TEXT]
    if t is complex:
        return Odd("a complex number")
    if issubclass(t, np.generic):
        kind = np.dtype(t).kind
        return t(v) if kind in NUMBER_KINDS else Odd(_dtype_words(np.dtype(t)))
    if issubclass(t, np.ndarray):
        if issubclass(t, np.matrix):
            return Odd("a np.matrix, not a NumPy array")
        data = np.ma.getdata(v) if issubclass(t, np.ma.MaskedArray) else v
        if data.dtype.kind not in NUMBER_KINDS:
            return Odd(_dtype_words(data.dtype))
        if data.nbytes > MAX_ARRAY_BYTES:
            return Odd(f"an array of {data.nbytes / 2**20:.0f} MB, far larger than any answer here")
        return np.array(data, subok=False, copy=True)
    if t in (tuple, list):
        if len(v) > MAX_ITEMS:
            return Odd(f"a {t.__name__} of {len(v)} items")
        return t(_plain(x, depth + 1) for x in v)
    if t is dict:
        if len(v) > MAX_ITEMS or not all(type(k) is str for k in v):
            return Odd("a dict whose keys are not all strings" if len(v) <= MAX_ITEMS else "a dict too large")
        return {k[:MAX_TEXT]: _plain(x, depth + 1) for k, x in v.items()}
    if t is ModelSpec or t is ConfigSpec or t is Odd:
        return v
    if callable(v):
        return Odd(f"a {'function' if t.__name__ in ('function', 'builtin_function_or_method') else t.__name__}")
    return Odd(f"a {t.__name__}")


def _dtype_words(dtype) -> str:
    if dtype.kind == "c":
        return "complex values"
    if dtype.kind == "O":
        return "an object array"
    return f"an array of {dtype} (not numbers)"


# --- through a folder -------------------------------------------------------------------------------

def write(value, folder: Path, name: str) -> None:
    """Write plain ``value`` as ``folder/<name>.json`` and its arrays as ``folder/a<i>.npy``."""
    arrays = [0]

    def tree(v):
        t = type(v)
        if v is None:
            return {"t": "none"}
        if t in (bool, int, float, str):
            return {"t": t.__name__, "v": v}
        if issubclass(t, np.generic):
            return {"t": "scalar", "dtype": np.dtype(t).str, "v": v.item()}
        if t is np.ndarray:
            arrays[0] += 1
            file = f"a{arrays[0]}.npy"
            np.save(folder / file, v, allow_pickle=False)
            return {"t": "array", "file": file}
        if t in (tuple, list):
            return {"t": t.__name__, "v": [tree(x) for x in v]}
        if t is dict:
            return {"t": "dict", "v": [[k, tree(x)] for k, x in v.items()]}
        if t is Odd:
            return {"t": "odd", "v": v.what}
        if t is ModelSpec:
            return {"t": "model", "v": v.params}
        if t is ConfigSpec:
            return {"t": "config", "v": v.fields}
        raise TypeError(f"not plain data: {t.__name__}")
    write_atomic(folder / f"{name}.json", json.dumps(tree(value)).encode())


def read(folder: Path, name: str):
    """The plain value ``write`` wrote; ``ValueError`` if the files are not what ``write`` makes."""
    path = folder / f"{name}.json"
    if path.is_symlink() or not path.is_file():
        raise ValueError(f"no {path.name}")
    with open(path, "rb") as f:
        data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise ValueError(f"{path.name} is larger than {MAX_JSON >> 20} MB")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path.name} is not JSON ({type(e).__name__})") from None
    return _untree(doc, folder, 0)


def _untree(d, folder, depth):
    if depth > MAX_DEPTH + 2 or not isinstance(d, dict) or not isinstance(d.get("t"), str):
        raise ValueError("not a value the grader wrote")
    t, v = d["t"], d.get("v")
    if t == "none":
        return None
    if t in ("bool", "int", "float", "str"):
        want = {"bool": bool, "int": int, "float": float, "str": str}[t]
        if type(v) is not want and not (want is float and type(v) is int):
            raise ValueError(f"a {t} that is not one")
        return float(v) if want is float else v
    if t == "scalar":
        dtype = np.dtype(d.get("dtype"))
        if dtype.kind not in NUMBER_KINDS or type(v) not in (bool, int, float):
            raise ValueError("a scalar that is not a number")
        return dtype.type(v)
    if t == "array":
        return _load_array(folder, d.get("file"))
    if t in ("tuple", "list"):
        if not isinstance(v, list) or len(v) > MAX_ITEMS:
            raise ValueError(f"a {t} that is not one")
        items = [_untree(x, folder, depth + 1) for x in v]
        return tuple(items) if t == "tuple" else items
    if t == "dict":
        if not isinstance(v, list) or len(v) > MAX_ITEMS or not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in v):
            raise ValueError("a dict that is not one")
        return {k: _untree(x, folder, depth + 1) for k, x in v}
    if t == "odd":
        return Odd(str(v)[:MAX_TEXT])
    if t == "model" and isinstance(v, dict):
        return ModelSpec(v)
    if t == "config" and isinstance(v, dict):
        return ConfigSpec(v)
    raise ValueError(f"an unknown kind {t[:40]!r}")


def _load_array(folder, file):
    if not isinstance(file, str) or not _ARRAY_FILE.match(file):
        raise ValueError("an array file with an unexpected name")
    path = folder / file
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_ARRAY_BYTES + 4096:
        raise ValueError(f"{file} is not a regular file of a plausible size")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{file} is not an array file ({type(e).__name__})") from None
    if type(a) is not np.ndarray:
        raise ValueError(f"{file} holds more than one array")
    return a if a.dtype.kind in NUMBER_KINDS else Odd(_dtype_words(a.dtype))


def finite_float(v) -> float | None:
    """``v`` as a finite float when it is a plain real number (or a 0-d/1-element array), else None."""
    if type(v) in (int, float) or isinstance(v, np.generic):
        f = float(v)
    elif type(v) is np.ndarray and v.size == 1:
        f = float(v.reshape(()))
    else:
        return None
    return f if math.isfinite(f) else None
