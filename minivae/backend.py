"""The array-module switch: which array library runs the math, on which device.

Three backends run the same code:

- ``"numpy"``  -- the default, on the CPU.
- ``"cupy"``   -- CuPy on the current CUDA device (needs ``pip install minivae[gpu]`` and a GPU).
- ``"strict"`` -- array-api-strict on its emulated non-default device ``Device("device1")``. It is
  the stand-in for a GPU: it refuses to mix arrays of two devices, refuses silent conversion to
  NumPy and refuses any function outside the array API standard, so code that passes on it is
  code that will run on a real accelerator.

The core math modules (layers, distributions, vae, bounds, optim, gradcheck) never import NumPy:
they take ``xp = namespace_of(x)`` from their inputs, and functions that create arrays from nothing
take a ``backend`` argument. Moving data to and from the host happens here and nowhere else, and so
does random number generation, which is not part of the standard.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import array_api_compat

BACKENDS = ("numpy", "cupy", "strict")
DTYPES = ("float32", "float64")
AUTO = "auto"  # resolves to "cupy" where CuPy can use a CUDA device, else "numpy"


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine (e.g. CuPy without a CUDA device)."""


class BackendBroken(BackendUnavailable):
    """CuPy sees a CUDA device but cannot run on it (a CUDA library is missing, say): a broken setup."""


def _check_backend(backend: str) -> str:
    """The backend's name, with ``"auto"`` resolved; raises ValueError for an unknown name."""
    if backend == AUTO:
        return resolve(AUTO)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or {AUTO!r}, got {backend!r}")
    return backend


def cupy_status() -> tuple[bool, str]:
    """``(usable, why)``: whether CuPy can run on a CUDA device here, and a one-line reason.

    Usable means more than a device count: an elementwise kernel (compiled by NVRTC), a matrix
    product (cuBLAS) and a random draw (cuRAND) have run. ``why`` names what is missing: the
    package, the driver, a device, or the library a probe needed; or, when usable, the device and
    the CuPy version. Never raises; the probes run once per process.
    """
    try:
        _cupy()
    except BackendUnavailable as e:
        return False, str(e)
    import cupy
    return True, f"CuPy {cupy.__version__} on {cupy_device_name()}"


def cupy_device_name(device_id: int | None = None) -> str:
    """``"CUDA device 0 (NVIDIA H200)"``: the current (or given) device. CuPy gives the name as
    bytes in some versions and as str in others; both are read."""
    import cupy
    device_id = cupy.cuda.Device().id if device_id is None else device_id
    name = cupy.cuda.runtime.getDeviceProperties(device_id)["name"]
    return f"CUDA device {device_id} ({name.decode() if isinstance(name, bytes) else name})"


CUPY_NEEDED = (13, 3)  # with NumPy 2, CuPy 13.0-13.2 raise TypeError in RandomState(seed)
                       # (cupy#8392, fixed in 13.3); no older CuPy supports NumPy 2 at all


def _version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a version string: "14.0.0rc1" -> (14, 0), "13" -> (13, 0)."""
    m = re.match(r"(\d+)(?:\.(\d+))?", version)
    return (int(m[1]), int(m[2] or 0)) if m else (0, 0)


def cupy_version_problem(cupy_version: str, numpy_version: str | None = None) -> str | None:
    """Why this CuPy cannot run minivae with this NumPy (default: the one imported), in one line,
    or None when it can."""
    numpy_version = np.__version__ if numpy_version is None else numpy_version
    if _version_tuple(numpy_version)[0] < 2 or _version_tuple(cupy_version) >= CUPY_NEEDED:
        return None
    return (f"backend 'cupy': CuPy {cupy_version} is installed, and with NumPy {numpy_version} minivae "
            f"needs CuPy >= {CUPY_NEEDED[0]}.{CUPY_NEEDED[1]} (older ones fail in RandomState(seed) "
            f"under NumPy 2): `pip install -U 'cupy-cuda12x>=14'`, or use backend='numpy'")


def resolve(backend: str) -> str:
    """A backend name with ``"auto"`` replaced by ``"cupy"`` when usable, else ``"numpy"``."""
    if backend != AUTO:
        return _check_backend(backend)
    return "cupy" if cupy_status()[0] else "numpy"


_CUPY_PROBED = {}  # id(module) -> (module, None if it runs, else the BackendBroken it raised)


def _cupy():
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise BackendUnavailable(
            "backend 'cupy' needs CuPy, which is not installed: `pip install -e .[gpu]` "
            "(cupy-cuda12x with the CUDA libraries) on a machine with a CUDA GPU, or use "
            "backend='numpy' or 'strict'"
        ) from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # pragma: no cover - depends on the machine
        what = ("no usable CUDA driver" if "Driver" in str(e) or "driver" in str(e)
                else "no CUDA device can be used")
        raise BackendUnavailable(
            f"backend 'cupy': CuPy {cupy.__version__} is installed but there is {what} "
            f"({type(e).__name__}: {e}); use backend='numpy' or 'strict'"
        ) from e
    if n == 0:  # pragma: no cover
        raise BackendUnavailable("backend 'cupy': the CUDA driver sees no device; use 'numpy' or 'strict'")
    if id(cupy) not in _CUPY_PROBED:
        # the version first: the probes would blame the CUDA libraries for an old CuPy's TypeError
        too_old = cupy_version_problem(str(cupy.__version__))
        _CUPY_PROBED[id(cupy)] = (cupy, BackendBroken(too_old) if too_old else _probe_cupy(cupy))
    broken = _CUPY_PROBED[id(cupy)][1]
    if broken is not None:
        raise broken
    return cupy


def _probe_cupy(cupy) -> BackendBroken | None:
    """Run what training needs once: None if it all runs, else the BackendBroken saying what failed.
    A device count alone does not tell: CuPy's wheel without the CUDA libraries sees the device and
    then fails at the first kernel ("Failure finding libcurand.so")."""
    probes = [("an elementwise kernel (NVRTC)", lambda: float((cupy.arange(3.0) + 1).sum())),
              ("a matrix product (cuBLAS)", lambda: float((cupy.ones((4, 4)) @ cupy.ones((4, 4)))[0, 0])),
              ("a random draw (cuRAND)", lambda: float(_cupy_generator(cupy, 1).standard_normal((2,)).sum()))]
    for what, run in probes:
        try:
            run()
        except Exception as e:  # noqa: BLE001 - whatever CUDA raises, it is the reason
            return BackendBroken(
                f"backend 'cupy': CuPy {cupy.__version__} sees a CUDA device but cannot run {what} "
                f"({type(e).__name__}: {str(e)[:160]}); install the CUDA libraries with "
                f"`pip install 'cupy-cuda12x[ctk]'` (the gpu extra does), or use backend='numpy'")
    return None


_CURAND_PHILOX = 161  # CURAND_RNG_PSEUDO_PHILOX4_32_10 in curand.h (CuPy's curand module needs
                     # libcurand just to import, so the constant is written out)


def _cupy_generator(cupy, seed: int):
    """CuPy's generator on cuRAND's counter-based Philox4x32-10, whose reseeding only sets a key
    and an offset: no device memory, no kernel, no sync (XORWOW, the default, reinitialises its state)."""
    return cupy.random.RandomState(seed, method=_CURAND_PHILOX)


def _strict():
    try:
        import array_api_strict
    except ImportError as e:
        raise BackendUnavailable(
            "backend 'strict' needs array-api-strict: `pip install -e .[dev]`"
        ) from e
    return array_api_strict


def is_available(backend: str) -> bool:
    """True when ``backend`` can run here (CuPy needs a CUDA device); see ``cupy_status`` for why not."""
    try:
        namespace(backend)
    except BackendUnavailable:
        return False
    return True


def namespace(backend: str = "numpy"):
    """The array namespace ``xp`` of a backend (array-api-compat's wrapper for NumPy and CuPy)."""
    backend = _check_backend(backend)
    if backend == "numpy":
        return array_api_compat.array_namespace(np.empty(0))
    if backend == "cupy":
        return array_api_compat.array_namespace(_cupy().empty(0))
    return _strict()


def device(backend: str = "numpy"):
    """The device arrays of ``backend`` are created on (``None`` means the library's default)."""
    backend = _check_backend(backend)
    if backend == "strict":
        return _strict().Device("device1")
    if backend == "cupy":
        return _cupy().cuda.Device()
    return None


_NAMESPACE_OF_TYPE = {}


def namespace_of(*arrays):
    """The namespace ``xp`` of the given arrays; raises if they come from different libraries.

    Called by every layer, so the answer is cached per array type (array-api-compat's lookup
    costs a few microseconds, which added up to 3% of a training step).
    """
    kind = type(arrays[0])
    if all(type(a) is kind for a in arrays):
        xp = _NAMESPACE_OF_TYPE.get(kind)
        if xp is None:
            xp = _NAMESPACE_OF_TYPE[kind] = array_api_compat.array_namespace(arrays[0])
        return xp
    return array_api_compat.array_namespace(*arrays)


def backend_of(x) -> str:
    """The backend name of an array: ``"numpy"``, ``"cupy"`` or ``"strict"``."""
    if array_api_compat.is_numpy_array(x):
        return "numpy"
    if array_api_compat.is_cupy_array(x):
        return "cupy"
    if type(x).__module__.startswith("array_api_strict"):
        return "strict"
    raise TypeError(f"not an array of a known backend: {type(x).__name__}")


def dtype_of(name: str, backend: str = "numpy"):
    """The backend's dtype object for ``"float32"`` or ``"float64"``."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    return getattr(namespace(backend), name)


def dtype_name(x) -> str:
    """``"float32"``, ``"float64"`` (or another dtype's name) of an array, on any backend."""
    return str(x.dtype).rsplit(".", 1)[-1]


def from_numpy(a, backend: str = "numpy", dtype: str | None = None):
    """Copy a NumPy array (or anything ``np.asarray`` takes) onto ``backend``'s device."""
    a = np.asarray(a)
    if dtype is not None:
        a = a.astype(dtype, copy=False)
    backend = _check_backend(backend)
    if backend == "numpy":
        return a
    if backend == "cupy":
        return _cupy().asarray(a)
    return _strict().asarray(a, device=device("strict"))


def to_numpy(x) -> np.ndarray:
    """Copy an array of any backend to a NumPy array on the host (Python scalars pass through)."""
    if isinstance(x, (int, float, np.ndarray, np.generic)):
        return np.asarray(x)
    name = backend_of(x)
    if name == "cupy":
        return x.get()
    if name == "strict":
        return np.asarray(x.to_device(_strict().Device("CPU_DEVICE")))
    return np.asarray(x)


def to_backend(x, backend: str, dtype: str | None = None):
    """Move an array of any backend to ``backend`` (through the host)."""
    return from_numpy(to_numpy(x), backend, dtype)


def _key(seed) -> np.random.SeedSequence:
    return np.random.SeedSequence(list(seed) if isinstance(seed, (tuple, list)) else seed)


CUPY_BLOCK = 1 << 16  # values per cuRAND call on CuPy; every call asks for this many


class Generator:
    """Seeded random numbers on a backend's device, re-keyable, the same however they are split.

    ``seed`` may be an int or a tuple of ints such as ``(seed, epoch, step)``. ``rekey(key)``
    restarts the stream at another key without making a new device generator: training keeps one
    Generator per run and rekeys it every step by (seed, 1, epoch, step), so a resumed run draws
    exactly what an uninterrupted one would have, and a GPU step creates no generator.

    Draws of one kind and dtype form one stream: drawing n values and then m gives the values one
    draw of n + m gives, on every backend. Evaluation rests on this (its draws do not depend on
    the batch size).

    - numpy: ``numpy.random.default_rng`` of the key (a host object, cheap to make), whose streams
      split this way by themselves;
    - cupy: one ``cupy.random.RandomState`` on cuRAND's Philox4x32-10, reseeded by ``rekey`` (a
      counter-based generator: reseeding sets a key and an offset, nothing on the device). CuPy
      pads an odd-sized normal draw by one value, so its streams do not split this way; here every
      cuRAND call draws ``CUPY_BLOCK`` values and draws are served from those blocks;
    - strict: NumPy draws on the host, copied onto the emulated device (which has no generator).
    """

    def __init__(self, seed=0, backend: str = "numpy"):
        self.backend = backend = _check_backend(backend)
        self._rng = None
        self.rekey(seed)

    def rekey(self, seed) -> "Generator":
        """Restart the stream at ``seed``, as ``Generator(seed, backend)`` would. Returns self."""
        key = _key(seed)
        if self.backend == "cupy":  # the long-stable RandomState API: standard_normal, random_sample, permutation
            seed64 = int(key.generate_state(1, np.uint64)[0] >> 1)
            if self._rng is None:
                self._rng = _cupy_generator(_cupy(), seed64)
            else:
                self._rng.seed(seed64)
            self._unserved = {}  # (draw function, dtype) -> 1-D device array drawn, not yet served
        else:
            self._rng = np.random.default_rng(key)
        return self

    def _out(self, a):
        return from_numpy(a, "strict") if self.backend == "strict" else a

    def _draw(self, kind: str, shape, dtype: str):
        if self.backend == "cupy":
            return self._from_blocks(kind, shape, dtype)
        draw = self._rng.standard_normal if kind == "normal" else self._rng.random
        return self._out(draw(shape, dtype=dtype))

    def _from_blocks(self, kind: str, shape, dtype: str):
        draw = self._rng.standard_normal if kind == "normal" else self._rng.random_sample
        n = math.prod(shape)
        rest = self._unserved.pop((kind, dtype), None)
        pieces = [] if rest is None else [rest]
        have = 0 if rest is None else rest.shape[0]
        while have < n or not pieces:  # (a draw of nothing still starts from a block)
            pieces.append(draw((CUPY_BLOCK,), dtype=dtype))
            have += CUPY_BLOCK
        flat = pieces[0] if len(pieces) == 1 else _cupy().concatenate(pieces)
        self._unserved[kind, dtype] = flat[n:]
        return flat[:n].reshape(shape)

    def normal(self, shape, dtype: str = "float32"):
        """Standard normal draws of ``shape`` in ``dtype``."""
        return self._draw("normal", shape, dtype)

    def uniform(self, shape, dtype: str = "float32"):
        """Uniform draws on [0, 1)."""
        return self._draw("uniform", shape, dtype)

    def permutation(self, n: int):
        """A random permutation of ``range(n)`` as an integer array on the backend."""
        return self._out(self._rng.permutation(n))


def stream_versions(backend: str) -> dict:
    """What a backend's numbers depend on: the array library and its version, and the generator.
    A checkpoint records it; a resume under the same record continues bit-exactly."""
    backend = _check_backend(backend)
    if backend == "cupy":
        cupy = _cupy()
        try:
            cuda = str(cupy.cuda.runtime.runtimeGetVersion())
        except Exception:  # noqa: BLE001 - a record, not a check
            cuda = "unknown"
        return {"backend": "cupy", "library": f"cupy {cupy.__version__}", "cuda_runtime": cuda,
                "generator": f"cuRAND Philox4x32-10 in blocks of {CUPY_BLOCK}"}
    record = {"backend": backend, "library": f"numpy {np.__version__}",
              "generator": "numpy PCG64 (SeedSequence keys)"}
    if backend == "strict":
        record["library"] += f", array-api-strict {_strict().__version__}"
    return record


class Clock:
    """Seconds between marks of the work a backend has been given, on the device's own clock.

    On CuPy each ``mark()`` records a CUDA event in the stream (no wait), and ``intervals()`` waits
    once, for the last, then reads the times between events: the device's time, not the host's
    time to queue the work. NumPy and strict compute eagerly, so there it is ``perf_counter``.
    """

    def __init__(self, backend: str):
        self.backend = _check_backend(backend)
        self._marks = []

    def mark(self) -> None:
        if self.backend == "cupy":
            event = _cupy().cuda.Event()
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def intervals(self) -> list[float]:
        """Seconds from each mark to the next."""
        m = self._marks
        if self.backend != "cupy":
            return [b - a for a, b in zip(m, m[1:])]
        if m:
            m[-1].synchronize()
        elapsed_ms = _cupy().cuda.get_elapsed_time
        return [elapsed_ms(a, b) / 1e3 for a, b in zip(m, m[1:])]
