"""Reference libraries of thousands, made in fingerprint space (bench/refs_scale.py, tests).

fpcore compares models only through their fingerprints: the header plus one sampled run
per tensor. A library of 1,000 or 10,000 references is therefore made from the sampled
values directly: a fine-tune or a merge is applied to the sampled runs (the statistics of
``testkit.lineage``: per-tensor relative strength, a direction shared by all fine-tunes) and
encoded exactly as ``fingerprint_source`` would encode a file holding those values. Writing
and reading 1,000 checkpoints would measure the disk, not the library.

The files to identify are real safetensors files: a full state dict whose sampled runs hold
the query's values (``write_model``), so their fingerprints come out of the normal reader.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fpcore import dtypes, layout
from fpcore.fingerprint import Fingerprint, _h64, run_start

from .lineage import COMMON_SEED, SHARED_RHO
from .safetensors_writer import write_safetensors
from .sd import checkpoint_spec
from .weights import DTYPES as NP_DTYPES, random_state_dict


def _fingerprint(sd: dict) -> Fingerprint:
    from fpcore.identify import fingerprint_open
    from fpcore.sources.memory import MemorySource
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in sd.items()}
    with MemorySource(half, "<template>", {}) as src:
        fp, a, _, _ = fingerprint_open(src)
    return fp


class Space:
    """The sampled positions of one layout: flat float32 vectors <-> fingerprints and files."""

    def __init__(self, family: str, size: str = "tiny", seed: int = 1, sd: dict | None = None):
        self.family = family
        self.sd = sd if sd is not None else random_state_dict(checkpoint_spec(family, size), seed)
        self.fp = _fingerprint(self.sd)
        fp = self.fp
        fp.values(0)
        self.offs = fp._offs
        self.base = fp._vals.astype(np.float32).copy()
        n = len(fp.keys)
        self.tid = np.repeat(np.arange(n), np.diff(self.offs))
        self.isfloat = np.array([dtypes.DTYPES[d].is_float for d in fp.dtypes], bool)
        self.comp = np.array([layout.split(k)[0] for k in fp.keys], object)
        self._common = None

    def mask(self, comps) -> np.ndarray:
        t = self.isfloat & np.isin(self.comp, list(comps))
        return t[self.tid]

    def common(self) -> np.ndarray:
        if self._common is None:
            self._common = np.random.default_rng(COMMON_SEED).standard_normal(len(self.base)).astype(np.float32)
        return self._common

    def _rms(self, v: np.ndarray) -> np.ndarray:
        n = np.maximum(np.diff(self.offs), 1)
        return np.sqrt(np.bincount(self.tid, weights=v.astype(np.float64) ** 2, minlength=len(n)) / n)

    def finetune(self, v: np.ndarray, strength: float, seed: int, comps=("unet",), rho: float = SHARED_RHO):
        """testkit.lineage.finetune on the sampled values: per tensor a change of relative RMS
        ``strength``, with the shared direction every fine-tune has."""
        rms = self._rms(v)
        rms[rms == 0] = 1.0
        g = np.random.default_rng([seed, 77]).standard_normal(len(v)).astype(np.float32)
        shared = (self.common() - v / rms[self.tid]) / math.sqrt(2.0)
        d = math.sqrt(1 - rho * rho) * g + rho * shared
        drms = self._rms(d)
        drms[drms == 0] = 1.0
        d = d * (strength * rms / drms)[self.tid].astype(np.float32)
        return np.where(self.mask(comps), v + d, v).astype(np.float32)

    @staticmethod
    def merge(parts: list[tuple[np.ndarray, float]]) -> np.ndarray:
        return sum(w * v for v, w in parts).astype(np.float32)

    def fingerprint(self, v: np.ndarray) -> Fingerprint:
        """The fingerprint of a file whose sampled values are ``v`` (stored as the template's dtype)."""
        t = self.fp
        raws, hr, hv = [], [], []
        pos = 0
        for i, (dt, n) in enumerate(zip(t.dtypes, t.counts)):
            nb = int(n) * dtypes.DTYPES[dt].itemsize
            if self.isfloat[i] and n:
                b = v[self.offs[i]:self.offs[i + 1]].astype(NP_DTYPES[dt]).tobytes()
            else:
                b = t.raw[pos:pos + nb]
            pos += nb
            raws.append(b)
            hr.append(_h64(b))
            hv.append(_h64(dtypes.decode(b, dt).tobytes()) if n else _h64(b""))
        return Fingerprint(keys=list(t.keys), shapes=list(t.shapes), dtypes=list(t.dtypes), counts=t.counts.copy(),
                           raw=b"".join(raws), h_raw=np.array(hr, np.uint64), h_val=np.array(hv, np.uint64),
                           format="safetensors", info=dict(t.info, family=self.family))

    def state_dict(self, v: np.ndarray) -> dict:
        """A full state dict (float32) whose sampled runs hold ``v``."""
        out = {}
        idx = self.fp.index
        for k, w in self.sd.items():
            ck = layout.canonical_key(k)
            i = idx.get(ck)
            if i is None or not self.isfloat[i] or w.dtype != np.float32 or not self.fp.counts[i]:
                out[k] = w
                continue
            n = int(self.fp.counts[i])
            flat = w.reshape(-1).copy()
            s = run_start(ck, tuple(w.shape), n)
            flat[s:s + n] = v[self.offs[i]:self.offs[i + 1]]
            out[k] = flat.reshape(w.shape)
        return out

    def write_model(self, path, v: np.ndarray, dtype: str = "F16") -> None:
        write_safetensors(path, self.state_dict(v), dtype)


@dataclass
class Library:
    """refs: (name, parent, family, fingerprint) in registration order (parents first)."""
    refs: list = field(default_factory=list)
    values: dict = field(default_factory=dict)     # name -> sampled values kept for queries
    hub: str = ""
    siblings: list = field(default_factory=list)   # children of the hub


def build_library(n: int, space: Space, keep: int = 8, seed: int = 0, sd1: int = 4, unknown: int = 4,
                  each=None) -> Library:
    """A tree three levels deep of ``n`` references (SDXL layout of ``space``), plus ``sd1``
    SD1.5 and ``unknown`` unknown-architecture ones:

        SDXL Base ── Line-0 (the hub: half of the second level) ── Sib-… ── Grand-…
                  └─ Line-1 … Line-k ── Sib-…

    ``each(name, parent, family, fp)`` is called per reference (e.g. to register it) instead
    of keeping every fingerprint in ``refs`` (10,000 do not fit comfortably in memory).
    The values of the base, the hub and the first ``keep`` siblings are kept for queries."""
    lib = Library()

    def emit(name, parent, family, fp):
        if each is not None:
            each(name, parent, family, fp)
        else:
            lib.refs.append((name, parent, family, fp))

    n_sdxl = max(3, n - sd1 - unknown)
    n1 = max(2, n_sdxl // 40)
    n3 = n_sdxl // 20
    n2 = max(1, n_sdxl - 1 - n1 - n3)
    base = space.base
    lib.values["SDXL Base"] = base
    emit("SDXL Base", None, space.family, space.fingerprint(base))
    lines = []
    for i in range(n1):
        v = space.finetune(base, 0.3, seed + 1000 + i, comps=("unet", "clip_l", "clip_g"))
        name = f"Line-{i}"
        lines.append((name, v))
        emit(name, "SDXL Base", space.family, space.fingerprint(v))
    lib.hub = lines[0][0]
    lib.values[lib.hub] = lines[0][1]
    sib_vals = []
    for j in range(n2):
        li = 0 if j % 2 == 0 else 1 + (j // 2) % max(1, n1 - 1)
        pname, pv = lines[min(li, n1 - 1)]
        strength = 0.05 + 0.05 * ((j * 7919) % 100) / 100
        v = space.finetune(pv, strength, seed + 100000 + j)
        name = f"Sib-{j}"
        if pname == lib.hub:
            lib.siblings.append(name)
            if len(lib.siblings) <= keep:
                lib.values[name] = v
        if j < n3:
            sib_vals.append((name, v))
        emit(name, pname, space.family, space.fingerprint(v))
    for g in range(n3):
        pname, pv = sib_vals[g % len(sib_vals)]
        v = space.finetune(pv, 0.03, seed + 200000 + g)
        emit(f"Grand-{g}", pname, space.family, space.fingerprint(v))
    if sd1:
        s1 = Space("sd1", seed=seed + 5)
        emit("SD1.5 Base", None, "sd1", s1.fingerprint(s1.base))
        for i in range(sd1 - 1):
            emit(f"SD1-FT-{i}", "SD1.5 Base", "sd1", s1.fingerprint(s1.finetune(s1.base, 0.1, seed + 300000 + i)))
    if unknown:
        spec = {f"blocks.{b}.{p}.weight": (48, 48) for b in range(12) for p in ("a", "b")}
        u = Space("unknown", sd=random_state_dict(spec, seed + 7))
        emit("Unknown-Arch Base", None, "unknown", u.fingerprint(u.base))
        for i in range(unknown - 1):
            emit(f"Unknown-FT-{i}", "Unknown-Arch Base", "unknown",
                 u.fingerprint(u.finetune(u.base, 0.1, seed + 400000 + i, comps=(u.comp[0],))))
    return lib
