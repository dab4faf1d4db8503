"""Checkpoints: arrays in ``.npz`` (never pickled), everything else in JSON, replaced as one unit.

A checkpoint ``<dir>/<stem>`` is two files:

- ``<stem>.npz``: the parameters as ``param/<name>`` and the optimizer's arrays as
  ``opt/<name>/<key>`` (Adam's ``m`` and ``v``, ...), read with ``allow_pickle=False``;
- ``<stem>.json``: the model config, the optimizer's scalars, training progress and anything else
  the caller passes, the SHA-256 of the ``.npz`` (so a mismatched pair is detected) and the SHA-256
  of the JSON record itself (so an edited or damaged record is detected too).

A pair cannot be replaced by a single rename, so a save keeps the previous pair until the new one is
complete: both new files are written under fresh temporary names (created exclusively, never
through a link) and synced; the old pair is renamed to ``<stem>.prev.*``; the new pair is renamed
into place; only then is the old pair deleted. A process killed at any point leaves some JSON
whose checksum matches some ``.npz`` among the current and previous names, and ``load_checkpoint``
takes the newest such pair. Arrays are saved from the host, so a checkpoint written on one backend
loads onto any other.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .backend import from_numpy, to_numpy
from .config import VAEConfig
from .data import sha256_of
from .vae import param_shapes

FORMAT = "minivae-checkpoint"
VERSION = 2  # 2: the record's own checksum; version 1 records (no such field) still load
OPT_ARRAY_KEYS = ("velocity", "sum_sq", "m", "v")  # state arrays of the rules in optim.py
_TEMP_PREFIX = ".minivae-"
_TEMP_SUFFIX = ".tmp"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded for."""


# --- writing ---------------------------------------------------------------------------------------

def write_new_file(folder: Path, data: bytes) -> Path:
    """Write ``data`` to a new uniquely named file in ``folder`` (O_EXCL: an existing file or a
    planted link is never written through), flushed to disk. Returns its path; removed on failure."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _remove(Path(name))
        raise
    return Path(name)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by a file holding ``data`` in one rename: readers see the old or the new."""
    tmp = write_new_file(path.parent, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _paths(path: Path) -> dict[str, Path]:
    return {"npz": path.with_suffix(".npz"), "json": path.with_suffix(".json"),
            "prev.npz": path.with_suffix(".prev.npz"), "prev.json": path.with_suffix(".prev.json")}


def _record_sha256(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path, params: dict, cfg: VAEConfig, opt_state: dict | None = None,
                    meta: dict | None = None) -> Path:
    """Write ``path.npz`` and ``path.json`` (``path`` without suffix) as one unit. Returns the JSON path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"param/{k}": to_numpy(v) for k, v in params.items()}
    scalars = {}
    for name, config in (opt_state or {}).items():
        scalars[name] = {}
        for key, value in config.items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                scalars[name][key] = value
            else:
                arrays[f"opt/{name}/{key}"] = to_numpy(value)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    npz_bytes = buffer.getvalue()
    record = {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
              "dtype": str(next(iter(arrays.values())).dtype) if arrays else None,
              "optimizer_scalars": scalars, "meta": meta or {},
              "npz_sha256": hashlib.sha256(npz_bytes).hexdigest()}
    record["record_sha256"] = _record_sha256(record)
    files = _paths(path)
    for stale in path.parent.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):  # left by a killed save
        _remove(stale)
    new_npz = write_new_file(path.parent, npz_bytes)
    new_json = write_new_file(path.parent, json.dumps(record, indent=1, sort_keys=True).encode())
    if files["npz"].exists() and files["json"].exists():  # keep the current pair as the fallback
        os.replace(files["npz"], files["prev.npz"])
        os.replace(files["json"], files["prev.json"])
    os.replace(new_npz, files["npz"])
    os.replace(new_json, files["json"])
    _remove(files["prev.npz"])
    _remove(files["prev.json"])
    return files["json"]


# --- reading ---------------------------------------------------------------------------------------

def _read_record(js: Path) -> dict:
    """The JSON record of ``js``, checked for structure and for its own checksum."""
    try:
        record = json.loads(js.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{js}: not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise CheckpointError(f"{js}: not a minivae checkpoint (format {found!r})")
    kinds = {"version": int, "config": dict, "optimizer_scalars": dict, "meta": dict, "npz_sha256": str}
    for key, kind in kinds.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise CheckpointError(f"{js}: field {key!r} is missing or not a {kind.__name__}; "
                                  f"the file is corrupt")
    if record["version"] >= 2 and record.get("record_sha256") != _record_sha256(record):
        raise CheckpointError(f"{js}: the record's checksum differs: the file was edited or is corrupt")
    for name, scalars in record["optimizer_scalars"].items():
        if not isinstance(scalars, dict):
            raise CheckpointError(f"{js}: optimizer state of {name!r} is not a dict; the file is corrupt")
        for key, value in scalars.items():
            bad = (not isinstance(value, (int, float, str, bool, type(None)))
                   or (isinstance(value, float) and not math.isfinite(value))
                   or (key == "t" and (not isinstance(value, int) or isinstance(value, bool) or value < 0)))
            if bad:
                raise CheckpointError(f"{js}: optimizer state {name}.{key} = {value!r} is invalid; "
                                      f"the file is corrupt")
    return record


def _newest_pair(path: Path) -> tuple[Path, Path, dict]:
    """The newest (json, npz, record) whose checksums agree, among the current and previous names."""
    files = _paths(path)
    if not files["json"].is_file() and not files["prev.json"].is_file():
        raise CheckpointError(f"{files['json']}: no such checkpoint file (a checkpoint is a .json and "
                              f"a .npz with the same name)")
    npzs = [files[k] for k in ("npz", "prev.npz") if files[k].is_file()]
    if not npzs:
        raise CheckpointError(f"{files['npz']}: no such checkpoint file (a checkpoint is a .json and "
                              f"a .npz with the same name)")
    shas = {p: sha256_of(p) for p in npzs}
    first_error = None
    for js in (files["json"], files["prev.json"]):
        if not js.is_file():
            continue
        try:
            record = _read_record(js)
        except CheckpointError as e:
            first_error = first_error or e
            continue
        for npz, sha in shas.items():
            if sha == record["npz_sha256"]:
                return js, npz, record
        first_error = first_error or CheckpointError(
            f"{npzs[0]} does not match {js} (checksum differs): the pair was not written together, "
            f"or one of them is corrupt")
    raise first_error


def _read_arrays(npz: Path, expected: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The members of ``npz`` named in ``expected`` (name -> shape); every member must be expected,
    and each one's declared shape and dtype are checked before its data is read."""
    try:
        with zipfile.ZipFile(npz) as zf:
            names = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
            unexpected = sorted(set(names) - set(expected))
            if unexpected or len(names) != len(zf.infolist()):
                raise CheckpointError(f"{npz}: holds arrays this model has no use for "
                                      f"({unexpected[:3] or 'non-array members'}); not a checkpoint "
                                      f"of this model")
            arrays = {}
            for name, info in names.items():
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                if shape != expected[name] or dtype not in (np.float32, np.float64):
                    raise CheckpointError(f"{npz}: array {name!r} is {dtype} of shape {shape}; this "
                                          f"model needs float32 or float64 of shape {expected[name]}")
                with zf.open(info) as f:
                    arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{npz}: cannot be read ({type(e).__name__}: {e}); the file is corrupt") from None


def load_checkpoint(path, backend: str = "numpy", dtype: str | None = None,
                    expect: VAEConfig | None = None):
    """Load a checkpoint onto ``backend`` (in ``dtype``, default: as saved).

    Returns ``(params, cfg, opt_state, meta)``. Raises ``CheckpointError`` if the files are missing
    or corrupt, do not belong together, or (with ``expect``) hold another architecture. Where a save
    was interrupted, the previous complete pair is loaded.
    """
    path = Path(path)
    if path.suffix in (".json", ".npz"):
        path = path.with_suffix("")
    js, npz, record = _newest_pair(path)
    try:
        cfg = VAEConfig.from_dict(record["config"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{js}: the model config is invalid ({e}); the file is corrupt") from None
    if expect is not None and expect != cfg:
        diff = {k: (getattr(expect, k), getattr(cfg, k)) for k in expect.to_dict()
                if getattr(expect, k) != getattr(cfg, k)}
        raise CheckpointError(f"{js} holds another architecture: (expected, found) = {diff}")
    shapes = param_shapes(cfg)
    expected = {f"param/{name}": shape for name, shape in shapes.items()}
    expected.update({f"opt/{name}/{key}": shape for name, shape in shapes.items()
                     for key in OPT_ARRAY_KEYS})
    arrays = _read_arrays(npz, expected)
    params = {}
    for name, shape in shapes.items():
        a = arrays.get(f"param/{name}")
        if a is None:
            raise CheckpointError(f"{npz}: parameter {name!r} is missing, the config needs {shape}")
        params[name] = from_numpy(a, backend, dtype)
    unknown = set(record["optimizer_scalars"]) - set(shapes)
    if unknown:
        raise CheckpointError(f"{js}: optimizer state for unknown parameters {sorted(unknown)}")
    opt_state = {name: dict(scalars) for name, scalars in record["optimizer_scalars"].items()}
    for key, a in arrays.items():
        if key.startswith("opt/"):
            _, name, field = key.split("/", 2)
            opt_state.setdefault(name, {})[field] = from_numpy(a, backend, dtype)
    return params, cfg, opt_state, record["meta"]
