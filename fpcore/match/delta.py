"""What a derivative changed, and the health of the sampled values.

``difference``: from the sampled values the verdict already compares, where the difference
between a file and its base lies: the share per component, per UNet/DiT block group, and
in attention projections. A tensor's sampled squared difference (beyond the rounding of the
two precisions) is scaled to the whole tensor (times its size over its sample count), so a
share is a share of the estimated squared difference of the whole weights.

``health``: tensors whose sampled values hold NaN, Inf, or are all zero.

Which keys are attention projections, and which block group a key belongs to, are tables.
"""
from __future__ import annotations

import functools
import math
import re

import numpy as np

from .. import layout
from .align import common

#: attention projections (query, key, value, output) of every layout fpcore reads, on canonical keys
ATTENTION_KEYS = re.compile(
    r"\.attn[12]\.to_(q|k|v|out\.0)\.(weight|bias)$"                   # LDM UNet (SD1/SD2/SDXL)
    r"|\.self_attn\.(q|k|v|out)_proj\.(weight|bias)$"                    # HF CLIP text encoders
    r"|\.attn\.(in_proj_weight|in_proj_bias|out_proj\.(weight|bias))$"  # open_clip (SD2 / SDXL bigG)
    r"|\.(SelfAttention|EncDecAttention)\.(q|k|v|o)\.weight$"            # T5
    r"|\.(img_attn|txt_attn)\.(qkv|proj)\.(weight|bias)$"                # Flux double blocks
    r"|\.attn\.(qkv|proj|to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)\.(weight|bias)$"
    r"|\.(self_attn|cross_attn|attention|attn1|attn2)\.(q|k|v|o|qkv|wq|wk|wv|wo|to_q|to_k|to_v|to_out\.0)"
    r"\.(weight|bias)$"                                                  # other DiTs (Wan, Lumina, PixArt ...)
    r"|\.attn_1\.(q|k|v|proj_out)\.(weight|bias)$")                      # VAE mid-block attention
#: the layers a LoRA trainer targets by default beyond the attention projections: the UNet's
#: transformer blocks (feed-forward, proj_in/out) and the text encoders' MLPs (kohya sd-scripts:
#: Transformer2DModel, CLIPAttention, CLIPMLP)
LORA_LAYER_KEYS = re.compile(r"\.transformer_blocks\.\d+\.|\.1\.proj_(in|out)\.|\.mlp\.(fc1|fc2|c_fc|c_proj)\.")

#: block groups of a denoiser's keys (first match wins; anything else is "other"): the UNet's
#: input / middle / output blocks (A1111's IN / M / OUT), the DiTs' block lists
BLOCK_GROUPS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^unet:input_blocks\."), "input"),
    (re.compile(r"^unet:middle_block\."), "middle"),
    (re.compile(r"^unet:output_blocks\."), "output"),
    (re.compile(r"^dit:double_blocks\."), "double blocks"),
    (re.compile(r"^dit:single_blocks\."), "single blocks"),
    (re.compile(r"^dit:joint_blocks\."), "joint blocks"),
    (re.compile(r"^dit:(transformer_blocks|blocks|layers)\."), "blocks"),
]

#: a part holding at least this share of the difference "confines" it ("UNet only", "attention
#: only"): what is left is within the sampling noise of a few thousand values per component.
#: Checked on generated fine-tunes (tests/test_claims_delta.py): attention-only fine-tunes put
#: >= 99.9 % in the attention projections, full fine-tunes about 15-30 % (their share of the weights)
CONFINED = 0.95
#: a component whose share of the difference is below this, and whose relative change is below
#: CHANGED_REL of the most changed component's, counts as unchanged (rounding left over)
CHANGED_SHARE = 0.01
CHANGED_REL = 0.1
#: names listed per health flag (the count is always given)
HEALTH_NAMES_MAX = 20


def block_group(ckey: str) -> str:
    for rx, name in BLOCK_GROUPS:
        if rx.match(ckey):
            return name
    return "other"


def _per_tensor(values: np.ndarray, offs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts))
    live = np.nonzero(counts)[0]
    if len(live):
        out[live] = np.add.reduceat(values, offs[live])
    return out


def _component_energies(fp, ref, comp: str):
    """(keys, estimated squared difference per tensor, estimated squared base weights per tensor)
    over the tensors both share, whole-tensor estimates from the samples; None if none shared."""
    vf, vr = fp.view(comp, 0), ref.view(comp, 0)
    tf, (tr,) = common(vf, [vr])
    if len(tf) == 0:
        return None
    ea, eb = vf.elements(tf), vr.elements(tr)
    a, b = vf.vals[ea].astype(np.float64), vr.vals[eb].astype(np.float64)
    noise = vf.rvar[ea] + vr.rvar[eb]
    ok = np.isfinite(a) & np.isfinite(b)
    d2 = np.where(ok, (a - b) ** 2 - noise, 0.0)
    b2 = np.where(ok, b * b, 0.0)
    cnt = vf.counts[tf].astype(np.int64)
    offs = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)
    n_ok = _per_tensor(ok.astype(np.float64), offs, cnt)
    size = np.array([math.prod(vf.shapes[t]) for t in tf], np.float64)
    scale = np.where(n_ok > 0, size / np.maximum(n_ok, 1), 0.0)
    diff = np.maximum(_per_tensor(d2, offs, cnt), 0.0) * scale
    base = _per_tensor(b2, offs, cnt) * scale
    return [vf.keys[t] for t in tf], diff, base


@functools.lru_cache(maxsize=16)
def _masks_of(keys: tuple) -> tuple[np.ndarray, np.ndarray]:
    att = np.array([bool(ATTENTION_KEYS.search(k)) for k in keys], bool)
    lora = att | np.array([bool(LORA_LAYER_KEYS.search(k)) for k in keys], bool)
    return att, lora


def _masks(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(attention projections, LoRA target layers) per key: the same for every file of a layout."""
    return _masks_of(tuple(keys))


def difference(fp, ref, comps: list[str]) -> dict | None:
    """Where ``fp`` differs from ``ref`` (its base): shares per component and per denoiser block
    group, the share in attention projections, and a one-line summary. None when nothing is
    shared or nothing differs beyond rounding."""
    per: dict[str, tuple] = {}
    for c in comps:
        if c in layout.IGNORED:
            continue
        e = _component_energies(fp, ref, c)
        if e is not None:
            per[c] = e
    total = sum(float(d.sum()) for _, d, _ in per.values())
    if not per or total <= 0:
        return None
    components = {}
    for c, (_, d, b) in per.items():
        bs = float(b.sum())
        components[c] = {"share": round(float(d.sum()) / total, 4),
                         "change": round(math.sqrt(float(d.sum()) / bs), 5) if bs > 0 else None}
    masks = {c: _masks(keys) for c, (keys, _, _) in per.items()}
    attn = sum(float(d[masks[c][0]].sum()) for c, (_, d, _) in per.items())
    lora = sum(float(d[masks[c][1]].sum()) for c, (_, d, _) in per.items())
    den = next((c for c in per if c in layout.DENOISERS), None)
    blocks: dict[str, float] = {}
    den_attn = den_lora = None
    if den is not None:
        keys, d, _ = per[den]
        dt = float(d.sum())
        if dt > 0:
            for k, v in zip(keys, d):
                g = block_group(k)
                blocks[g] = blocks.get(g, 0.0) + float(v) / dt
            den_attn = float(d[masks[den][0]].sum()) / dt
            den_lora = float(d[masks[den][1]].sum()) / dt
    out = {"components": components,
           "blocks": {g: round(v, 4) for g, v in sorted(blocks.items(), key=lambda t: -t[1])},
           "attention_share": round(attn / total, 4),
           "attention_only": attn / total >= CONFINED,
           "lora_layers_share": round(lora / total, 4)}
    out["changed"] = changed_components(components)
    out["summary"] = _summary(out, den, den_attn, den_lora)
    return out


def changed_components(components: dict) -> list[str]:
    """The components that changed: a share of the difference above CHANGED_SHARE, or a relative
    change within CHANGED_REL of the most changed one's."""
    top = max((e["change"] or 0.0 for e in components.values()), default=0.0)
    return [c for c, e in components.items()
            if e["share"] >= CHANGED_SHARE or (top > 0 and (e["change"] or 0.0) >= CHANGED_REL * top)]


_NAMES = {"unet": "UNet", "dit": "DiT", "clip_l": "CLIP-L", "clip_g": "CLIP-G", "clip_h": "CLIP-H", "t5": "T5",
          "vae": "VAE", layout.WHOLE: "model"}
_TE = ("clip_l", "clip_g", "clip_h", "t5")


def _summary(d: dict, den: str | None, den_attn: float | None, den_lora: float | None) -> str:
    comps, changed = d["components"], d["changed"]
    dn = _NAMES.get(den or "", den or "")
    if den and comps.get(den, {}).get("share", 0) >= CONFINED:
        if den_attn is not None and den_attn >= CONFINED:
            return f"{dn} attention only, like a baked LoRA"
        if den_lora is not None and den_lora >= CONFINED:
            return f"{dn} transformer layers only (attention and feed-forward), like a baked LoRA"
        top = next(iter(d["blocks"].items()), None)
        if top and top[1] >= CONFINED and top[0] != "other":
            return f"{dn} {top[0]} blocks only"
        return f"{dn} only"
    tes = [c for c in changed if c in _TE]
    if changed and all(c in _TE for c in changed):
        return "text encoder only" if len(tes) == 1 else "text encoders only"
    if changed == ["vae"]:
        return "VAE only"
    if den and den in changed and tes:
        if d["lora_layers_share"] >= CONFINED:
            return f"{dn} and text encoder transformer layers, like a baked LoRA"
        return "everything, like full training"
    parts = sorted(comps.items(), key=lambda t: -t[1]["share"])
    return "mostly " + ", ".join(f"{_NAMES.get(c, c)} {e['share'] * 100:.0f}%" for c, e in parts[:3]
                                 if e["share"] >= CHANGED_SHARE)


def health(fp) -> dict:
    """Tensors whose sampled values hold NaN or Inf, or are all zero (float tensors that were
    sampled): ``{"nan": [...], "inf": [...], "zero": [...], "counts": {...}, "tensors": n}``,
    names (canonical keys) capped at HEALTH_NAMES_MAX per flag."""
    out: dict = {"nan": [], "inf": [], "zero": []}
    n = {"nan": 0, "inf": 0, "zero": 0}
    sampled = np.zeros(0, np.int64)
    if fp.keys:
        fp.values(0)                                   # decodes every sample once
        vals, offs = fp._vals, fp._offs
        is_float = fp._facts()[2]
        counts = np.diff(offs)
        sampled = np.nonzero(counts > 0)[0]            # reduceat over the starts of sampled tensors
        if len(sampled):
            starts = offs[sampled]
            flags = {"nan": np.add.reduceat(np.isnan(vals), starts) > 0,
                     "inf": np.add.reduceat(np.isinf(vals), starts) > 0,
                     "zero": np.add.reduceat(vals != 0, starts) == 0}
            for flag, bad in flags.items():
                hit = sampled[bad & is_float[sampled]]
                n[flag] = int(len(hit))
                out[flag] = [fp.keys[i] for i in hit[:HEALTH_NAMES_MAX]]
            sampled = sampled[is_float[sampled]]
    out["counts"] = n
    out["tensors"] = int(len(sampled))
    return out
