"""Checkpoints: arrays in ``.npz`` (never pickled), everything else in JSON, both written atomically.

A checkpoint ``<dir>/<stem>`` is two files:

- ``<stem>.npz``: the parameters as ``param/<name>`` and the optimizer's arrays as
  ``opt/<name>/<key>`` (Adam's ``m`` and ``v``, ...), loaded with ``allow_pickle=False``;
- ``<stem>.json``: the model config, the optimizer's scalars, training progress and anything else
  the caller passes, plus the SHA-256 of the ``.npz`` so a mismatched pair is detected.

Each file is written to a temporary name and moved into place with ``os.replace``, the ``.npz``
first, so an interruption leaves the previous checkpoint readable. Arrays are saved from the host,
so a checkpoint written on one backend loads onto any other.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .backend import from_numpy, to_numpy
from .config import VAEConfig
from .vae import param_shapes

FORMAT = "minivae-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded for."""


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path, params: dict, cfg: VAEConfig, opt_state: dict | None = None,
                    meta: dict | None = None) -> Path:
    """Write ``path.npz`` and ``path.json`` (``path`` without suffix). Returns the JSON path."""
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
    npz = path.with_suffix(".npz")
    _atomic_write(npz, lambda f: np.savez(f, **arrays))
    record = {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
              "dtype": str(next(iter(arrays.values())).dtype) if arrays else None,
              "optimizer_scalars": scalars, "meta": meta or {},
              "npz_sha256": _sha256(npz)}
    js = path.with_suffix(".json")
    _atomic_write(js, lambda f: f.write(json.dumps(record, indent=1, sort_keys=True).encode()))
    return js


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_checkpoint(path, backend: str = "numpy", dtype: str | None = None,
                    expect: VAEConfig | None = None):
    """Load a checkpoint onto ``backend`` (in ``dtype``, default: as saved).

    Returns ``(params, cfg, opt_state, meta)``. Raises ``CheckpointError`` if the files are missing
    or corrupt, do not belong together, or (with ``expect``) hold another architecture.
    """
    path = Path(path)
    if path.suffix in (".json", ".npz"):
        path = path.with_suffix("")
    js, npz = path.with_suffix(".json"), path.with_suffix(".npz")
    for p in (js, npz):
        if not p.is_file():
            raise CheckpointError(f"{p}: no such checkpoint file (a checkpoint is a .json and a .npz "
                                  f"with the same name)")
    try:
        record = json.loads(js.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{js}: not valid JSON ({e}); the file is corrupt") from None
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{js}: not a minivae checkpoint (format {record.get('format')!r})")
    if record.get("npz_sha256") != _sha256(npz):
        raise CheckpointError(f"{npz} does not match {js} (checksum differs): the pair was not "
                              f"written together, or one of them is corrupt")
    cfg = VAEConfig.from_dict(record["config"])
    if expect is not None and expect != cfg:
        diff = {k: (getattr(expect, k), getattr(cfg, k)) for k in expect.to_dict()
                if getattr(expect, k) != getattr(cfg, k)}
        raise CheckpointError(f"{js} holds another architecture: (expected, found) = {diff}")
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{npz}: cannot be read ({e})") from None
    params = {}
    for name, shape in param_shapes(cfg).items():
        a = arrays.get(f"param/{name}")
        if a is None or a.shape != shape:
            raise CheckpointError(f"{npz}: parameter {name!r} is "
                                  f"{'missing' if a is None else f'of shape {a.shape}'}, the config "
                                  f"needs {shape}")
        params[name] = from_numpy(a, backend, dtype)
    opt_state = {name: dict(scalars) for name, scalars in record["optimizer_scalars"].items()}
    for key, a in arrays.items():
        if key.startswith("opt/"):
            _, name, field = key.split("/", 2)
            opt_state.setdefault(name, {})[field] = from_numpy(a, backend, dtype)
    return params, cfg, opt_state, record["meta"]
