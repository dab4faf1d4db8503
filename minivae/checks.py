"""The checks of numbers and arrays, in one place: the configs, the optimizer's state, the command
line and the training loop all ask these, so one rule decides what a valid number is.

Each raising check says what it expected and what it got, in one line.
"""

from __future__ import annotations

import math
import numbers

from .backend import namespace_of


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
