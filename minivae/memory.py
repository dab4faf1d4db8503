"""How much memory a command needs, estimated before anything is allocated.

A size that cannot fit (``--hidden 100000000``, ``--n-samples 1000000000``, ``sample --n ...``)
becomes one clear line that says what to make smaller, instead of a MemoryError traceback or a
machine that swaps for an hour. The estimates count the arrays the code keeps alive at once; they
are upper bounds within a small factor, which is all a refusal needs. On CuPy the arrays live on the
GPU, so what they need is compared with the device's free memory, not the host's.

A MemoryError that gets through anyway (CuPy's OutOfMemoryError is one) is told what was being
done by ``doing``, so the command line can say it in one line.
"""

from __future__ import annotations

import contextlib
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


def device_free_bytes() -> int:
    """Free memory on the current CUDA device, counting the blocks CuPy's memory pool holds cached
    (free to CuPy, though the driver counts them as used)."""
    import cupy
    free, _total = cupy.cuda.Device().mem_info
    return int(free) + int(cupy.get_default_memory_pool().free_bytes())


def _size(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def require(n_bytes: float, what: str, fix: str, backend: str = "numpy") -> None:
    """TooBig (a ValueError) when ``n_bytes`` exceed the memory available now: the host's, or on
    ``backend="cupy"`` the current CUDA device's."""
    if backend == "cupy":
        from .backend import cupy_device_name
        have, where = device_free_bytes(), f"is free on {cupy_device_name()}"
    else:
        have, where = available_bytes(), "is available"
    if n_bytes > have:
        raise TooBig(f"{what} needs about {_size(n_bytes)} of memory and {_size(have)} {where}; {fix}")


def require_on(backend: str, host_bytes: float, device_bytes: float, what: str, fix: str) -> None:
    """``require`` for work whose ``device_bytes`` live on ``backend``'s device and ``host_bytes``
    in host memory: on CuPy each is checked against its own memory, elsewhere their sum."""
    if backend == "cupy":
        require(host_bytes, f"{what} (in host memory)", fix)
        require(device_bytes, what, fix, backend="cupy")
    else:
        require(host_bytes + device_bytes, what, fix)


@contextlib.contextmanager
def doing(what: str):
    """Name what the block does on a MemoryError raised inside it (the innermost name wins): the
    error gets ``minivae_doing``, which ``python -m minivae`` prints."""
    try:
        yield
    except MemoryError as e:
        if not getattr(e, "minivae_doing", None):
            e.minivae_doing = what
        raise


def itemsize(dtype) -> int:
    """Bytes per element of ``"float32"`` or ``"float64"``."""
    return 8 if "64" in str(dtype) else 4


def batch_bytes(cfg, batch: int, n_samples: int, itemsize: int) -> int:
    """The arrays of one forward and backward pass over ``batch`` examples and ``n_samples`` draws:
    the encoder's layers once per example, the decoder's once per draw, each kept for backward with
    its gradient (about three arrays per layer output)."""
    hidden = sum(cfg.hidden)
    encoder = batch * (cfg.x_dim + hidden + 2 * cfg.z_dim)
    decoder = n_samples * batch * (3 * cfg.z_dim + hidden + 3 * cfg.x_dim)
    return 3 * itemsize * (encoder + decoder)
