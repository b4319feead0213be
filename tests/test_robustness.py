"""Hostile and odd inputs: a seeded fuzz run, NaN/Inf/zero weights, zip bombs, lying GGUF counts,
JSON and pickles nested past any real file, and every hostile file at once through the CLI.

(Each header-level error in isolation is in test_reader.py, malicious pickles also in
test_formats.py; docs/robustness.md lists what happens for each.)
"""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import testkit
from fpcore.errors import FpError
from fpcore.identify import add_reference, identify
from fpcore.sources import open_source as open_model
from fpcore.refs.library import RefDB

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import fuzz  # noqa: E402


ROOT = Path(__file__).resolve().parent.parent


def test_seeded_fuzz(tmp_path):
    """400 mutated safetensors and 100 mutated .ckpt files: only one-line FpErrors, fast, bounded memory."""
    s = fuzz.run(400, seed=1234, workdir=tmp_path)
    assert s["cases"] == 500
    assert s["max_seconds"] < fuzz.MAX_SECONDS
    kinds = {k.split(": ")[1] for k in s["outcomes"]}
    assert "HeaderError" in kinds and "fingerprinted" in kinds     # the mutations reach both outcomes


def test_nan_inf_and_zero_weights_are_identified(tmp_path, lineage):
    """Valid files with NaN, Inf and all-zero tensors are identified, and the JSON stays valid."""
    base = lineage["Base"]
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "n")
    testkit.write_safetensors(tmp_path / "base.safetensors", base, "F16")
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
    testkit.write_safetensors(tmp_path / "odd.safetensors", odd, "F16")
    rep = identify(tmp_path / "odd.safetensors", d, hashes=False)
    assert rep["error"] is None and rep["verdict"]["relation"] == "derivative" and rep["verdict"]["base"] == "Base"
    json.dumps(rep, allow_nan=False)
    zeros = {k: (np.zeros_like(v) if v.dtype == np.float32 else v) for k, v in base.items()}
    testkit.write_safetensors(tmp_path / "zeros.safetensors", zeros, "F16")
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


# -- every hostile file at once, through the CLI -------------------------------------------------------

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _ckpt_with_pickle(path: Path, pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
    return path


def _hostile_folder(d: Path) -> dict[str, str]:
    """name -> the text its one-line error must hold."""
    d.mkdir()
    want = {}

    def st(name, header: bytes, tail: bytes = b"", need: str = ""):
        (d / name).write_bytes(struct.pack("<Q", len(header)) + header + tail)
        want[name] = need
    (d / "empty.safetensors").write_bytes(b"")
    want["empty.safetensors"] = "file is 0 bytes, too small for a safetensors header (truncated or empty)"
    (d / "x.safetensors").mkdir()
    want["x.safetensors"] = "is a folder of models, not a model; to identify every model in it: fpcore scan"   # the CLI points to scan
    os.mkfifo(d / "fifo.safetensors")
    want["fifo.safetensors"] = "is not a regular file (FIFO, socket or device)"
    os.symlink(d / "loop.safetensors", d / "loop.safetensors")
    want["loop.safetensors"] = "cannot stat: Too many levels of symbolic links"
    (d / "past_end.safetensors").write_bytes(struct.pack("<Q", 4096) + b"{}")
    want["past_end.safetensors"] = "header length 4096 runs past the end of the 10-byte file (truncated download?)"
    (d / "huge_len.safetensors").write_bytes(struct.pack("<Q", 2**64 - 1) + b"{}")
    want["huge_len.safetensors"] = f"header length {2**64 - 1} exceeds the 100000000-byte limit"
    st("overlap.safetensors", json.dumps({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                          "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}).encode(),
       b"\0" * 6, "tensor 'b': data_offsets start at 2, which overlaps the previous tensor")
    st("out_of_range.safetensors", json.dumps({"a": {"dtype": "U8", "shape": [64], "data_offsets": [0, 64]}}).encode(),
       b"\0" * 6, "header describes 64 bytes of tensor data but the file holds 6 (truncated download?)")
    st("overflow.safetensors", json.dumps({"w": {"dtype": "F32", "shape": [2**31, 2**31, 2**31],
                                                 "data_offsets": [0, 8]}}).encode(), b"\0" * 8,
       f"tensor 'w': shape [2147483648, 2147483648, 2147483648] x F32 needs {2**93 * 4} bytes but data_offsets span 8")
    st("deep.safetensors", b"[" * 100_000 + b"]" * 100_000, b"",
       "header JSON is nested too deeply to be a safetensors header")
    marker = d.parent / "pwned"
    _ckpt_with_pickle(d / "evil.ckpt", pickle.dumps({"state_dict": {"x": _Evil(marker)}}, protocol=2))
    want["evil.ckpt"] = "pickle refers to posix.system, which is not needed to rebuild tensors; refused without running it"
    with zipfile.ZipFile(d / "bomb.ckpt", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            for _ in range(20):
                f.write(b"\0" * (1 << 24))
    want["bomb.ckpt"] = "data.pkl is 335544320 bytes, over the 268435456-byte limit"   # 320 MB in 320 KB
    (d / "lying.gguf").write_bytes(_gguf_header(2**40, 2**40) + b"\0" * 64)
    want["lying.gguf"] = "not a valid GGUF file"
    return want


def test_every_hostile_file_through_the_cli(tmp_path):
    """One `identify` over all of them: exit 3, exactly one one-line error per file naming it,
    no traceback, nothing blocks (FIFO), nothing runs (pickle), and a valid file among them
    is still identified."""
    pytest.importorskip("gguf")
    d = tmp_path / "hostile"
    want = _hostile_folder(d)
    good = tmp_path / "good.safetensors"
    testkit.write_safetensors(good, testkit.random_state_dict(testkit.checkpoint_spec("sd1", "tiny"), 3), "F16")
    names = sorted(want)
    env = dict(os.environ, FPCORE_CACHE=str(tmp_path / "c"), FPCORE_REFS=str(tmp_path / "r"))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fpcore", "identify", "--json", *[str(d / n) for n in names], str(good)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - t < 60
    assert r.returncode == 3 and "Traceback" not in r.stderr
    errs = [line for line in r.stderr.splitlines() if line.startswith("fpcore: ")]
    assert len(errs) == len(names)
    reports = json.loads(r.stdout)
    for n, line, rep in zip(names, errs, reports):
        assert line == f"fpcore: {d / n}: " + line.split(f"{d / n}: ", 1)[1]     # names the file first
        assert want[n] in line, (n, line)
        assert rep["error"] and want[n] in rep["error"]
    assert reports[-1]["error"] is None and reports[-1]["architecture"]["family"] == "sd1"
    assert not (tmp_path / "pwned").exists()


# -- structures no real file has: JSON and pickles nested past the interpreter's stack ------------------

def test_json_nested_thousands_deep_is_bad_input(tmp_path, lineage):
    """A header, a metadata value and a sidecar nested 100,000 deep: errors or plain strings,
    never a RecursionError."""
    from fpcore.scan import tags
    p = tmp_path / "m.safetensors"
    testkit.write_safetensors(p, lineage["Base"], "F16", metadata={"sd_merge_recipe": "[" * 100_000 + "]" * 100_000})
    rep = identify(p, RefDB(tmp_path / "r", builtin_dir=tmp_path / "n"), hashes=False)
    assert rep["error"] is None and rep["metadata"]["a1111_merge"]["sd_merge_recipe"].startswith("[[[")
    (tmp_path / "m.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FpError, match="existing sidecar is not valid JSON .RecursionError.; left untouched"):
        tags.write(p, {"base_model": "X"})


def _ckpt_variant(tmp_path, name, patch) -> Path:
    """A valid .ckpt with one field of data.pkl's central-directory entry changed."""
    rng = np.random.default_rng(0)
    base = tmp_path / "base.ckpt"
    testkit.write_torch_ckpt(base, {"model.diffusion_model.out.2.weight": rng.standard_normal((4, 8)).astype(np.float32)})
    raw = bytearray(base.read_bytes())
    i = raw.find(b"PK\x01\x02")                                   # data.pkl is the first entry
    patch(raw, i)
    p = tmp_path / name
    p.write_bytes(raw)
    return p


@pytest.mark.parametrize("name,patch,needle", [
    ("method99.ckpt", lambda r, i: r.__setitem__(slice(i + 10, i + 12), struct.pack("<H", 99)),
     "cannot read data.pkl (That compression method is not supported)"),
    ("encrypted.ckpt", lambda r, i: r.__setitem__(i + 8, r[i + 8] | 1), "is encrypted, password required"),
    ("deflate_lie.ckpt", lambda r, i: r.__setitem__(slice(i + 10, i + 12), struct.pack("<H", 8)),
     "cannot read data.pkl (Error -3 while decompressing data"),
    ("version.ckpt", lambda r, i: r.__setitem__(slice(i + 6, i + 8), struct.pack("<H", 84)),
     "damaged zip checkpoint (zip file version 8.4)"),
])
def test_zip_fields_zipfile_cannot_handle(tmp_path, name, patch, needle):
    p = _ckpt_variant(tmp_path, name, patch)
    with pytest.raises(FpError) as ei:
        with open_model(p):
            pass
    assert needle in str(ei.value) and str(ei.value).startswith(str(p)) and "\n" not in str(ei.value)


@pytest.mark.parametrize("pkl", [fuzz.CYCLIC_PICKLE, fuzz.DEEP_PICKLE], ids=["contains_itself", "nested_5000_deep"])
def test_pickle_dicts_that_recurse(tmp_path, pkl):
    """No tensors, no RecursionError: the file opens with nothing in it."""
    p = _ckpt_with_pickle(tmp_path / "r.ckpt", pkl)
    with open_model(p) as src:
        assert src.tensors == {}


# -- NaN / Inf weights: in a reference, in a folder, through the CLI --------------------------------------

def _all(base: dict, value: float) -> dict:
    return {k: (np.full_like(v, value) if v.dtype == np.float32 else v) for k, v in base.items()}


def test_nan_reference_does_not_blind_the_others(tmp_path, lineage):
    """A registered reference whose weights are all NaN used to empty the joint alignment:
    every file of its family came out unrelated to every reference."""
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "n")
    testkit.write_safetensors(tmp_path / "base.safetensors", lineage["Base"], "F16")
    testkit.write_safetensors(tmp_path / "nan.safetensors", _all(lineage["Base"], np.nan), "F16")
    add_reference(d, tmp_path / "base.safetensors", "Base", hashes=False)
    add_reference(d, tmp_path / "nan.safetensors", "Broken", hashes=False)
    testkit.write_safetensors(tmp_path / "child.safetensors", lineage["Child"], "F16")
    rep = identify(tmp_path / "child.safetensors", d, hashes=False)
    assert rep["verdict"]["relation"] == "derivative" and rep["verdict"]["base"] == "Base"
    broken = [c for c in rep["candidates"] if c["ref"] == "Broken"][0]
    assert broken["distance"] is None and not broken["related"]       # null, not Infinity
    json.dumps(rep, allow_nan=False)


def test_nan_and_inf_files_in_a_folder_scan(tmp_path, lineage):
    """All-NaN and all-Inf files are identified (unknown), the JSON is strict, and the
    precision copy next to them is still grouped with its original."""
    m = tmp_path / "m"
    m.mkdir()
    testkit.write_safetensors(m / "base.safetensors", lineage["Base"], "F16")
    testkit.write_safetensors(m / "base32.safetensors", lineage["Base"], "F32")
    testkit.write_safetensors(m / "nan.safetensors", _all(lineage["Base"], np.nan), "F16")
    testkit.write_safetensors(m / "inf.safetensors", _all(lineage["Base"], -np.inf), "BF16")
    env = dict(os.environ, FPCORE_CACHE=str(tmp_path / "c"), FPCORE_REFS=str(tmp_path / "r"))
    r = subprocess.run([sys.executable, "-m", "fpcore", "scan", str(m), "--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr

    def no_constants(c):
        raise ValueError(f"non-standard JSON constant {c}")
    out = json.loads(r.stdout, parse_constant=no_constants)
    by = {Path(x["path"]).name: x for x in out["reports"]}
    assert all(x["error"] is None for x in by.values())
    assert by["nan.safetensors"]["verdict"]["relation"] == "unknown"
    assert by["inf.safetensors"]["verdict"]["relation"] == "unknown"
    assert [g["relation"] for g in out["groups"]] == ["same_weights"]
    assert sorted(Path(x).name for x in out["groups"][0]["paths"]) == ["base.safetensors", "base32.safetensors"]
