"""Data sets: an IDX reader, verified downloads with a cache, binarization, bundled and toy data.

Everything here is host-side NumPy; training moves batches onto its backend.

IDX data sets (``mnist``, ``fashion-mnist``) are looked for, in order, in

1. ``data_dir`` (the CLI's ``--data-dir``) or else the ``MINIVAE_DATA`` environment variable,
2. the user cache, ``$XDG_CACHE_HOME/minivae/<name>`` (default ``~/.cache/minivae/<name>``),
3. the system locations where packages install them (Debian's ``dataset-fashion-mnist`` puts
   Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``),
4. and finally downloaded from the data set's public mirrors into the cache: each file is written to
   ``<file>.part``, its SHA-256 checked against the published archive's, and only then renamed.

Files found locally are checked by structure (magic number, dimensions, exact length, labels
matching images), since a packaged copy may be recompressed; downloads are checked by checksum too.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import re
import socket
import struct
import sys
import threading
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import NotARegularFile, new_file, replace, require_regular


class DataError(ValueError):
    """A data file is missing, corrupt or truncated, or a download failed its checksum."""


# --- the IDX format ---------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


MAX_IDX_BYTES = 1 << 31  # 2 GiB: 45x the largest IDX file minivae knows (MNIST's 47 MB of images)
MAX_IDX_DIMS = 16


def read_idx(path, max_bytes: int = MAX_IDX_BYTES, shape: tuple | None = None) -> np.ndarray:
    """Read an IDX file (gzipped when its name ends in .gz) into an array, checking it whole.

    The header is two zero bytes, a type code, the number of dimensions, then each dimension as a
    big-endian uint32; the payload must hold exactly the product of the dimensions. The header is
    read first and then exactly the payload it declares (at most ``max_bytes``), so a file that
    decompresses to far more than it declares (a gzip bomb) costs no more memory than an honest one.
    With ``shape``, the declared dimensions must be exactly that, checked before any data is read.
    Anything wrong raises ``DataError`` naming the file and the problem.
    """
    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        require_regular(path)  # a FIFO would block the open (a missing file: the open says so)
    except NotARegularFile as e:
        raise DataError(str(e)) from None
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            dims, dtype, expected = _read_idx_header(f, path, shape, max_bytes)
            payload = _read_idx_payload(f, path, dims, expected)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot be read as {'gzip' if gz else 'a file'} ({e}); the file is "
                        f"corrupt or truncated: delete it and fetch it again") from None
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _read_idx_header(f, path: Path, shape: tuple | None, max_bytes: int) -> tuple[tuple, np.dtype, int]:
    """An IDX header's dimensions, dtype and payload bytes, read from the open file ``f`` and checked:
    the magic number, the dimension count, the expected ``shape`` if given, and the size against
    ``max_bytes``."""
    head = f.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: only {len(head)} bytes, too short for an IDX header (truncated?)")
    zero, code, ndim = struct.unpack(">HBB", head)
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: wrong magic number {head.hex()} (expected 0000 then a type "
                        f"code in {[hex(c) for c in _IDX_DTYPES]} and a dimension count): not an "
                        f"IDX file")
    if ndim > MAX_IDX_DIMS:
        raise DataError(f"{path}: header announces {ndim} dimensions (at most {MAX_IDX_DIMS} "
                        f"accepted): not a data set of images or labels")
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: header announces {ndim} dimensions but the file ends after "
                        f"{4 + len(raw_dims)} bytes (truncated)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    if shape is not None and dims != tuple(shape):
        raise DataError(f"{path}: declares dimensions {dims}, this data set's file has {tuple(shape)}; "
                        f"not the expected file: delete it and fetch it again")
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # a Python int: no overflow
    # a zero dimension makes the file empty, but NumPy still refuses a shape whose other
    # dimensions multiply past its index range: bound them too
    if max(expected, math.prod(max(d, 1) for d in dims) * dtype.itemsize) > max_bytes:
        raise DataError(f"{path}: dimensions {dims} declare {expected:,} bytes of data, more than "
                        f"the {max_bytes:,} read_idx accepts (max_bytes); not a usable data file")
    return dims, dtype, expected


def _read_idx_payload(f, path: Path, dims: tuple, expected: int) -> bytes:
    """Exactly the ``expected`` bytes the header declared, and not one more (a bomb stops here)."""
    payload = f.read(expected)
    if len(payload) != expected:
        raise DataError(f"{path}: dimensions {dims} need {expected} bytes of data, found "
                        f"{len(payload)}: the file is truncated; delete it and fetch it again")
    if f.read(1):
        raise DataError(f"{path}: dimensions {dims} need {expected} bytes of data, found more: "
                        f"the file has trailing bytes; delete it and fetch it again")
    return payload


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when the name ends in .gz); used by tests and tools."""
    codes = {np.dtype(v).newbyteorder(">").str if np.dtype(v).itemsize > 1 else np.dtype(v).str: k
             for k, v in _IDX_DTYPES.items()}
    a = np.asarray(array)
    key = a.dtype.newbyteorder(">").str if a.dtype.itemsize > 1 else a.dtype.str
    if key not in codes:
        raise ValueError(f"write_idx: unsupported dtype {a.dtype}")
    payload = struct.pack(">HBB", 0, codes[key], a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    payload += a.astype(a.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


# --- IDX data sets: where they are, and how to get them ----------------------------------------------

@dataclass(frozen=True)
class IdxSource:
    """An IDX data set: its four files with their archives' SHA-256, mirrors and system folders."""
    name: str
    files: dict           # role -> (file name, sha256 of the published .gz)
    mirrors: tuple        # base URLs, tried in order
    system_dirs: tuple = ()
    n_train: int = 60000
    n_test: int = 10000
    image_shape: tuple = (28, 28)
    class_names: tuple | None = None
    max_bytes: int = 32 << 20  # no file of the data set is larger: a download stops past it


IDX_SOURCES = {
    "mnist": IdxSource(
        "mnist",
        {"train_images": ("train-images-idx3-ubyte.gz",
                          "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
         "train_labels": ("train-labels-idx1-ubyte.gz",
                          "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
         "test_images": ("t10k-images-idx3-ubyte.gz",
                         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
         "test_labels": ("t10k-labels-idx1-ubyte.gz",
                         "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")},
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        ("/usr/share/datasets/mnist",),
        max_bytes=16 << 20,  # the largest file, train-images, is 9.9 MB
    ),
    "fashion-mnist": IdxSource(
        "fashion-mnist",
        {"train_images": ("train-images-idx3-ubyte.gz",
                          "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc"),
         "train_labels": ("train-labels-idx1-ubyte.gz",
                          "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc"),
         "test_images": ("t10k-images-idx3-ubyte.gz",
                         "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229"),
         "test_labels": ("t10k-labels-idx1-ubyte.gz",
                         "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf")},
        # https first (the authors' repository); the SHA-256 check guards either
        ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
         "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
        ("/usr/share/datasets/fashion-mnist",),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
        max_bytes=32 << 20,  # the largest file, train-images, is 26.4 MB
    ),
}


def cache_dir(name: str) -> Path:
    """The user cache folder of a data set: ``$XDG_CACHE_HOME/minivae/<name>``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minivae" / name


def _candidate_dirs(source: IdxSource, data_dir=None) -> list[Path]:
    first = data_dir or os.environ.get("MINIVAE_DATA")
    dirs = []
    if first:
        dirs += [Path(first) / source.name, Path(first)]
    dirs.append(cache_dir(source.name))
    dirs += [Path(d) for d in source.system_dirs]
    return dirs


def _find_file(directory: Path, gz_name: str) -> Path | None:
    for candidate in (directory / gz_name, directory / gz_name[:-3]):  # gzipped or raw
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, data_dir=None) -> dict | None:
    """Paths of a data set's four files in the first folder that holds all four, else ``None``."""
    source = _source(name)
    for directory in _candidate_dirs(source, data_dir):
        paths = {role: _find_file(directory, f) for role, (f, _) in source.files.items()}
        if all(paths.values()):
            return paths
    return None


def _source(name: str) -> IdxSource:
    if name not in IDX_SOURCES:
        raise ValueError(f"data set {name!r} is not an IDX data set; expected one of {sorted(IDX_SOURCES)}")
    return IDX_SOURCES[name]


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


DOWNLOAD_DEADLINE = 600.0  # seconds for one file, start to end, however the server trickles


class _Deadline:
    """Ends one download's whole exchange (status line, headers, redirects, body) when ``seconds``
    have passed, wherever it waits: a timer shuts down every connection the download opened. A
    per-read ``timeout`` alone never fires against a server that sends one byte at a time."""

    def __init__(self, seconds: float):
        self.seconds, self.expired, self._sockets = seconds, False, []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._lock = threading.Lock()

    def _expire(self):
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def track(self, sock):
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                sock.shutdown(socket.SHUT_RDWR)

    def opener(self):
        """A urllib opener whose connections (redirects too) are tracked by this deadline."""
        deadline = self

        def tracked(base):
            class Connection(base):
                def connect(self):
                    super().connect()
                    deadline.track(self.sock)
            return Connection

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(tracked(http.client.HTTPConnection), req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(tracked(http.client.HTTPSConnection), req, context=self._context)

        return urllib.request.build_opener(HTTP, HTTPS)

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()


def _remove_stale_parts(folder: Path, name: str) -> None:
    """Remove ``name``'s partial downloads whose process is gone (a download killed with -9)."""
    from .files import _alive
    for part in folder.glob(f"{name}.*.part"):
        pid = re.match(rf"{re.escape(name)}\.(\d+)\.", part.name)
        if pid is None or not _alive(int(pid[1])):
            part.unlink(missing_ok=True)


def download(url: str, dest, sha256: str, progress: bool = True, timeout: float = 30.0,
             max_bytes: int | None = None, deadline: float = DOWNLOAD_DEADLINE) -> Path:
    """Download ``url`` to ``dest`` through a fresh ``.part`` file, renamed only after the SHA-256 matches.

    ``timeout`` bounds each network wait, ``deadline`` the whole exchange, ``max_bytes`` its size.
    Any failure (network, protocol, size, time, checksum, a destination that cannot be written)
    deletes the partial file and raises ``DataError`` saying what went wrong.
    """
    dest = Path(dest)
    _prepare_destination(url, dest)
    part, clock = None, None
    try:
        with _Deadline(deadline) as clock, clock.opener().open(url, timeout=timeout) as response:
            total = _announced_length(response, url, max_bytes)
            fd, part = new_file(dest.parent, f"{dest.name}.{os.getpid()}.", ".part")
            digest, n = _copy_response(response, fd, url, dest.name, total, max_bytes, progress)
            if clock.expired:
                raise OSError("deadline")
            if total is not None and n != total:
                raise DataError(f"{url}: the connection closed after {n:,} of {total:,} bytes")
        if digest != sha256:
            raise DataError(f"{url}: checksum mismatch (sha256 {digest}, expected {sha256}); "
                            f"the download is corrupt or the mirror changed the file; nothing was kept")
        replace(Path(part), dest)
        return dest
    except DataError:
        _discard(part)
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        _discard(part)
        if clock is not None and clock.expired:
            raise DataError(f"{url}: not complete after {deadline:g} s; the server is too slow") from None
        raise DataError(f"could not download {url}: {type(e).__name__}: {getattr(e, 'reason', e)}") from None
    except BaseException:
        _discard(part)
        raise


def _prepare_destination(url: str, dest: Path) -> None:
    """DataError unless ``dest`` can be a downloaded file: not a folder, not a device or FIFO, in a
    folder that exists (made here); a dead download's ``.part`` files there are removed."""
    if dest.is_dir():
        raise DataError(f"cannot download {url} to {dest}: that is a folder; remove it or choose "
                        f"another data folder")
    try:
        require_regular(dest)
    except NotARegularFile as e:
        raise DataError(f"cannot download {url}: {e}") from None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot download {url} into {dest.parent}: {e}") from None
    _remove_stale_parts(dest.parent, dest.name)


def _announced_length(response, url: str, max_bytes: int | None) -> int | None:
    """The server's Content-Length, or None; DataError when it is negative or over ``max_bytes``."""
    length = response.headers.get("Content-Length")
    total = int(length) if length else None
    if total is not None and (total < 0 or (max_bytes and total > max_bytes)):
        raise DataError(f"{url}: the server announces {total:,} bytes; no file of this data set "
                        f"has more than {max_bytes:,}: not the expected file")
    return total


def _copy_response(response, fd: int, url: str, name: str, total, max_bytes, progress) -> tuple[str, int]:
    """Copy the body into the open file ``fd`` (closed here), at most ``max_bytes``; returns its
    SHA-256 and its length."""
    h, n = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as out, _progress_bar(total, name, progress) as bar:
        while chunk := response.read1(1 << 16):
            n += len(chunk)
            if max_bytes and n > max_bytes:
                raise DataError(f"{url}: more than {max_bytes:,} bytes, larger than any file of "
                                f"this data set: not the expected file")
            out.write(chunk)
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest(), n


def _discard(part) -> None:
    if part is not None:
        Path(part).unlink(missing_ok=True)


def _progress_bar(total, desc, enabled):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled,
                file=sys.stderr, leave=False)


def fetch(name: str, data_dir=None, progress: bool = True, mirrors=None) -> dict:
    """Make sure a data set's files are on disk; return their paths (downloading when needed)."""
    source = _source(name)
    found = locate(name, data_dir)
    if found:
        return found
    target = cache_dir(name) if not (data_dir or os.environ.get("MINIVAE_DATA")) else \
        Path(data_dir or os.environ["MINIVAE_DATA"]) / name
    paths, errors = {}, []
    for role, (filename, sha) in source.files.items():
        existing = _find_file(target, filename)
        if existing:
            paths[role] = existing
            continue
        for base in mirrors or source.mirrors:
            try:
                paths[role] = download(base + filename, target / filename, sha, progress,
                                       max_bytes=source.max_bytes)
                break
            except DataError as e:
                errors.append(str(e))
        else:
            looked = ", ".join(str(d) for d in _candidate_dirs(source, data_dir))
            raise DataError(
                f"data set {name!r}: {filename} is not on this machine and could not be downloaded "
                f"({'; '.join(errors)}). Looked in: {looked}. With no network, copy the four files "
                f"{[f for f, _ in source.files.values()]} into a folder and pass --data-dir (or set "
                f"MINIVAE_DATA)" + ("; on Debian: apt install dataset-fashion-mnist"
                                    if name == "fashion-mnist" else ""))
    return paths


# --- data sets as arrays ---------------------------------------------------------------------------

@dataclass
class Dataset:
    """Flattened images in [0, 1] (float32) with integer labels; ``image_shape`` to draw them."""
    name: str
    x_train: np.ndarray   # (N_train, D)
    y_train: np.ndarray   # (N_train,)
    x_test: np.ndarray    # (N_test, D)
    y_test: np.ndarray    # (N_test,)
    image_shape: tuple
    class_names: tuple | None = None  # label -> name, when the labels have names

    @property
    def x_dim(self) -> int:
        return self.x_train.shape[1]


def load_idx_dataset(name: str, data_dir=None, progress: bool = True) -> Dataset:
    """MNIST or Fashion-MNIST, 60k/10k, pixels scaled to [0, 1]."""
    source = _source(name)
    paths = fetch(name, data_dir, progress)
    arrays = {}
    for role, p in paths.items():  # the shape each file must declare, checked before its data is read
        n = source.n_train if role.startswith("train") else source.n_test
        shape = (n, *source.image_shape) if role.endswith("images") else (n,)
        arrays[role] = read_idx(p, max_bytes=math.prod(shape), shape=shape)
    flat = {k: np.divide(v.reshape(len(v), -1), np.float32(255.0), dtype=np.float32)  # one copy
            for k, v in arrays.items() if k.endswith("images")}
    return Dataset(name, flat["train_images"], arrays["train_labels"].astype(np.int64),
                   flat["test_images"], arrays["test_labels"].astype(np.int64), source.image_shape,
                   source.class_names)


def load_digits(n_test: int = 300) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 0..16), scaled to [0, 1].

    The split is deterministic: a permutation with a fixed seed, the last ``n_test`` for testing.
    """
    pixels, labels = _sklearn_digits()
    x = (pixels / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:-n_test], order[-n_test:]
    return Dataset("digits", x[train], labels[train].astype(np.int64), x[test],
                   labels[test].astype(np.int64), (8, 8))


def _sklearn_digits():
    """The digits' pixels (1797, 64) and labels (1797,) as scikit-learn's ``load_digits`` gives them.

    Its file is read directly when it is where scikit-learn keeps it (``datasets/data/digits.csv.gz``:
    64 pixel columns, then the label), as ``load_digits`` reads it: importing scikit-learn takes
    1.5-2.5 s, longer than the training run a learner starts first. Its loader if the file moved.
    """
    import importlib.util
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.is_file():
        with gzip.open(csv) as f:
            table = np.loadtxt(f, delimiter=",")
        if table.shape == (1797, 65):
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    return d.data, d.target


def make_bars(n: int = 2000, size: int = 4, seed: int = 0, n_test: int | None = None) -> Dataset:
    """A toy binary image set: each ``size x size`` image shows one horizontal or vertical bar.

    ``2 * size`` equally likely images; label = bar index (0..size-1 rows, size.. columns).
    Small enough that exact log p(x) over a grid of a 1-2-D latent is cheap.
    """
    rng = np.random.default_rng(seed)
    n_test = n // 5 if n_test is None else n_test
    labels = rng.integers(0, 2 * size, n + n_test)
    images = np.zeros((n + n_test, size, size), np.float32)
    for i, k in enumerate(labels):
        if k < size:
            images[i, k, :] = 1
        else:
            images[i, :, k - size] = 1
    x = images.reshape(len(images), -1)
    return Dataset("bars", x[:n], labels[:n], x[n:], labels[n:], (size, size))


def load_dataset(name: str, data_dir=None, progress: bool = True) -> Dataset:
    """A data set by name: ``digits`` (bundled), ``bars`` (generated), ``mnist``, ``fashion-mnist``."""
    if name == "digits":
        return load_digits()
    if name == "bars":
        return make_bars()
    if name in IDX_SOURCES:
        return load_idx_dataset(name, data_dir, progress)
    raise ValueError(f"dataset: expected one of {DATASETS}, got {name!r}")


DATASETS = ("digits", "bars", *IDX_SOURCES)
BINARIZE = ("none", "static", "dynamic")


def fingerprint(data: Dataset) -> str:
    """``sha256:<hex>`` over the arrays of ``data`` (each one's dtype, shape and bytes): what a run
    records of the data it was trained on, so that other data in the same place is noticed."""
    h = hashlib.sha256()
    for a in (data.x_train, data.y_train, data.x_test, data.y_test):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str} {a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return f"sha256:{h.hexdigest()}"


def binarize_static(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Pixels above ``threshold`` become 1, the rest 0 (done once, before training)."""
    return (x > threshold).astype(x.dtype)


def binarize_dynamic(x, u):
    """A fresh Bernoulli draw per pixel: ``1[u < x]`` for uniform ``u`` (any backend).

    Done anew at every use (every epoch), as in the IWAE paper, so the model sees binary data whose
    expectation is the grayscale image.
    """
    from .backend import namespace_of
    return namespace_of(x, u).astype(u < x, x.dtype)
