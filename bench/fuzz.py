"""Fuzz the safetensors header parser and the .ckpt reader with hypothesis.

    python bench/fuzz.py [--cases 10000] [--seed 0]

Each case writes a file made by mutating a valid one (bit flips, truncation, lying header
length, JSON-level changes to dtype/shape/offsets, huge numbers, JSON nested thousands deep,
random bytes, trailing junk; for .ckpt: bytes of the pickle, zip directory fields such as
version / compression method / flags, pickles whose dict contains itself or nests deep) and
runs the whole fingerprint pipeline on it. Allowed outcomes: a fingerprint, or an
fpcore.errors.FpError whose message is one line naming the file. Anything else (another
exception, more than MAX_SECONDS for one file: a SIGALRM interrupts a hang, memory growth
past MAX_RSS_GROWTH_MB) is a failure. Prints the outcome counts, the time per case (max,
median), the slowest case and the peak RSS. The same seed gives the same cases.
The tests run a smaller seeded set of the same cases (tests/test_robustness.py).
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import resource
import signal
import statistics
import struct
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, seed as hseed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import testkit  # noqa: E402
from fpcore.errors import FpError  # noqa: E402
from fpcore.identify import fingerprint_path  # noqa: E402

MAX_SECONDS = 2.0
MAX_RSS_GROWTH_MB = 300


def valid_safetensors() -> bytes:
    rng = np.random.default_rng(0)
    tensors = {"model.diffusion_model.input_blocks.0.0.weight": rng.standard_normal((8, 4, 3, 3)).astype(np.float32),
               "model.diffusion_model.out.2.bias": rng.standard_normal(4).astype(np.float32),
               "first_stage_model.decoder.conv_in.weight": rng.standard_normal((8, 4, 3, 3)).astype(np.float32)}
    buf = Path(tempfile.mkdtemp()) / "v.safetensors"
    testkit.write_safetensors(buf, tensors, {"model.diffusion_model.input_blocks.0.0.weight": "BF16",
                                           "model.diffusion_model.out.2.bias": "F8_E4M3",
                                           "first_stage_model.decoder.conv_in.weight": "F16"},
                            metadata={"modelspec.title": "fuzz"})
    return buf.read_bytes()


def valid_ckpt() -> bytes:
    rng = np.random.default_rng(1)
    tensors = {"model.diffusion_model.input_blocks.0.0.weight": rng.standard_normal((8, 4, 3, 3)).astype(np.float32),
               "model.diffusion_model.out.2.bias": rng.standard_normal(4).astype(np.float32)}
    buf = Path(tempfile.mkdtemp()) / "v.ckpt"
    testkit.write_torch_ckpt(buf, tensors, "F16")
    return buf.read_bytes()


JUNK = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=8), st.none(),
                 st.lists(st.integers(-2**64, 2**64), max_size=4), st.booleans())
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=20)

#: pickles a torch checkpoint never holds, but an attacker can write
#: (a dict that contains itself; dicts nested 5,000 deep)
CYCLIC_PICKLE = b"\x80\x02}q\x00X\x01\x00\x00\x00xh\x00s."
DEEP_PICKLE = b"\x80\x02" + b"}X\x01\x00\x00\x00x" * 5000 + b"}" + b"s" * 5000 + b"."


@st.composite
def safetensors_case(draw, base: bytes):
    kind = draw(st.sampled_from(["flip", "truncate", "length", "json", "random", "append", "json_raw", "nest",
                                 "json_random"]))
    data = bytearray(base)
    n = int.from_bytes(base[:8], "little")
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "length":
        data[:8] = struct.pack("<Q", draw(st.integers(0, 2**64 - 1)))
    elif kind == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    elif kind == "random":
        data = bytearray(draw(st.binary(max_size=512)))
    elif kind == "nest":      # JSON nested far past any real header: [[[[... or {"a":{"a":...
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        h = opener * depth + b"1" + closer * depth
        if draw(st.booleans()):   # inside __metadata__ instead of at the top
            h = b'{"__metadata__":' + h + b"}"
        data = bytearray(struct.pack("<Q", len(h)) + h + bytes(data[8 + n:]))
    elif kind == "json_random":   # any JSON value as the whole header, with a true length
        h = json.dumps(draw(JSON_VALUE)).encode()
        data = bytearray(struct.pack("<Q", len(h)) + h + bytes(data[8 + n:]))
    else:
        header = json.loads(bytes(data[8:8 + n]))
        key = draw(st.sampled_from(sorted(header)))
        if kind == "json_raw":
            header[key] = draw(JUNK)
        elif key != "__metadata__":
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            if field == "dtype":
                header[key]["dtype"] = draw(st.one_of(st.sampled_from(["F32", "F16", "BF16", "F8_E4M3", "I64", "U8",
                                                                        "BOOL", "F4", "Q8_0"]), JUNK))
            elif field == "shape":
                header[key]["shape"] = draw(st.one_of(st.lists(st.integers(-3, 2**40), max_size=5), JUNK))
            else:
                header[key]["data_offsets"] = draw(st.one_of(st.lists(st.integers(-10, 2**63), max_size=3), JUNK))
        h = json.dumps(header).encode()
        data = bytearray(struct.pack("<Q", len(h)) + h + bytes(data[8 + n:]))
    return bytes(data)


@st.composite
def ckpt_case(draw, base: bytes):
    kind = draw(st.sampled_from(["flip_pickle", "flip", "truncate", "random", "zipdir", "pickle"]))
    data = bytearray(base)
    if kind in ("flip_pickle", "flip"):
        lo, hi = (0, len(data) - 1)
        if kind == "flip_pickle":   # aim at the pickle, the part the restricted unpickler parses
            z = zipfile.ZipFile(io.BytesIO(base))
            info = z.getinfo("archive/data.pkl")
            lo = info.header_offset + 30 + len(info.filename)
            hi = lo + info.compress_size - 1
        for _ in range(draw(st.integers(1, 6))):
            i = draw(st.integers(lo, hi))
            data[i] = draw(st.integers(0, 255))
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "zipdir":     # a field of a central-directory entry: version, flags, method, sizes
        entries = [i for i in range(len(data)) if data[i:i + 4] == b"PK\x01\x02"]
        at = draw(st.sampled_from(entries))
        off, width = draw(st.sampled_from([(4, 2), (6, 2), (8, 2), (10, 2), (20, 4), (24, 4), (28, 2), (42, 4)]))
        value = draw(st.one_of(st.integers(0, 2 ** (8 * width) - 1), st.sampled_from([0, 1, 8, 12, 14, 99, 2 ** (8 * width) - 1])))
        data[at + off:at + off + width] = value.to_bytes(width, "little")
    elif kind == "pickle":     # a whole data.pkl replaced
        pkl = draw(st.sampled_from([CYCLIC_PICKLE, DEEP_PICKLE, b"", b"\x80\x02.", b"\x80\x02N."]))
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(base)) as zi, zipfile.ZipFile(out, "w") as zo:
            for info in zi.infolist():
                zo.writestr(info, pkl if info.filename.endswith("data.pkl") else zi.read(info))
        data = bytearray(out.getvalue())
    else:
        data = bytearray(b"PK\x03\x04" + draw(st.binary(max_size=512)))
    return bytes(data)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def check_file(path: Path) -> str:
    """Run the pipeline on one file; return the outcome, or raise AssertionError.
    A case still running after MAX_SECONDS is interrupted (SIGALRM) and fails."""
    t = time.perf_counter()
    use_alarm = hasattr(signal, "setitimer")
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, MAX_SECONDS)
    try:
        fingerprint_path(path)
        outcome = "fingerprinted"
    except Hang:
        raise AssertionError(f"{path}: still running after {MAX_SECONDS} s (hang)") from None
    except FpError as e:
        msg = str(e)
        assert "\n" not in msg, f"multi-line error: {msg!r}"
        assert str(path) in msg, f"error does not name the file: {msg!r}"
        outcome = type(e).__name__
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    dt = time.perf_counter() - t
    assert dt < MAX_SECONDS, f"{path}: took {dt:.2f} s"
    return outcome


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(cases: int, seed: int, workdir: Path, report=print) -> dict:
    """Run ``cases`` safetensors and ``cases // 4`` ckpt cases; returns the statistics."""
    stats = {"outcomes": collections.Counter(), "max_seconds": 0.0, "slowest": None, "cases": 0, "times": []}
    rss0 = rss_mb()
    bases = {"safetensors": valid_safetensors(), "ckpt": valid_ckpt()}

    def one(ext: str, data: bytes):
        p = workdir / f"case{stats['cases'] % 16}.{ext}"
        p.write_bytes(data)
        t = time.perf_counter()
        outcome = check_file(p)
        dt = time.perf_counter() - t
        stats["cases"] += 1
        stats["times"].append(dt)
        stats["outcomes"][f"{ext}: {outcome}"] += 1
        if dt > stats["max_seconds"]:
            stats["max_seconds"], stats["slowest"] = dt, data[:64]
        assert rss_mb() - rss0 < MAX_RSS_GROWTH_MB, f"RSS grew by {rss_mb() - rss0:.0f} MB"

    common = settings(max_examples=cases, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))

    @hseed(seed)
    @common
    @given(safetensors_case(bases["safetensors"]))
    def fuzz_st(data):
        one("safetensors", data)

    @hseed(seed + 1)
    @settings(max_examples=max(1, cases // 4), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(ckpt_case(bases["ckpt"]))
    def fuzz_ckpt(data):
        one("ckpt", data)

    t = time.perf_counter()
    fuzz_st()
    fuzz_ckpt()
    stats["seconds"] = time.perf_counter() - t
    stats["median_seconds"] = statistics.median(stats["times"])
    stats["peak_rss_mb"] = rss_mb()
    stats["rss_growth_mb"] = rss_mb() - rss0
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000, help="safetensors cases (ckpt: a quarter of it)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        s = run(args.cases, args.seed, Path(d))
    print(f"seed {args.seed}: {s['cases']} cases in {s['seconds']:.0f} s; per case: median "
          f"{s['median_seconds'] * 1000:.2f} ms, max {s['max_seconds'] * 1000:.1f} ms; "
          f"peak RSS {s['peak_rss_mb']:.0f} MB (grew {s['rss_growth_mb']:.0f} MB)")
    print(f"slowest case starts with {s['slowest'][:32]!r}")
    print("\n| outcome | cases |\n|---|---|")
    for k, v in sorted(s["outcomes"].items()):
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
