"""The checks of numbers and arrays, in one place: the configs, the optimizer's state, the command
line and the training loop all ask these, so one rule decides what a valid number is.

Each raising check says what it expected and what it got, in one line.
"""

from __future__ import annotations

import math
import numbers

from .backend import backend_of, dtype_name, namespace_of


def is_number(value, low: float | None = None, closed: bool = True, integral: bool = False) -> bool:
    """Whether ``value`` is a finite real number (an integer when ``integral``; never a bool),
    ``>= low`` (``closed``) or ``> low``."""
    kind = numbers.Integral if integral else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        return False
    return low is None or (value >= low if closed else value > low)


def integer(name: str, value, low: int = 1, expected: str | None = None) -> int:
    """``value`` as an int if it is an integer ``>= low``; else ValueError naming ``name``."""
    if not is_number(value, low, integral=True):
        raise ValueError(f"{name}: expected {expected or f'an integer >= {low}'}, got {value!r}")
    return int(value)


def real(name: str, value, expected: str, positive: bool = True) -> float:
    """``value`` as a float if it is a finite real number, > 0 (or >= 0 when not ``positive``)."""
    if not is_number(value, 0, closed=not positive):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return float(value)


def one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


# What each hyperparameter may be: (lower bound, bound included, below 1). A checkpoint's values are
# checked against this before a rule ever sees them (an lr of "abc" or a beta1 of 1 would crash it).
HYPER_RANGES = {"lr": (0, False, False), "eps": (0, False, False), "weight_decay": (0, True, False),
                "momentum": (0, True, True), "beta1": (0, True, True), "beta2": (0, True, True)}


def optimizer_config(name: str, config: dict) -> None:
    """ValueError naming the first invalid scalar of an optimizer rule's ``config`` for parameter
    ``name`` (the arrays aside), as a checkpoint holds it."""
    for key, value in config.items():
        if key == "t":  # Adam's step count
            ok = is_number(value, 0, integral=True)
        elif key in HYPER_RANGES:
            low, closed, below_one = HYPER_RANGES[key]
            ok = is_number(value, low, closed) and (value < 1 or not below_one)
        else:
            ok = False
        if not ok:
            raise ValueError(f"optimizer state {name}.{key} = {value!r} is invalid")


def all_finite(arrays) -> bool:
    """Whether every element of every array is finite, read back from the device once."""
    arrays = list(arrays)
    xp = namespace_of(*arrays)
    return bool(xp.all(xp.stack([xp.all(xp.isfinite(a)) for a in arrays])))


# --- the model's inputs: parameters, data, noise -------------------------------------------------

def is_array(name: str, a) -> None:
    """Raise ValueError unless ``a`` is an array of a backend minivae runs on."""
    try:
        backend_of(a)
    except TypeError:
        raise ValueError(f"{name}: expected an array (NumPy, CuPy or array-api-strict), got "
                         f"{type(a).__name__}; convert it with backend.from_numpy({name}, backend, "
                         f"dtype)") from None


def finite(name: str, arrays) -> None:
    """Raise ValueError unless every element of ``arrays`` is finite (one read from the device)."""
    if not all_finite(arrays):
        raise ValueError(f"{name}: contains NaN or infinite values")


def params_like(params, expected: dict) -> None:
    """Raise ValueError unless ``params`` has exactly the names and shapes of ``expected`` (a model's
    ``param_shapes``), in one float dtype and one backend, with finite values."""
    if not isinstance(params, dict):
        raise ValueError(f"params: expected a dict of arrays from init_params, got {type(params).__name__}")
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        raise ValueError(f"params do not match the config: missing {missing}, unexpected {extra}; "
                         f"were they made with init_params for this VAEConfig?")
    dtypes = set()
    for name, shape in expected.items():
        is_array(f"params[{name!r}]", params[name])
        got = tuple(params[name].shape)
        if got != shape:
            raise ValueError(f"params[{name!r}]: expected shape {shape} for this config, got {got}")
        dtypes.add(dtype_name(params[name]))
    if len(dtypes) != 1 or not dtypes <= {"float32", "float64"}:
        raise ValueError(f"params: expected every array in one float dtype (float32 or float64), "
                         f"got {sorted(dtypes)}")
    if len({backend_of(a) for a in params.values()}) != 1:
        raise ValueError("params: the arrays live on different backends; move them with "
                         "backend.to_backend(a, backend)")
    finite("params (a NaN or infinite parameter; was it saved from a diverged run?)",
                  params.values())


def validate_data(x, cfg, dtype: str | None = None, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is a finite (B, x_dim) float array, in [0, 1] when required."""
    is_array(name, x)
    shape = tuple(getattr(x, "shape", ()))
    if not hasattr(x, "shape") or len(shape) != 2 or shape[1] != cfg.x_dim or shape[0] < 1:
        raise ValueError(f"{name}: expected an array of shape (batch, {cfg.x_dim}), got "
                         f"{shape if hasattr(x, 'shape') else type(x).__name__}; flatten images "
                         f"to rows, e.g. x.reshape(len(x), -1)")
    got = dtype_name(x)
    if dtype is not None and got != dtype:
        raise ValueError(f"{name}: expected dtype {dtype} (the parameters' dtype), got {got}; "
                         f"convert it with backend.from_numpy(x, backend, dtype={dtype!r})")
    xp = namespace_of(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name}: contains NaN or infinite values; clean or impute the data first")
    if cfg.pixels_in_unit_interval:
        lo, hi = float(xp.min(x)), float(xp.max(x))
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name}: likelihood {cfg.likelihood!r} needs values in [0, 1], got "
                             f"values in [{lo:.9g}, {hi:.9g}]; scale pixels, e.g. x / 255")


def validate_eps(eps, cfg, batch: int, dtype: str) -> None:
    is_array("eps", eps)
    want = (cfg.n_samples, batch, cfg.z_dim)
    shape = tuple(getattr(eps, "shape", ()))
    if shape != want:
        raise ValueError(f"eps: expected shape (n_samples, batch, z_dim) = {want}, got {shape}")
    if dtype_name(eps) != dtype:
        raise ValueError(f"eps: expected dtype {dtype} (the parameters' dtype), got {dtype_name(eps)}")
    finite("eps", [eps])


def same_backend(params, *arrays) -> None:
    """Raise ValueError unless each ``(name, array)`` is an array on the parameters' backend."""
    want = backend_of(next(iter(params.values())))
    for name, a in arrays:
        is_array(name, a)
        if backend_of(a) != want:
            raise ValueError(f"{name} is a {backend_of(a)} array but the parameters live on "
                             f"{want!r}; move it with backend.to_backend({name}, {want!r})")


def validate_z(z, cfg, dtype: str) -> None:
    """Raise ValueError unless ``z`` is a finite ``dtype`` array of shape (N, Z) or (L, B, Z)."""
    if z.ndim not in (2, 3) or z.shape[-1] != cfg.z_dim or dtype_name(z) != dtype:
        raise ValueError(f"z: expected a {dtype} array of shape (N, {cfg.z_dim}) or (L, B, "
                         f"{cfg.z_dim}), got {dtype_name(z)} of shape {tuple(z.shape)}")
    finite("z", [z])


def importance_samples(k) -> None:
    """Raise ValueError unless ``k`` is 0 (the ELBO only) or a number of importance samples."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k: expected 0 (ELBO only) or a positive number of importance samples, got {k!r}")
