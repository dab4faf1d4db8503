"""IDX parsing and every corrupt-file case, the download path against a loopback HTTP server,
the lookup order, binarization and the bundled data sets. No test touches the internet."""

import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from minivae import backend as B, data
from minivae.data import DataError, IdxSource, read_idx, write_idx


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (7, 4, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, images, name):
    write_idx(tmp_path / name, images)
    np.testing.assert_array_equal(read_idx(tmp_path / name), images)
    write_idx(tmp_path / "f.idx", np.arange(5, dtype=">i4"))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), np.arange(5))


def test_idx_truncated(tmp_path, images):
    write_idx(tmp_path / "x", images)
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(raw[:-5])
    with pytest.raises(DataError, match=r"x: dimensions \(7, 4, 3\) need 84 bytes of data, found 79: the file is truncated"):
        read_idx(tmp_path / "x")
    (tmp_path / "h").write_bytes(raw[:9])
    with pytest.raises(DataError, match="header announces 3 dimensions but the file ends after 9 bytes"):
        read_idx(tmp_path / "h")
    (tmp_path / "t").write_bytes(raw[:2])
    with pytest.raises(DataError, match="too short for an IDX header"):
        read_idx(tmp_path / "t")


def test_idx_trailing_bytes(tmp_path, images):
    write_idx(tmp_path / "x", images)
    with open(tmp_path / "x", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(DataError, match="has trailing bytes"):
        read_idx(tmp_path / "x")


def test_idx_wrong_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DataError, match="wrong magic number 504b0304.*not an IDX file"):
        read_idx(tmp_path / "x")


def test_idx_corrupt_and_truncated_gzip(tmp_path, images):
    write_idx(tmp_path / "x.gz", images)
    raw = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cut.gz: cannot be read as gzip.*corrupt or truncated"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "bad.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match="bad.gz: cannot be read as gzip"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "missing.gz")


# --- a small IDX data set, on disk and served over loopback ----------------------------------------

def _make_files(folder: Path, n_train=6, n_test=3, bad_labels=False) -> dict:
    g = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": g.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": g.integers(0, 10, n_train + bad_labels, dtype=np.uint8),
              "test_images": g.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": g.integers(0, 10, n_test, dtype=np.uint8)}
    names = dict(train_images="train-images-idx3-ubyte.gz", train_labels="train-labels-idx1-ubyte.gz",
                 test_images="t10k-images-idx3-ubyte.gz", test_labels="t10k-labels-idx1-ubyte.gz")
    files = {}
    for role, a in arrays.items():
        write_idx(folder / names[role], a)
        files[role] = (names[role], hashlib.sha256((folder / names[role]).read_bytes()).hexdigest())
    return files, arrays


@pytest.fixture
def tiny_source(tmp_path, monkeypatch):
    """A registered data set 'tiny' whose files a loopback server offers; the cache is tmp."""
    served = tmp_path / "served"
    files, arrays = _make_files(served)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIVAE_DATA", raising=False)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    source = IdxSource("tiny", files, (url,), (str(tmp_path / "system"),), n_train=6, n_test=3)
    monkeypatch.setitem(data.IDX_SOURCES, "tiny", source)
    yield source, served, arrays
    server.shutdown()
    server.server_close()


def test_download_verifies_and_caches(tiny_source, tmp_path):
    source, served, arrays = tiny_source
    ds = data.load_idx_dataset("tiny", progress=False)
    cached = tmp_path / "cache" / "minivae" / "tiny"
    assert sorted(p.name for p in cached.iterdir()) == sorted(f for f, _ in source.files.values())
    mask = os.umask(0o022)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in cached.iterdir()} == {0o666 & ~mask}  # not mkstemp's 0600
    np.testing.assert_allclose(ds.x_train, arrays["train_images"].reshape(6, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.x_train.dtype == np.float32 and ds.x_dim == 784
    # second time: from the cache, the server is not needed
    for p in served.iterdir():
        p.unlink()
    assert data.locate("tiny")["train_images"].parent == cached
    data.load_idx_dataset("tiny", progress=False)


def test_download_with_wrong_checksum_keeps_nothing(tiny_source, tmp_path, monkeypatch):
    source, served, _ = tiny_source
    files = dict(source.files)
    files["test_labels"] = (files["test_labels"][0], "0" * 64)
    monkeypatch.setitem(data.IDX_SOURCES, "tiny", IdxSource("tiny", files, source.mirrors, n_train=6, n_test=3))
    with pytest.raises(DataError, match="checksum mismatch .* nothing was kept"):
        data.fetch("tiny", progress=False)
    cached = tmp_path / "cache" / "minivae" / "tiny"
    assert not (cached / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(cached.glob("*.part"))


def test_download_of_a_corrupt_file_fails_its_checksum(tiny_source, tmp_path):
    source, served, _ = tiny_source
    path = served / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[40] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: checksum mismatch"):
        data.fetch("tiny", progress=False)


def test_download_of_a_truncated_file_fails_its_checksum(tiny_source):
    source, served, _ = tiny_source
    path = served / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="checksum mismatch"):
        data.fetch("tiny", progress=False)


def test_no_network_says_what_to_do(tiny_source, monkeypatch):
    source, _, _ = tiny_source
    dead = IdxSource("tiny", source.files, ("http://127.0.0.1:9/",), source.system_dirs, 6, 3)
    monkeypatch.setitem(data.IDX_SOURCES, "tiny", dead)
    with pytest.raises(DataError, match="could not be downloaded .* Looked in: .*--data-dir"):
        data.fetch("tiny", progress=False)


def test_lookup_order_data_dir_then_cache_then_system(tiny_source, tmp_path, monkeypatch):
    source, _, _ = tiny_source
    system = Path(source.system_dirs[0])
    _make_files(system)
    assert data.locate("tiny")["train_images"].parent == system
    cache = tmp_path / "cache" / "minivae" / "tiny"
    _make_files(cache)
    assert data.locate("tiny")["train_images"].parent == cache
    mine = tmp_path / "mine"
    _make_files(mine)
    assert data.locate("tiny", data_dir=mine)["train_images"].parent == mine
    monkeypatch.setenv("MINIVAE_DATA", str(mine))
    assert data.locate("tiny")["train_images"].parent == mine


def test_raw_uncompressed_files_are_found(tiny_source, tmp_path):
    source, _, arrays = tiny_source
    mine = tmp_path / "raw"
    mine.mkdir()
    for role, (name, _) in source.files.items():
        write_idx(mine / name[:-3], arrays[role])
    ds = data.load_idx_dataset("tiny", data_dir=mine, progress=False)
    assert ds.x_test.shape == (3, 784)


def test_labels_that_do_not_match_images(tiny_source, tmp_path):
    mine = tmp_path / "mismatch"
    _make_files(mine, bad_labels=True)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: declares dimensions \(7,\), this "
                                        r"data set's file has \(6,\)"):
        data.load_idx_dataset("tiny", data_dir=mine, progress=False)


def test_wrong_image_count(tiny_source, tmp_path):
    mine = tmp_path / "short"
    _make_files(mine, n_train=5)
    with pytest.raises(DataError, match=r"declares dimensions \(5, 28, 28\), this data set's file has "
                                        r"\(6, 28, 28\)"):
        data.load_idx_dataset("tiny", data_dir=mine, progress=False)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset: expected one of"):
        data.load_dataset("cifar10")


def test_digits_split_is_deterministic():
    a, b = data.load_digits(), data.load_digits()
    assert a.x_train.shape == (1497, 64) and a.x_test.shape == (300, 64)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.min() == 0.0 and a.x_train.max() == 1.0 and a.image_shape == (8, 8)


def test_the_digits_are_scikit_learns_without_importing_it(monkeypatch):
    """The file is read as scikit-learn's loader reads it (same arrays, same fingerprint), in a fresh
    interpreter without importing scikit-learn; where the file is not found, its loader is used."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits
    sk = load_digits()
    pixels, labels = data._sklearn_digits()
    np.testing.assert_array_equal(pixels, sk.data)
    np.testing.assert_array_equal(labels, sk.target)
    assert pixels.dtype == sk.data.dtype and labels.dtype == np.int64
    code = ("import sys; from minivae import data; d = data.load_digits(); "
            "print('sklearn' in sys.modules, data.fingerprint(d))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", data.fingerprint(data.load_digits())]
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)   # the file not found
    assert data.fingerprint(data.load_digits()) == out[1]


def test_bars():
    ds = data.make_bars(n=50, size=4)
    assert ds.x_train.shape == (50, 16) and set(np.unique(ds.x_train)) == {0.0, 1.0}
    assert np.all(ds.x_train.sum(axis=1) == 4)


def test_binarization(backend):
    x = np.array([[0.0, 0.2, 0.5, 0.51, 1.0]], np.float32)
    np.testing.assert_array_equal(data.binarize_static(x), [[0, 0, 0, 1, 1]])
    xs = B.from_numpy(np.full((20000, 1), 0.3, np.float32), backend)
    draws = B.to_numpy(data.binarize_dynamic(xs, B.Generator(0, backend).uniform((20000, 1))))
    assert set(np.unique(draws)) == {0.0, 1.0} and abs(draws.mean() - 0.3) < 0.015
    assert draws.dtype == np.float32


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("MINIVAE_DATA", raising=False)
    ds = data.load_dataset("fashion-mnist", progress=False)
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10


def test_fetch_cli_prints_where_the_files_are(tmp_path, monkeypatch, capsys):
    from minivae.__main__ import main
    _make_files(tmp_path / "fashion-mnist")
    monkeypatch.setenv("MINIVAE_DATA", str(tmp_path))
    assert main(["fetch", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert f"train_images  {tmp_path / 'fashion-mnist' / 'train-images-idx3-ubyte.gz'}" in out


# --- hostile files and servers (issue: reliability) ------------------------------------------------

def test_a_gzip_bomb_costs_no_more_memory_than_its_header_declares(tmp_path):
    import gzip
    import struct
    import tracemalloc
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as f:  # declares 6 images, then 64 MB of zeros
        f.write(struct.pack(">HBB3I", 0, 0x08, 3, 6, 28, 28))
        zeros = bytes(1 << 20)
        for _ in range(64):
            f.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="has trailing bytes"):
            read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak


@pytest.mark.parametrize("header, message", [
    ((0x08, 4, (65536,) * 4), r"declare 18,446,744,073,709,551,616 bytes of data, more than"),
    ((0x08, 65, (1,) * 65), r"header announces 65 dimensions \(at most 16 accepted\)"),
    ((0x0E, 2, (70000, 70000)), r"more than the 2,147,483,648 read_idx accepts"),
])
def test_absurd_headers_are_data_errors(tmp_path, header, message):
    import struct
    code, ndim, dims = header
    path = tmp_path / "x-idx"
    path.write_bytes(struct.pack(">HBB", 0, code, ndim) + struct.pack(f">{ndim}I", *dims))
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_a_damaged_deflate_stream_is_a_data_error(tmp_path):
    """Flipped bits inside the compressed blocks: zlib.error, a CRC failure or a nonsense header,
    and in every case a DataError naming the file."""
    write_idx(tmp_path / "x.gz", np.random.default_rng(0).integers(0, 256, (50, 10, 10), dtype=np.uint8))
    clean = (tmp_path / "x.gz").read_bytes()
    for start in range(20, 60):
        raw = bytearray(clean)
        for i in range(start, len(raw) - 8, 97):
            raw[i] ^= 0x5A
        (tmp_path / "y.gz").write_bytes(bytes(raw))
        with pytest.raises(DataError, match="y.gz: "):
            read_idx(tmp_path / "y.gz")


class _FaultyServer:
    """A loopback HTTP server that misbehaves by path: /<fault>/<file>; /good/<file> serves ``files``.
    Every response is bounded in size and time, so a test never runs away."""

    def __init__(self, files: dict):
        import socketserver
        outer = self
        self.files = files

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline(65537).decode("latin-1")
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                fault, _, name = line.split(" ")[1].lstrip("/").partition("/")
                outer.respond(fault, name, self.wfile)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def respond(self, fault, name, w):
        import time
        ok = b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
        try:
            if fault == "good":
                body = self.files[name]
                w.write(ok + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            elif fault == "badstatus":
                w.write(b"SPAM 200 eggs\r\n\r\n")
            elif fault == "incomplete":
                w.write(ok + b"Content-Length: 1000\r\n\r\n" + b"x" * 10)
            elif fault == "longline":
                w.write(ok + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n")
            elif fault == "manyheaders":
                w.write(ok + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n")
            elif fault == "badlength":
                w.write(ok + b"Content-Length: abc\r\n\r\n" + b"x" * 10)
            elif fault == "endless":  # no length, 8 MB of zeros at most
                w.write(ok + b"\r\n")
                for _ in range(128):
                    w.write(bytes(1 << 16))
            elif fault == "dripstatus":  # the status line itself, one byte every 0.25 s (10 s at most)
                for byte in (ok * 3)[:40]:
                    w.write(bytes([byte]))
                    w.flush()
                    time.sleep(0.25)
            elif fault == "continue":  # "100 Continue" every 0.1 s, for 10 s at most
                for _ in range(100):
                    w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    w.flush()
                    time.sleep(0.1)
            elif fault.startswith("redirect"):  # 0.5 s, then a redirect to the next of 10
                hops = int(fault[len("redirect"):] or 10)
                time.sleep(0.5)
                target = f"/redirect{hops - 1}/{name}" if hops > 1 else f"/good/{name}"
                w.write(b"HTTP/1.1 302 Found\r\nConnection: close\r\nContent-Length: 0\r\n"
                        + f"Location: {target}\r\n\r\n".encode())
            elif fault == "slow":  # one byte every 0.1 s, for 6 s at most
                w.write(ok + b"Content-Length: 60\r\n\r\n")
                for _ in range(60):
                    w.write(b"x")
                    w.flush()
                    time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close(self):
        self.server.shutdown()
        self.server.server_close()


FAULTS = ["badstatus", "incomplete", "longline", "manyheaders", "badlength", "endless"]


@pytest.fixture
def faulty(tiny_source):
    source, served, _ = tiny_source
    server = _FaultyServer({p.name: p.read_bytes() for p in served.iterdir()})
    yield source, server
    server.close()


@pytest.mark.parametrize("fault", FAULTS)
def test_every_download_fault_is_a_data_error_that_moves_on_to_the_next_mirror(faulty, tmp_path, fault,
                                                                               monkeypatch):
    source, server = faulty
    monkeypatch.setitem(data.IDX_SOURCES, "tiny", IdxSource("tiny", source.files, source.mirrors,
                                                            n_train=6, n_test=3, max_bytes=1 << 20))
    name, sha = source.files["train_labels"]
    cache = tmp_path / "cache" / "minivae" / "tiny"
    with pytest.raises(DataError) as error:
        data.download(server.url + f"{fault}/{name}", cache / name, sha, progress=False, timeout=5,
                      max_bytes=1 << 20)
    assert "Traceback" not in str(error.value) and server.url in str(error.value)
    assert not list(cache.glob("*.part")) and not (cache / name).exists()
    paths = data.fetch("tiny", progress=False, mirrors=[server.url + f"{fault}/", server.url + "good/"])
    assert paths["train_labels"] == cache / name
    assert not list(cache.glob("*.part"))


def test_a_download_is_capped_at_the_data_sets_largest_file(faulty, tmp_path):
    source, server = faulty
    name, sha = source.files["test_labels"]
    with pytest.raises(DataError, match=r"more than 1,048,576 bytes, larger than any file"):
        data.download(server.url + f"endless/{name}", tmp_path / name, sha, progress=False,
                      max_bytes=1 << 20)
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("fault", ["slow", "dripstatus", "continue", "redirect"])
def test_the_deadline_covers_the_whole_exchange(faulty, tmp_path, fault):
    """Status line, headers, 100 Continue and redirects count against the deadline, not just the body."""
    import time
    source, server = faulty
    name, sha = source.files["test_labels"]
    t0 = time.monotonic()
    with pytest.raises(DataError, match=r"not complete after 1 s"):
        data.download(server.url + f"{fault}/{name}", tmp_path / name, sha, progress=False, timeout=3,
                      deadline=1.0)
    assert time.monotonic() - t0 < 2.5
    assert not list(tmp_path.glob("*.part"))


def test_a_destination_that_cannot_be_a_file_is_a_data_error(faulty, tmp_path):
    source, server = faulty
    name, sha = source.files["test_labels"]
    (tmp_path / name).mkdir()
    with pytest.raises(DataError, match="that is a folder"):
        data.download(server.url + f"good/{name}", tmp_path / name, sha, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot download .* into"):
        data.download(server.url + f"good/{name}", tmp_path / "file" / name, sha, progress=False)
    assert not list(tmp_path.rglob("*.part"))


def test_parts_left_by_killed_downloads_are_removed_on_the_next_fetch(faulty, tmp_path):
    import subprocess
    source, server = faulty
    name, sha = source.files["test_labels"]
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [tmp_path / f"{name}.{dead.pid}.abc.part", tmp_path / f"{name}.xyz.part"]
    live = tmp_path / f"{name}.{os.getpid()}.def.part"  # a download in progress in a live process
    for p in (*stale, live):
        p.write_bytes(b"x" * 1000)
    data.download(server.url + f"good/{name}", tmp_path / name, sha, progress=False)
    assert not any(p.exists() for p in stale) and live.exists()


def test_the_loader_checks_each_files_declared_shape_before_reading_it(tiny_source, tmp_path):
    """A 261 kB file that declares 256 MiB of images is refused from its 16-byte header."""
    import gzip
    import struct
    import tracemalloc
    mine = tmp_path / "big"
    _make_files(mine)
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 342_000, 28, 28)
    with gzip.open(mine / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + bytes(1 << 26))
    tracemalloc.start()
    with pytest.raises(DataError, match=r"declares dimensions \(342000, 28, 28\)"):
        data.load_idx_dataset("tiny", data_dir=mine, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 32_000_000, peak  # the file declares 268 MB; reading it would cost that (plus a copy)
