"""The dtype rounding helpers, on golden values."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from fpcore import dtypes


def test_decode_little_endian_and_all_float_types():
    assert dtypes.decode(np.array([1.5, -2.0], "<f2").tobytes(), "F16").tolist() == [1.5, -2.0]
    assert dtypes.decode(np.array([1.5], ml_dtypes.bfloat16).tobytes(), "BF16").tolist() == [1.5]
    assert dtypes.decode(bytes([0x38]), "F8_E4M3").tolist() == [1.0]          # 0 0111 000
    assert dtypes.decode(bytes([0x3C]), "F8_E5M2").tolist() == [1.0]          # 0 01111 00
    assert dtypes.decode(np.array([1e300], "<f8").tobytes(), "F64").tolist() == [np.inf]


@pytest.mark.parametrize("dt, x, want", [
    ("F16", 1.0 + 2.0 ** -11, 1.0),                 # tie -> even
    ("F16", 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -9),  # tie -> even (up)
    ("BF16", 1.0 + 2.0 ** -8, 1.0),
    ("BF16", 1.0 + 2.0 ** -8 + 2.0 ** -20, 1.0078125),
    ("F8_E4M3", 1.0625, 1.0),
    ("F8_E4M3", 1.1875, 1.25),
    ("F8_E4M3", 440.0, 448.0),                     # spacing 32 at the top of the range
    ("F8_E5M2", 1.125, 1.0),
    ("F32", 1.0 + 2.0 ** -30, 1.0),
])
def test_quantize_round_to_nearest_even(dt, x, want):
    assert float(dtypes.quantize(np.array([x], np.float32), dt)[0]) == want


def test_coarser():
    assert dtypes.coarser("F16", "BF16") == "BF16"
    assert dtypes.coarser("F32", "F8_E4M3") == "F8_E4M3"
    assert dtypes.coarser("F8_E5M2", "F8_E4M3") == "F8_E5M2"
    assert dtypes.coarser("F16", "F16") == "F16"


def test_rounding_var_is_spacing_squared_over_12():
    v = dtypes.rounding_var(np.array([1.0, 1.5, 3.0, 0.0]), "F16")
    assert v[0] == 2.0 ** -20 / 12 and v[1] == 2.0 ** -20 / 12 and v[2] == 2.0 ** -18 / 12
    assert v[3] < 1e-60
    assert dtypes.rounding_var(np.array([1.0]), "F8_E4M3")[0] == 2.0 ** -6 / 12
    assert np.all(dtypes.rounding_var(np.array([1.0, 7.0]), "F32") == 0)


def test_same_after_rounding_precision_and_ties():
    f16 = np.array([1.0625, 1.0625, 1.0625 - 2 ** -10, 0.5], np.float32)
    f8 = np.array([1.0, 1.125, 1.125, 0.5], np.float32)
    # fp8(1.0625) = 1.0 (tie to even); 1.125 is the other neighbour of a tie (double rounding);
    # 1.0615 rounds to 1.0, so 1.125 is another weight
    assert dtypes.same_after_rounding(f16, "F16", f8, "F8_E4M3").tolist() == [True, True, False, True]
    assert dtypes.same_after_rounding(f8, "F8_E4M3", f16, "F16").tolist() == [True, True, False, True]
    # same dtype: only equal values (NaN equals NaN)
    a = np.array([1.0, np.nan, 2.0], np.float32)
    assert dtypes.same_after_rounding(a, "F16", np.array([1.0, np.nan, 2.001], np.float32), "F16").tolist() == \
        [True, True, False]


def test_tie_rule_needs_an_exact_midpoint():
    fine = np.array([1.0 + 2 ** -8, 1.0 + 2 ** -8 + 2 ** -10], np.float32)     # fp16 values; bf16 spacing 2^-7
    other = np.array([1.0078125, 1.0078125], np.float32)
    assert dtypes._tie_ok(fine, other, "BF16").tolist() == [True, False]


def test_rounding_interval_and_scaled_consistency():
    lo, hi = dtypes.rounding_interval(np.array([1.0, -1.0, 1.5]), "F16")
    assert lo.tolist() == [1 - 2 ** -12, -1 - 2 ** -11, 1.5 - 2 ** -11]     # below a power of two: nearer
    assert hi.tolist() == [1 + 2 ** -11, -1 + 2 ** -12, 1.5 + 2 ** -11]
    # scaled fp8: fp8(w / s) * s against fp16(w), w = 1.0625 s + a hair: the fp8 tie double rounding
    s = 0.01
    w = np.float64(1.0625 + 2 ** -20) * s
    f8 = np.array([float(ml_dtypes.float8_e4m3fn(np.float32(w / s)))], np.float32)
    ref = np.array([np.float16(w)], np.float32)
    assert dtypes.could_be_same(f8, "F8_E4M3", s, ref, "F16", 1.0).tolist() == [True]
    # one fp8 step off is another weight; neighbouring fp16 values never overlap
    assert dtypes.could_be_same(f8 + 0.125, "F8_E4M3", s, ref, "F16", 1.0).tolist() == [False]
    a = np.array([1.0, 1.0], np.float32)
    assert dtypes.could_be_same(a, "F16", 1.0, np.array([1 + 2 ** -10, 1 - 2 ** -11], np.float32), "F16",
                                1.0).tolist() == [False, False]


def test_storage_label_by_bytes():
    assert dtypes.storage_label([("F16", 10), ("F8_E4M3", 100)]) == "fp8_e4m3"
    assert dtypes.storage_label([("F16", 100), ("F8_E4M3", 150)]) == "fp16"          # bytes, not counts
    assert dtypes.storage_label([("F16", 10), ("F8_E4M3", 100), ("F32", 1)], scaled=True) == "fp8 (e4m3, scaled)"
    assert dtypes.storage_label([("F16", 10_000), ("Q8_0", 3200), ("Q4_0", 320)]) == "Q8_0"
    assert dtypes.storage_bytes("Q8_0", 64) == 68 and dtypes.storage_bytes("BF16", 3) == 6


# --- the numpy-only decoding and rounding against ml_dtypes, the other implementation -------------

ML = {"BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2}


def _same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal as values, NaN where NaN, and the same sign of zero."""
    both_nan = np.isnan(got) & np.isnan(want)
    eq = (got == want) & (np.signbit(got) == np.signbit(want))
    return bool(np.all(both_nan | eq))


@pytest.mark.parametrize("dt", ["BF16", "F8_E4M3", "F8_E5M2"])
def test_decode_every_bit_pattern_as_ml_dtypes(dt):
    width = np.dtype(ML[dt]).itemsize
    codes = np.arange(1 << (8 * width), dtype="<u2" if width == 2 else "u1")
    want = codes.view(ML[dt]).astype(np.float32)
    assert _same_bits(dtypes.decode(codes.tobytes(), dt), want)


def _float32_probe() -> np.ndarray:
    """Every fp16 value, every bf16 value and its midpoints to both neighbours, 2^20 random bit
    patterns, and the edges of each fp8 range."""
    rng = np.random.default_rng(0)
    f16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    bf = (np.arange(1 << 16, dtype=np.uint32) << 16)
    mids = np.concatenate([bf + 0x8000, bf - 0x8000, bf + 0x7FFF, bf + 0x8001]).astype(np.uint32).view(np.float32)
    rand = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([448, 456, 464, 464.01, 470, 480, 500, 57344, 61439, 61440, 61441, 65536, 1e9,
                      np.inf, -np.inf, np.nan, 0.0, -0.0, 2.0 ** -9, 2.0 ** -10, 2.0 ** -17, 2.0 ** -16,
                      3 * 2.0 ** -17, 1e-30], np.float32)
    return np.concatenate([f16, bf.view(np.float32), mids, rand, edges, -edges])


@pytest.mark.parametrize("dt", ["BF16", "F8_E4M3", "F8_E5M2", "F16"])
def test_quantize_as_ml_dtypes_on_millions_of_float32(dt):
    x = _float32_probe()
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(ML.get(dt, np.float16)).astype(np.float32)
    got = dtypes.quantize(x, dt)
    bad = ~(np.isnan(got) & np.isnan(want)) & ~((got == want) & (np.signbit(got) == np.signbit(want)))
    assert not bad.any(), list(zip(x[bad][:5].tolist(), got[bad][:5].tolist(), want[bad][:5].tolist()))
