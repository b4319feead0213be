"""Hostile and odd inputs: a seeded fuzz run, NaN/Inf/zero weights, zip bombs, lying GGUF counts.

(Header-level errors, FIFOs, directories, symlink loops and 0-byte files are in
test_reader.py and test_scan.py; malicious pickles in test_formats.py.)
"""
from __future__ import annotations

import json
import struct
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fpcore import synth
from fpcore.errors import FpError
from fpcore.identify import add_reference, identify
from fpcore.reader import open_model
from fpcore.refs import RefDB

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import fuzz  # noqa: E402


def test_seeded_fuzz(tmp_path):
    """300 mutated safetensors and 75 mutated .ckpt files: only one-line FpErrors, fast, bounded memory."""
    s = fuzz.run(300, seed=1234, workdir=tmp_path)
    assert s["cases"] == 375
    assert s["max_seconds"] < fuzz.MAX_SECONDS
    kinds = {k.split(": ")[1] for k in s["outcomes"]}
    assert "HeaderError" in kinds and "fingerprinted" in kinds     # the mutations reach both outcomes


def test_nan_inf_and_zero_weights_are_identified(tmp_path, lineage):
    """Valid files with NaN, Inf and all-zero tensors are identified, and the JSON stays valid."""
    base = lineage["Base"]
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "n")
    synth.write_safetensors(tmp_path / "base.safetensors", base, "F16")
    add_reference(d, tmp_path / "base.safetensors", "Base", hashes=False)
    odd = {}
    for i, (k, v) in enumerate(base.items()):
        v = v.copy()
        if v.dtype == np.float32:
            if i % 5 == 0:
                v[...] = 0
            elif i % 5 == 1:
                v.flat[::3] = np.nan
            elif i % 5 == 2:
                v.flat[::7] = np.inf
        odd[k] = v
    synth.write_safetensors(tmp_path / "odd.safetensors", odd, "F16")
    rep = identify(tmp_path / "odd.safetensors", d, hashes=False)
    assert rep["error"] is None and rep["verdict"]["relation"] == "derivative" and rep["verdict"]["base"] == "Base"
    json.dumps(rep, allow_nan=False)
    zeros = {k: (np.zeros_like(v) if v.dtype == np.float32 else v) for k, v in base.items()}
    synth.write_safetensors(tmp_path / "zeros.safetensors", zeros, "F16")
    rep = identify(tmp_path / "zeros.safetensors", d, hashes=False)
    assert rep["error"] is None and rep["verdict"]["relation"] == "unknown" and rep["verdict"]["base"] is None
    json.dumps(rep, allow_nan=False)


def test_zip_bomb_in_ckpt(tmp_path):
    """A deflated data.pkl that expands to gigabytes is refused quickly, with bounded memory."""
    p = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 24)
            for _ in range(20):                       # 320 MB of zeros, about 320 KB compressed
                f.write(chunk)
        z.writestr("archive/version", "3\n")
    assert p.stat().st_size < 2_000_000
    t = time.perf_counter()
    with pytest.raises(FpError) as ei:
        with open_model(p):
            pass
    assert time.perf_counter() - t < 10
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)


def _gguf_header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<I", 3) + struct.pack("<Q", n_tensors) + struct.pack("<Q", n_kv)


@pytest.mark.parametrize("n_tensors,n_kv", [(2**40, 0), (0, 2**40), (2**63, 2**63), (5, 3)])
def test_gguf_with_lying_counts(tmp_path, n_tensors, n_kv):
    pytest.importorskip("gguf")
    p = tmp_path / "lying.gguf"
    p.write_bytes(_gguf_header(n_tensors, n_kv) + b"\0" * 64)
    t = time.perf_counter()
    with pytest.raises(FpError) as ei:
        with open_model(p):
            pass
    assert time.perf_counter() - t < 5
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)


def test_header_length_beyond_file_and_huge_shapes(tmp_path):
    """Lying sizes are refused before anything is allocated."""
    h = json.dumps({"w": {"dtype": "F32", "shape": [2**31, 2**31, 2**31], "data_offsets": [0, 8]}}).encode()
    p = tmp_path / "huge.safetensors"
    p.write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 8)
    with pytest.raises(FpError, match="needs"):
        open_model(p)
    p.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(FpError, match="exceeds"):
        open_model(p)
