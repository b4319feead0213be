"""Lineage operations on state dicts: fine-tunes, baked LoRAs, merges (bench/zoo.py, tests)."""
from __future__ import annotations

import math
import zlib

import numpy as np

from fpcore import layout

SHARED_RHO = 0.25        # weight of the shared direction: sibling delta cosine ~ 0.25^2 = 0.06
COMMON_SEED = 424242


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def is_weight(v: np.ndarray) -> bool:
    return v.dtype == np.float32


def finetune(sd: dict, strength: float, seed: int, comps=("unet",), rho: float = SHARED_RHO,
             only: str | None = None) -> dict:
    """Dense fine-tune: relative RMS change ``strength`` per tensor, part of it shared.
    ``only``: a regex; only the tensors whose key it finds are changed (e.g. attention projections)."""
    import re
    rx = re.compile(only) if only else None
    out = {}
    for k, w in sd.items():
        if (not is_weight(w) or layout.canonical(k)[0] not in comps or w.size == 0
                or (rx is not None and not rx.search(k))):
            out[k] = w
            continue
        rms = float(np.sqrt(np.mean(w * w))) or 1.0
        g = _rng(seed, k).standard_normal(w.shape).astype(np.float32)
        c = _rng(COMMON_SEED, k).standard_normal(w.shape).astype(np.float32)
        shared = (c - w / rms) / math.sqrt(2.0)        # common data direction + weight decay
        d = math.sqrt(1 - rho * rho) * g + rho * shared
        d *= strength * rms / (float(np.sqrt(np.mean(d * d))) or 1.0)
        out[k] = w + d
    return out


def bake_lora(sd: dict, rank: int, strength: float, seed: int) -> dict:
    """W + B A on every 2-D / conv weight of the UNet's attention and feed-forward layers."""
    out = dict(sd)
    for k, w in sd.items():
        if not is_weight(w) or w.ndim < 2 or layout.canonical(k)[0] != "unet":
            continue
        if not any(s in k for s in ("attn1", "attn2", ".ff.", "proj_in", "proj_out")):
            continue
        m = w.reshape(w.shape[0], -1)
        r = _rng(seed, k)
        B = r.standard_normal((m.shape[0], rank)).astype(np.float32)
        A = r.standard_normal((rank, m.shape[1])).astype(np.float32)
        d = B @ A
        d *= strength * float(np.sqrt(np.mean(m * m))) / (float(np.sqrt(np.mean(d * d))) or 1.0)
        out[k] = (m + d).reshape(w.shape)
    return out


def merge(parts: list[tuple[dict, float]], block_weights: dict[str, list[float]] | None = None) -> dict:
    """Weighted sum; with ``block_weights`` {group: [w per part]} UNet blocks get their own weights."""
    first = parts[0][0]
    out = {}
    for k in first:
        if not is_weight(first[k]):
            out[k] = first[k]
            continue
        ws = [w for _, w in parts]
        if block_weights:
            g = layout.block_of(layout.canonical_key(k))
            if g in block_weights:
                ws = block_weights[g]
        out[k] = sum(w * sd[k] for (sd, _), w in zip(parts, ws))
    return out


def unet_only(sd: dict) -> dict:
    return {k[len("model.diffusion_model."):]: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}


def ties_merge(base: dict, models: list[dict], density: float = 0.2, lam: float = 1.0) -> dict:
    """TIES merge (trim to the top ``density`` of each delta, elect signs, disjoint mean)."""
    out = {}
    for k, b in base.items():
        if not is_weight(b) or b.size == 0:
            out[k] = b
            continue
        ds = []
        for m in models:
            d = m[k] - b
            if d.size > 1:
                cut = np.quantile(np.abs(d), 1 - density)
                d = np.where(np.abs(d) >= cut, d, 0)
            ds.append(d)
        D = np.stack(ds)
        sign = np.sign(D.sum(0))
        agree = (np.sign(D) == sign) & (D != 0)
        n = np.maximum(agree.sum(0), 1)
        out[k] = b + lam * (np.where(agree, D, 0).sum(0) / n)
    return out


def dare_merge(base: dict, models: list[tuple[dict, float]], drop: float = 0.9, seed: int = 0) -> dict:
    """DARE: drop each delta element with probability ``drop``, rescale the rest, weighted sum."""
    out = {}
    for k, b in base.items():
        if not is_weight(b) or b.size == 0:
            out[k] = b
            continue
        acc = b.copy()
        for i, (m, w) in enumerate(models):
            keep = _rng(seed + i, k).random(b.shape) >= drop
            acc = acc + w * np.where(keep, (m[k] - b) / (1 - drop), 0)
        out[k] = acc
    return out
