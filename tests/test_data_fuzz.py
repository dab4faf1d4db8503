"""Fuzzing read_idx: whatever bytes a file holds, gzipped or not, the only exception is DataError.
Slow suite (python -m pytest -m slow); bounded by example count, about 30 s."""

import gzip
import struct
import zlib

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from minivae.data import DataError, read_idx  # noqa: E402

pytestmark = pytest.mark.slow
CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


@st.composite
def idx_like(draw):
    """Mostly well-formed headers with wrong, huge or zero dimensions and payloads of any length."""
    code = draw(st.sampled_from(CODES + [0x00, 0x0A, 0xFF]))
    ndim = draw(st.integers(0, 70))
    dims = draw(st.lists(st.sampled_from([0, 1, 2, 3, 28, 255, 65536, 2**31, 2**32 - 1]),
                         min_size=min(ndim, 6), max_size=min(ndim, 6)))
    head = struct.pack(">HBB", draw(st.sampled_from([0, 0, 0, 1, 0x0801])) & 0xFFFF, code, ndim)
    head += struct.pack(f">{len(dims)}I", *dims)
    return head + draw(st.binary(max_size=300))


def _check(tmp_path, raw: bytes, gz: bool, damage: int | None = None):
    data = gzip.compress(raw, compresslevel=1) if gz else raw
    if damage is not None and data:
        data = bytearray(data)
        data[damage % len(data)] ^= 0xA5
        data = bytes(data)
    path = tmp_path / ("f-idx.gz" if gz else "f-idx")
    path.write_bytes(data)
    try:
        read_idx(path)
    except DataError:
        pass  # the one allowed failure; anything else (zlib.error, OverflowError, ...) fails the test


FUZZ = settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(raw=st.binary(max_size=400), gz=st.booleans())
def test_random_bytes(tmp_path, raw, gz):
    _check(tmp_path, raw, gz)


@FUZZ
@given(raw=idx_like(), gz=st.booleans(), damage=st.one_of(st.none(), st.integers(0, 10_000)))
def test_idx_like_bytes(tmp_path, raw, gz, damage):
    _check(tmp_path, raw, gz, damage)


@FUZZ
@given(raw=st.binary(max_size=400))
def test_raw_deflate_garbage_behind_a_gzip_header(tmp_path, raw):
    header = gzip.compress(b"")[:10]
    (tmp_path / "g-idx.gz").write_bytes(header + raw + zlib.crc32(raw).to_bytes(4, "little"))
    try:
        read_idx(tmp_path / "g-idx.gz")
    except DataError:
        pass
