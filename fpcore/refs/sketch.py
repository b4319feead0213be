"""A compact sketch of a fingerprint: one fixed-length vector per component, and nearest
neighbours among sketches (plain numpy).

The sampled values of every weight tensor (2-D and up) of a component are centred and
scaled to unit RMS per tensor, then summed into ``SKETCH_DIM`` buckets by a count sketch:
element ``i`` of the tensor named ``k`` goes to a bucket and gets a sign that depend only on
``(k, i)`` (a seeded hash), so the same tensor in two files lands in the same buckets whatever
else the files hold, and tensors one file lacks only add noise. The dot product of two
sketches estimates the dot product of the full normalised samples (Johnson–Lindenstrauss: the
distances between files are kept to within a few per cent), so the files nearest to one file
by sketch are, with a few spares, the files nearest by the full comparison.

A sketch costs one pass over the sample (about a millisecond per file); comparing n files
is an n×n product of ``SKETCH_DIM`` columns instead of n² full comparisons. Used for the
peers of a file in a folder scan (fpcore.scan) and meant for an index of many references.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np

#: buckets per sketch: distances kept to about sqrt(2 / 1024) = 4 % (a power of two: see _buckets)
SKETCH_DIM = 1024
#: bump when the sketch changes (stored sketches of another version are recomputed)
SKETCH_VERSION = 1
#: a tensor whose sampled values vary less than this (relative to their mean) is constant: left out
FLAT_TENSOR = 1e-12


@lru_cache(maxsize=65536)
def _key_params(key: str) -> tuple[int, int, int]:
    """(first bucket, odd bucket stride, sign seed) of tensor ``key``: a seeded hash of its name."""
    d = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=12, person=b"fpsketch").digest()
    a, b, c = (int.from_bytes(d[i:i + 4], "little") for i in (0, 4, 8))
    return a % SKETCH_DIM, (b % SKETCH_DIM) | 1, c


def _signs(seed: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """±1 per element from (tensor seed, position): a 32-bit integer hash (xorshift-multiply)."""
    x = (seed.astype(np.uint64) * np.uint64(0x9E3779B1) + pos.astype(np.uint64) * np.uint64(0x85EBCA77)) \
        & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(12)
    return np.where(x & np.uint64(1), 1.0, -1.0)


#: layouts (key list and sample counts) whose bucket and sign arrays are kept: a folder or a
#: library holds a few architectures, and every file of one shares its layout
PROJECTION_CACHE = 8
_projections: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = OrderedDict()
_projections_lock = threading.Lock()


def _projection(keys: tuple, counts: bytes, v) -> tuple[np.ndarray, np.ndarray]:
    """(bucket, sign) of every sampled element of a view with these keys and counts."""
    key = (keys, counts)
    with _projections_lock:
        hit = _projections.get(key)
        if hit is not None:
            _projections.move_to_end(key)
            return hit
    params = np.array([_key_params(k) for k in keys], np.int64)
    pos = np.arange(len(v.tid)) - v.offs[v.tid]          # element index inside its tensor's sample
    bucket = (params[v.tid, 0] + pos * params[v.tid, 1]) % SKETCH_DIM
    out = (bucket, _signs(params[v.tid, 2], pos))
    with _projections_lock:
        _projections[key] = out
        while len(_projections) > PROJECTION_CACHE:
            _projections.popitem(last=False)
    return out


def sketch(fp, comp: str, dim: int = SKETCH_DIM) -> np.ndarray:
    """Unit vector (float32, length ``dim``) for component ``comp`` of fingerprint ``fp``;
    all zeros when the component has no sampled weight tensor with finite, varying values."""
    if dim != SKETCH_DIM:
        raise ValueError(f"sketch dimension is fixed at {SKETCH_DIM}")
    out = np.zeros(dim, np.float64)
    v = fp.view(comp, min_ndim=2)
    if not len(v.keys):
        return out.astype(np.float32)
    vals = v.vals.astype(np.float64)
    ok = np.isfinite(vals)
    vals = np.where(ok, vals, 0.0)
    n = np.bincount(v.tid, weights=ok, minlength=len(v.keys))
    s1 = np.bincount(v.tid, weights=vals, minlength=len(v.keys))
    mean = s1 / np.maximum(n, 1)
    x = np.where(ok, vals - mean[v.tid], 0.0)
    ss = np.bincount(v.tid, weights=x * x, minlength=len(v.keys))
    rms = np.sqrt(ss / np.maximum(n, 1))
    live = (n >= 2) & (rms > FLAT_TENSOR * (np.abs(mean) + 1.0))
    if not live.any():
        return out.astype(np.float32)
    x = x / np.where(live, rms, 1.0)[v.tid]
    x[~live[v.tid]] = 0.0
    bucket, signs = _projection(tuple(v.keys), v.counts.tobytes(), v)
    out = np.bincount(bucket, weights=x * signs, minlength=dim)
    norm = np.linalg.norm(out)
    return (out / norm if norm > 0 else out).astype(np.float32)


def sketch_matrix(fps: list, comp: str) -> np.ndarray:
    """One sketch per fingerprint, as the rows of a (len(fps), SKETCH_DIM) matrix."""
    if not fps:
        return np.zeros((0, SKETCH_DIM), np.float32)
    return np.stack([sketch(fp, comp) for fp in fps])


def nearest(matrix: np.ndarray, vec: np.ndarray, k: int, exclude: int | None = None) -> np.ndarray:
    """Row indices of the ``k`` rows of ``matrix`` nearest to ``vec`` (largest dot product of the
    unit sketches: smallest distance), nearest first; ``exclude``: a row to leave out (``vec`` itself).
    Rows that are all zeros (nothing to compare) are never returned."""
    m = np.asarray(matrix, np.float32)
    if m.ndim != 2 or m.shape[0] == 0 or k <= 0:
        return np.zeros(0, np.int64)
    sims = m @ np.asarray(vec, np.float32)
    sims[~np.any(m != 0, axis=1)] = -np.inf
    if exclude is not None and 0 <= exclude < len(sims):
        sims[exclude] = -np.inf
    k = min(k, int(np.isfinite(sims).sum()))
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-sims, k - 1)[:k]
    return part[np.argsort(-sims[part], kind="stable")].astype(np.int64)


def nearest_all(matrix: np.ndarray, k: int, block: int = 1024) -> list[np.ndarray]:
    """``nearest(matrix, row i, k, exclude=i)`` for every row, in blocks of rows (memory stays
    at ``block`` × rows floats)."""
    m = np.asarray(matrix, np.float32)
    out: list[np.ndarray] = []
    live = np.any(m != 0, axis=1)
    for s in range(0, m.shape[0], block):
        sims = m[s:s + block] @ m.T
        sims[:, ~live] = -np.inf
        for j in range(sims.shape[0]):
            row = sims[j]
            row[s + j] = -np.inf
            kk = min(k, int(np.isfinite(row).sum()))
            if kk <= 0 or not live[s + j]:
                out.append(np.zeros(0, np.int64))
                continue
            part = np.argpartition(-row, kk - 1)[:kk]
            out.append(part[np.argsort(-row[part], kind="stable")].astype(np.int64))
    return out


__all__ = ["SKETCH_DIM", "SKETCH_VERSION", "sketch", "sketch_matrix", "nearest", "nearest_all"]
