"""The safetensors reader: golden bytes for every float dtype, and every malformed-header error."""
from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import pytest

from fpcore import dtypes
from fpcore.errors import BadFileError, FpError, HeaderError, UnsupportedError
from fpcore.sources import open_source as open_model
from fpcore.sources.safetensors import SafetensorsFile


def st_bytes(tensors: dict, metadata=None, pad=True, raw_header: bytes | None = None) -> bytes:
    """Hand-built safetensors: tensors = {key: (dtype, shape, data bytes)}."""
    header, blobs, pos = {}, [], 0
    for k, (dt, shape, data) in tensors.items():
        header[k] = {"dtype": dt, "shape": list(shape), "data_offsets": [pos, pos + len(data)]}
        blobs.append(data)
        pos += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    if pad and raw_header is None:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write(tmp_path, data: bytes, name="m.safetensors"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# golden bytes: little-endian encodings of [1.0, -2.5, 0.15625, max-or-special]
GOLDEN = {
    "F32": (bytes.fromhex("0000803f" "000020c0" "0000203e" "ffff7f7f"), [1.0, -2.5, 0.15625, 3.4028234663852886e38]),
    "F16": (bytes.fromhex("003c" "00c1" "0031" "ff7b"), [1.0, -2.5, 0.15625, 65504.0]),
    "BF16": (bytes.fromhex("803f" "20c0" "203e" "7f7f"), [1.0, -2.5, 0.15625, 3.3895313892515355e38]),
    "F8_E4M3": (bytes.fromhex("38" "c2" "22" "7e"), [1.0, -2.5, 0.15625, 448.0]),
    "F8_E5M2": (bytes.fromhex("3c" "c1" "31" "7b"), [1.0, -2.5, 0.15625, 57344.0]),
    "F64": (struct.pack("<4d", 1.0, -2.5, 0.15625, 1e300), [1.0, -2.5, 0.15625, math.inf]),
}


@pytest.mark.parametrize("dt", sorted(GOLDEN))
def test_golden_decode(tmp_path, dt):
    raw, want = GOLDEN[dt]
    p = write(tmp_path, st_bytes({"w": (dt, (4,), raw)}))
    with SafetensorsFile(p) as f:
        t = f.tensors["w"]
        assert (t.dtype, t.shape, t.nbytes) == (dt, (4,), len(raw))
        got = dtypes.decode(f.read_elements([("w", 0, 4)])[0], dt)
    with np.errstate(over="ignore"):
        assert got.tolist() == np.array(want, np.float32).tolist()


def test_special_values_fp8():
    # e4m3fn: 0x7f is NaN, no infinities; e5m2: 0x7c is +inf
    assert np.isnan(dtypes.decode(b"\x7f", "F8_E4M3")[0])
    assert dtypes.decode(b"\x7c", "F8_E5M2")[0] == np.inf
    assert dtypes.decode(b"\x80\x7f", "BF16")[0] == np.inf


def test_integer_dtypes(tmp_path):
    p = write(tmp_path, st_bytes({"ids": ("I64", (3,), struct.pack("<3q", 0, 1, -2)),
                                  "u": ("U8", (2,), b"\x00\xff")}))
    with SafetensorsFile(p) as f:
        assert dtypes.decode(f.read_elements([("ids", 0, 3)])[0], "I64").tolist() == [0, 1, -2]
        assert dtypes.decode(f.read_elements([("u", 1, 1)])[0], "U8").tolist() == [255]


def test_matches_safetensors_library(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    arrs = {"a": rng.standard_normal((5, 7)).astype(np.float16), "b": rng.standard_normal(9).astype(np.float32)}
    p = tmp_path / "lib.safetensors"
    safetensors_numpy.save_file(arrs, str(p), metadata={"x": "y"})
    with SafetensorsFile(p) as f:
        assert f.metadata == {"x": "y"}
        for k, v in arrs.items():
            t = f.tensors[k]
            got = dtypes.decode(f.read_elements([(k, 0, t.numel)])[0], t.dtype).reshape(t.shape)
            np.testing.assert_array_equal(got, v.astype(np.float32))


def test_reads_only_requested_ranges(tmp_path, monkeypatch):
    """What reaches the OS (os.pread, spied), against hand-computed offsets: ranges closer than
    COALESCE_GAP (16 KiB) are one read covering both, farther ones are read apart; the
    reader's own counter agrees with what was read."""
    from fpcore.sources.safetensors import COALESCE_GAP
    assert COALESCE_GAP == 16 * 1024
    data = bytes(range(256)) * 256                                    # 64 KiB
    p = write(tmp_path, st_bytes({"x": ("U8", (len(data),), data)}))
    calls = []
    real = os.pread

    def spy(fd, n, offset):
        calls.append((n, offset))
        return real(fd, n, offset)
    with SafetensorsFile(p) as f:
        start = f.data_start
        monkeypatch.setattr(os, "pread", spy)
        out = f.read_elements([("x", 1000, 8), ("x", 5, 3)])          # 992 bytes apart: one read
        assert out == [data[1000:1008], data[5:8]]
        assert calls == [(1003, start + 5)]
        out = f.read_elements([("x", 40000, 8), ("x", 5, 3)])         # 39992 bytes apart: two reads
        assert out == [data[40000:40008], data[5:8]]
        assert sorted(calls[1:]) == [(3, start + 5), (8, start + 40000)]
        assert f.bytes_read == 1003 + 3 + 8


OK_T = {"w": ("F16", (2,), b"\x00\x3c\x00\x3c")}


def _hdr(d):
    return json.dumps(d).encode()


MALFORMED = {
    "too small": (b"\x01\x00", "too small"),
    "empty": (b"", "too small"),
    "header too large": (struct.pack("<Q", 100_000_001) + b"{}", "exceeds"),
    "header past end": (struct.pack("<Q", 4096) + b"{}", "past the end"),
    "header too short": (struct.pack("<Q", 1) + b"{", "too small"),
    "not json": (st_bytes({}, raw_header=b"{not json!"), "not valid UTF-8 JSON"),
    "not utf8": (st_bytes({}, raw_header=b'{"\xff": 1}'), "not valid UTF-8 JSON"),
    "not object": (st_bytes({}, raw_header=b"[1, 2, 3]   "), "not an object"),
    "metadata not object": (st_bytes({}, raw_header=_hdr({"__metadata__": [1]})), "__metadata__"),
    "entry not object": (st_bytes({}, raw_header=_hdr({"w": 3})), "entry is not an object"),
    "missing dtype": (st_bytes({}, raw_header=_hdr({"w": {"shape": [1], "data_offsets": [0, 2]}})), "missing dtype"),
    "unknown dtype": (st_bytes({}, raw_header=_hdr({"w": {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}})) + b"\0",
                      "unknown dtype"),
    "negative shape": (st_bytes({}, raw_header=_hdr({"w": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}})) + b"\0",
                       "non-negative"),
    "bad offsets": (st_bytes({}, raw_header=_hdr({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0]}})) + b"\0",
                    "pair of integers"),
    "reversed offsets": (st_bytes({}, raw_header=_hdr({"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 2]}})),
                         "reversed"),
    "length mismatch": (st_bytes({}, raw_header=_hdr({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})) + b"\0" * 4,
                        "needs 8 bytes"),
    "overflowing shape": (st_bytes({}, raw_header=_hdr({"w": {"dtype": "F32", "shape": [2**40, 2**40],
                                                              "data_offsets": [0, 8]}})) + b"\0" * 8, "needs"),
    "overlap": (st_bytes({}, raw_header=_hdr({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                              "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}})) + b"\0" * 6,
                "overlaps"),
    "gap": (st_bytes({}, raw_header=_hdr({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                                          "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}})) + b"\0" * 6, "gap"),
    "truncated data": (st_bytes(OK_T)[:-1], "truncated"),
    "trailing bytes": (st_bytes(OK_T) + b"junk", "not described"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header(tmp_path, case):
    data, needle = MALFORMED[case]
    p = write(tmp_path, data)
    with pytest.raises((HeaderError, UnsupportedError)) as ei:
        SafetensorsFile(p)
    msg = str(ei.value)
    assert needle in msg
    assert str(p) in msg and "\n" not in msg


def test_not_a_regular_file(tmp_path):
    d = tmp_path / "x.safetensors"
    d.mkdir()
    with pytest.raises(BadFileError, match="directory"):
        open_model(d)
    with pytest.raises(BadFileError, match="no such file"):
        open_model(tmp_path / "missing.safetensors")
    fifo = tmp_path / "f.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(BadFileError, match="not a regular file"):  # must not block on open
        open_model(fifo)
    loop = tmp_path / "loop.safetensors"
    os.symlink(loop, loop)
    with pytest.raises(BadFileError, match="cannot stat"):
        open_model(loop)


def test_every_error_is_an_fperror(tmp_path):
    for case, (data, _) in MALFORMED.items():
        p = write(tmp_path, data, name=f"{abs(hash(case))}.safetensors")
        with pytest.raises(FpError):
            SafetensorsFile(p)
