"""In-memory fingerprints for unit tests of the matching engine (no files)."""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from fpcore import dtypes
from fpcore.fingerprint import Fingerprint, _h64, run_length, run_start
from testkit.weights import DTYPES as NP_DTYPES

Ref = namedtuple("Ref", "name fp")


class Tree:
    """The reference tree interface match.analyse uses (RefDB's parent/orphan)."""

    def __init__(self, parents: dict, orphans=()):
        self.parents, self.orphans = parents, set(orphans)

    def parent(self, name):
        p = self.parents.get(name)
        return p if p in self.parents else None

    def orphan(self, name):
        return name in self.orphans


def make_fp(tensors: dict, dtype: str = "F16") -> Fingerprint:
    """Fingerprint of ``{canonical key: array}`` (or ``{key: (array, dtype)}``), sampled as a
    file would be: the same run positions, values stored in the tensor's dtype."""
    keys = sorted(tensors)
    raws, counts, shapes, dts, h_raw, h_val = [], [], [], [], [], []
    for k in keys:
        v = tensors[k]
        a, dt = v if isinstance(v, tuple) else (v, dtype)
        a = np.asarray(a)
        n = run_length(a.shape)
        s = run_start(k, a.shape, n)
        flat = np.asarray(a, np.float64).reshape(-1)[s:s + n]
        # round straight from the master values (float64 -> float32 is exact for test values)
        raw = flat.astype(np.float32).astype(NP_DTYPES[dt]).tobytes()
        raws.append(raw)
        counts.append(n)
        shapes.append(tuple(a.shape))
        dts.append(dt)
        h_raw.append(_h64(raw))
        h_val.append(_h64(dtypes.decode(raw, dt).tobytes()))
    return Fingerprint(keys=keys, shapes=shapes, dtypes=dts, counts=np.array(counts, np.int32), raw=b"".join(raws),
                       h_raw=np.array(h_raw, np.uint64), h_val=np.array(h_val, np.uint64),
                       info={"tensor_bytes": 0})


def weights(seed: int, n: int = 24, shape=(64, 64), prefix="unet:input_blocks", scale=0.05) -> dict:
    """``n`` random 2-D weights (and a bias each) in float64, keys under ``prefix``."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        out[f"{prefix}.{i}.0.weight"] = rng.normal(0, scale, shape)
        out[f"{prefix}.{i}.0.bias"] = rng.normal(0, scale, shape[0])
    return out


def finetune(sd: dict, strength: float, seed: int, shared: dict | None = None, rho: float = 0.06) -> dict:
    """A dense fine-tune: each tensor moved by ``strength`` of its RMS, partly along a
    direction every fine-tune shares (``shared``, cosine ~``rho`` between siblings)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, w in sd.items():
        d = rng.normal(0, 1, w.shape)
        if shared is not None:
            d = np.sqrt(1 - rho) * d + np.sqrt(rho) * shared[k]
        out[k] = w + strength * np.sqrt(np.mean(w * w)) * d
    return out


def shared_direction(sd: dict, seed: int = 777) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 1, w.shape) for k, w in sd.items()}


def dare_average(family: dict, seed: int = 8, keep: float = 0.1) -> dict:
    """DARE on Base: each of A's and B's own trainings with all but ``keep`` of its elements
    dropped and the rest rescaled by 1 / keep, averaged onto Base."""
    base, rng = family["Base"], np.random.default_rng(seed)
    out = {}
    for k in base:
        da, db = family["A"][k] - base[k], family["B"][k] - base[k]
        drop = lambda d: np.where(rng.random(d.shape) < keep, d / keep, 0.0)  # noqa: E731
        out[k] = base[k] + 0.5 * drop(da) + 0.5 * drop(db)
    return out
