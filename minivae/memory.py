"""How much memory a command needs, estimated before anything is allocated.

A size that cannot fit (``--hidden 100000000``, ``--n-samples 1000000000``, ``sample --n ...``)
becomes one clear line that says what to make smaller, instead of a MemoryError traceback or a
machine that swaps for an hour. The estimates count the arrays the code keeps alive at once; they
are upper bounds within a small factor, which is all a refusal needs.
"""

from __future__ import annotations

import math
import os


class TooBig(ValueError):
    """A command would need more memory than this machine has available."""


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else the machine's physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _size(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def require(n_bytes: float, what: str, fix: str) -> None:
    """TooBig (a ValueError) when ``n_bytes`` exceed the memory available now."""
    have = available_bytes()
    if n_bytes > have:
        raise TooBig(f"{what} needs about {_size(n_bytes)} of memory and {_size(have)} is available; {fix}")


def itemsize(dtype) -> int:
    """Bytes per element of ``"float32"`` or ``"float64"``."""
    return 8 if "64" in str(dtype) else 4


def n_parameters(cfg) -> int:
    from .vae import param_shapes
    return sum(math.prod(s) for s in param_shapes(cfg).values())


def batch_bytes(cfg, batch: int, n_samples: int, itemsize: int) -> int:
    """The arrays of one forward and backward pass over ``batch`` examples and ``n_samples`` draws:
    the encoder's layers once per example, the decoder's once per draw, each kept for backward with
    its gradient (about three arrays per layer output)."""
    hidden = sum(cfg.hidden)
    encoder = batch * (cfg.x_dim + hidden + 2 * cfg.z_dim)
    decoder = n_samples * batch * (3 * cfg.z_dim + hidden + 3 * cfg.x_dim)
    return 3 * itemsize * (encoder + decoder)
