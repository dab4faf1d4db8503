"""Checkpoints: one safetensors file per save, made current by one rename.

``checkpoint.safetensors`` holds 8 bytes (the header's length), a JSON header (every array's dtype,
shape and byte range, and a map of strings where minivae keeps its record: model config, optimizer
scalars, training progress, run id, and a SHA-256 over the record and the arrays), then the arrays'
raw bytes: ``param/<name>`` and the optimizer's ``opt/<name>/<key>`` (Adam's ``m`` and ``v``).

- No pickle: loading a pickle can run code; loading this file only reads numbers.
- The header is checked against the model (names, shapes, dtypes, total size) before any array
  byte is read, so a damaged or hostile file costs no memory.
- One file, one rename: a save writes a fresh temporary file, flushes it, and renames it over the
  old one, so a reader (even during a save) sees the old checkpoint or the new one, never a mix.

The ``keep - 1`` saves before the current one stay as ``checkpoint-1.safetensors``, ... Loading
takes the newest whole file (with a warning if that is an older one) and refuses a checkpoint of
another architecture or another run. Arrays are saved from the host: any backend loads them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

from .backend import from_numpy, to_numpy
from .checks import optimizer_config
from .config import MAX_KEEP, VAEConfig
from .files import TRAINER_TEMP, named_error, remove, replace, require_regular, write_new_file
from .core.model import param_shapes

FORMAT = "minivae-checkpoint"
VERSION = "3"  # 3: safetensors; versions 1-2 were an .npz + .json pair, no longer read
SUFFIX = ".safetensors"
OPT_ARRAY_KEYS = ("velocity", "sum_sq", "m", "v")  # state arrays of the rules in optim.py
MAX_HEADER = 1 << 20  # bytes; a real header is a few kB
_DTYPES = {"F32": np.float32, "F64": np.float64}


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, or does not belong to the model or run it is loaded for."""


# --- the file's content ----------------------------------------------------------------------------

def _digest(record_json: str, arrays: dict) -> str:
    """SHA-256 over the record and every array's name, dtype, shape and bytes."""
    h = hashlib.sha256(record_json.encode())
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name} {a.dtype.str} {a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _contiguous(a) -> np.ndarray:
    a = to_numpy(a)
    return a if a.flags["C_CONTIGUOUS"] else a.copy(order="C")  # (np.ascontiguousarray makes 0-d 1-d)


def encode(params: dict, cfg: VAEConfig, opt_state: dict | None = None, meta: dict | None = None) -> bytes:
    """The bytes of a checkpoint of ``params``, ``opt_state`` (``optim.step``'s state dict) and ``meta``."""
    from safetensors.numpy import save

    arrays = {f"param/{k}": _contiguous(v) for k, v in params.items()}
    scalars = {}
    for name, config in (opt_state or {}).items():
        scalars[name] = {}
        for key, value in config.items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                scalars[name][key] = value
            else:
                arrays[f"opt/{name}/{key}"] = _contiguous(value)
    record = json.dumps({"config": cfg.to_dict(), "optimizer_scalars": scalars, "meta": meta or {}},
                        sort_keys=True)
    return save(arrays, metadata={"format": FORMAT, "version": VERSION, "record": record,
                                  "sha256": _digest(record, arrays)})


def checkpoint_files(path) -> list[Path]:
    """The checkpoint files of ``path`` (a run folder, or its ``checkpoint`` stem), newest first."""
    stem = _stem(path)
    older = []
    for p in stem.parent.glob(f"{stem.name}-*{SUFFIX}"):
        n = p.name[len(stem.name) + 1:-len(SUFFIX)]
        if n.isdigit():
            older.append((int(n), p))
    return [stem.with_name(stem.name + SUFFIX)] + [p for _, p in sorted(older)]


def _stem(path) -> Path:
    """``run/checkpoint`` for a run folder; a stem as it is."""
    path = Path(path)
    return path / "checkpoint" if path.is_dir() else path


def save_checkpoint(path, params: dict, cfg: VAEConfig, opt_state: dict | None = None,
                    meta: dict | None = None, keep: int = 2) -> Path:
    """Save ``<path>.safetensors`` (``path`` a stem such as ``run/checkpoint``, or a run folder),
    keeping the ``keep - 1`` previous saves as ``<path>-1.safetensors``, ... Returns the file's path.

    The new file is complete and on disk before any rename; then the older files move back by one
    rename each and the new one takes the current name. A process killed at any moment leaves
    whole files only, the newest of which ``load_checkpoint`` takes."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep: expected an integer >= 1 (checkpoints kept), got {keep!r}")
    if keep > MAX_KEEP:
        raise ValueError(f"keep: at most {MAX_KEEP} checkpoints are kept (each is a whole copy of the "
                         f"model), got {keep:,}")
    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    names = [stem.with_name(stem.name + SUFFIX)] + [stem.with_name(f"{stem.name}-{i}{SUFFIX}")
                                                    for i in range(1, keep)]
    for name in names:  # a device or FIFO among them would be renamed over: refuse before writing
        require_regular(name)
    try:
        tmp = write_new_file(stem.parent, encode(params, cfg, opt_state, meta), prefix=TRAINER_TEMP)
    except OSError as e:
        raise named_error(e, names[0]) from None
    try:
        for newer, older in reversed(list(zip(names, names[1:]))):
            if newer.exists():
                replace(newer, older)
        replace(tmp, names[0])
    except BaseException:
        remove(tmp)
        raise
    for extra in checkpoint_files(stem)[keep:]:  # a run resumed with a smaller --keep
        remove(extra)
    return names[0]


# --- reading ---------------------------------------------------------------------------------------

def _read(file: Path, expect: VAEConfig | None) -> tuple[VAEConfig, dict, dict, dict]:
    """(cfg, arrays, optimizer scalars, meta) of one file; CheckpointError if it is not whole.
    Everything the header says is checked before the arrays' bytes are read."""
    from safetensors.numpy import load

    require_regular(file, missing_ok=False)  # a FIFO would block the open below
    with open(file, "rb") as f:  # one open file: a concurrent save renames files, never rewrites one
        size = os.fstat(f.fileno()).st_size
        header, meta, header_bytes = _read_header(f, size)
        cfg, scalars, run_meta = _read_record(meta, expect)
        shapes = _check_array_entries(header, cfg, scalars, size, header_bytes)
        f.seek(0)
        data = f.read()
    try:
        arrays = load(data)  # safetensors' own checks: offsets, overlaps
    except Exception as e:
        raise CheckpointError(f"cannot be decoded ({type(e).__name__}: {e})") from None
    if meta.get("sha256") != _digest(meta["record"], arrays):
        raise CheckpointError("has a checksum that differs: the file is damaged (the checksum detects "
                              "damage, not deliberate edits: it is no signature)")
    missing = [name for name in shapes if f"param/{name}" not in arrays]
    if missing:
        raise CheckpointError(f"lacks the parameters {missing[:3]}")
    return cfg, arrays, scalars, run_meta


def _read_header(f, size: int) -> tuple[dict, dict, int]:
    """The safetensors header of the open file ``f`` (``size`` bytes): its array entries, minivae's
    record (``__metadata__``), and the bytes before the arrays."""
    head = f.read(8)
    n = int.from_bytes(head, "little")
    if len(head) < 8 or 8 + n > min(size, 8 + MAX_HEADER):
        raise CheckpointError(f"is no whole safetensors file ({size} bytes, header of {n})")
    try:
        header = json.loads(f.read(n))
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, too deep, 4300+ digits
        raise CheckpointError(f"has a header that is not valid JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise CheckpointError("has a header that is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError("is no minivae checkpoint (no minivae record in its header)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"has format version {meta.get('version')!r}; this minivae reads {VERSION!r}")
    return header, meta, 8 + n


def _read_record(meta: dict, expect: VAEConfig | None) -> tuple[VAEConfig, dict, dict]:
    """The model config, optimizer scalars and run meta in the header's record, each checked."""
    try:
        record = json.loads(meta["record"])
        cfg = VAEConfig.from_dict(record["config"])
        scalars, run_meta = record["optimizer_scalars"], record["meta"]
        if not (isinstance(scalars, dict) and isinstance(run_meta, dict)
                and all(isinstance(c, dict) for c in scalars.values())):
            raise TypeError("its optimizer state or meta is not a map")
        for name, config in scalars.items():
            optimizer_config(name, config)
    except Exception as e:  # whatever json, the config or a check make of a damaged record
        raise CheckpointError(f"its record is damaged ({type(e).__name__}: {str(e)[:120]})") from None
    if expect is not None and expect != cfg:
        diff = {k: (getattr(expect, k), getattr(cfg, k)) for k in expect.to_dict()
                if getattr(expect, k) != getattr(cfg, k)}
        raise CheckpointError(f"holds another architecture: (expected, found) = {diff}")
    return cfg, scalars, run_meta


def _check_array_entries(header: dict, cfg: VAEConfig, scalars: dict, size: int, header_bytes: int) -> dict:
    """The header's arrays against the model's: names, dtypes, shapes, and with the header's
    ``header_bytes`` the file's ``size``. Returns the model's parameter shapes."""
    shapes = param_shapes(cfg)
    expected = {f"param/{name}": shape for name, shape in shapes.items()}
    expected.update({f"opt/{name}/{key}": shape for name, shape in shapes.items() for key in OPT_ARRAY_KEYS})
    unknown = sorted(set(header) - set(expected)) or sorted(set(scalars) - set(shapes))
    if unknown:
        raise CheckpointError(f"holds arrays or state this model has no use for ({unknown[:3]})")
    n_bytes = 0
    for name, info in header.items():
        if not (isinstance(info, dict) and info.get("dtype") in _DTYPES
                and info.get("shape") == list(expected[name])):
            raise CheckpointError(f"has array {name!r} as {info}; this model needs float32 or "
                                  f"float64 of shape {expected[name]}")
        n_bytes += math.prod(expected[name]) * np.dtype(_DTYPES[info["dtype"]]).itemsize
    if size != header_bytes + n_bytes:
        raise CheckpointError(f"is {size} bytes; its header describes {header_bytes + n_bytes}")
    return shapes


LOOKS = 5  # times load_checkpoint looks again while a save moves the files (0.5 s in all)


def load_checkpoint(path, backend: str = "numpy", dtype: str | None = None,
                    expect: VAEConfig | None = None, run_id: str | None = None):
    """Load the newest whole checkpoint of ``path`` (a run folder or its ``checkpoint`` stem), or
    the ``.safetensors`` file ``path``, onto ``backend`` (in ``dtype``, default: as saved).

    Returns ``(params, cfg, opt_state, meta)``. A damaged newest file is passed over for the one
    before it, with a warning that names both. With ``expect`` every file must hold that
    architecture, and with ``run_id`` it must have been written by that run (a checkpoint copied
    from another run is refused, never silently continued). Raises ``CheckpointError`` when no file
    qualifies.
    """
    one_file = str(path).endswith(SUFFIX)  # that file exactly; a folder or stem: the newest good one
    for attempt in range(LOOKS):
        files = [Path(path)] if one_file else checkpoint_files(path)
        problems = {}  # file -> what is wrong with it (None: missing)
        for file in files:
            try:
                cfg, arrays, scalars, meta = _read(file, expect)
                if run_id is not None and meta.get("run_id") != run_id:
                    raise CheckpointError(f"was written by another run (run id {meta.get('run_id')!r}, "
                                          f"this run is {run_id!r})")
            except FileNotFoundError:
                problems[file] = None
                continue
            except (CheckpointError, OSError) as e:
                problems[file] = str(e)
                continue
            damaged = [f"{p} {why}" for p, why in problems.items() if why]
            if damaged:
                warnings.warn("; ".join(damaged) + f"; loaded {file.name} instead", stacklevel=2)
            return _to_backend(cfg, arrays, scalars, meta, backend, dtype)
        # every file failed; if a listed one went missing, a save moved the files while they were
        # being read: look again (a save takes milliseconds). Also when only the newest name was
        # listed: a directory listing made while files are renamed can miss the renamed ones.
        if one_file or None not in problems.values():
            break
        time.sleep(0.05 * (attempt + 1))
    if any(problems.values()):
        raise CheckpointError("no usable checkpoint: " + "; ".join(f"{p} {why}" for p, why in problems.items()))
    stem = _stem(path)
    if stem.with_suffix(".json").is_file() or stem.with_suffix(".npz").is_file():
        raise CheckpointError(f"{stem}.npz/.json: a checkpoint in the old two-file format, which this "
                              f"version of minivae no longer reads (two files cannot be replaced "
                              f"atomically); train the run again")
    raise CheckpointError(f"{files[0]}: no such checkpoint (nothing was saved yet?)")


def _to_backend(cfg, arrays, scalars, meta, backend, dtype):
    params = {name: from_numpy(arrays[f"param/{name}"], backend, dtype) for name in param_shapes(cfg)}
    opt_state = {name: dict(values) for name, values in scalars.items()}
    for key, a in arrays.items():
        if key.startswith("opt/"):
            _, name, field = key.split("/", 2)
            opt_state.setdefault(name, {})[field] = from_numpy(a, backend, dtype)
    return params, cfg, opt_state, meta
