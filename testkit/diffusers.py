"""Diffusers folders written with diffusers' own renaming tables, never with fpcore's key map.

The tables are golden data from outside this project (``data/diffusers_keys/``, each file
says where it comes from): the renaming lists of diffusers' conversion scripts
(scripts/convert_diffusers_to_original_stable_diffusion.py and ..._sdxl.py, in
``rules.json``) and the diffusers key names of the released SD1.5 / SD2.1 / SDXL-base
components. The scripts rename diffusers -> original; a folder is written by inverting
that renaming with a search over the scripts' (original, diffusers) parts, keeping the one
candidate that has the form of a real diffusers key and that the scripts' forward renaming
turns back into the original name. So a wrong key map in fpcore cannot cancel out when a
folder written here is read back.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np

from .safetensors_writer import write_safetensors
from .sd import VARIANTS

DATA = Path(__file__).resolve().parent / "data" / "diffusers_keys"

#: per family: (component, original prefix, diffusers folder, golden file, rule set)
FAMILY = {
    "sd1": [("unet", "model.diffusion_model.", "unet", "sd1_unet", "sd"),
            ("clip_l", "cond_stage_model.transformer.", "text_encoder", "clip_l", "sd"),
            ("vae", "first_stage_model.", "vae", "vae", "sdxl")],
    "sd2": [("unet", "model.diffusion_model.", "unet", "sd2_unet", "sd"),
            ("clip_h", "cond_stage_model.model.", "text_encoder", "clip_h", "sd"),
            ("vae", "first_stage_model.", "vae", "vae", "sdxl")],
    "sdxl": [("unet", "model.diffusion_model.", "unet", "sdxl_unet", "sdxl"),
             ("clip_l", "conditioner.embedders.0.transformer.", "text_encoder", "clip_l", "sdxl"),
             ("clip_g", "conditioner.embedders.1.model.", "text_encoder_2", "clip_g", "sdxl"),
             ("vae", "first_stage_model.", "vae", "vae", "sdxl")],
}
PIPELINE = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}
MODEL_CLASS = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "clip_l": "CLIPTextModel",
               "clip_h": "CLIPTextModel", "clip_g": "CLIPTextModelWithProjection"}
#: single-file tensors with no diffusers counterpart (the golden files' notes say why)
NO_COUNTERPART = re.compile(r"(^|\.)logit_scale$|^cond_stage_model\.model\.(text_projection$|transformer\.resblocks\.23\.)")


@lru_cache(None)
def golden(name: str) -> dict:
    with open(DATA / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


@lru_cache(None)
def rules() -> dict:
    return golden("rules")


def sig(key: str) -> str:
    return re.sub(r"\d+", "#", key)


def block(key: str) -> str | None:
    """The block a diffusers key belongs to (as diffusers_blocks in the golden files)."""
    p = key.split(".")
    if p[0] in ("encoder", "decoder") and len(p) > 1 and p[1] in ("down_blocks", "up_blocks", "mid_block"):
        return ".".join(p[:5] if p[1] != "mid_block" else p[:4])
    if p[0] in ("down_blocks", "up_blocks"):
        return ".".join(p[:4])
    if p[0] == "mid_block":
        return ".".join(p[:3])
    if p[0] == "text_model" and len(p) > 1 and p[1] == "encoder":
        return ".".join(p[:4])
    return None


class Real:
    """Whether a name has the form of a key of the real model: its signature and its block exist."""

    def __init__(self, g: dict, old: bool = False):
        self.sigs = set(g["diffusers_signatures_old" if old else "diffusers_signatures"])
        self.blocks = set(g["diffusers_blocks"])

    def __contains__(self, key: str) -> bool:
        b = block(key)
        return sig(key) in self.sigs and (b is None or b in self.blocks)


# -- the scripts' renaming, diffusers -> original (forward), as their tables say ----------------

def unet_forward(h: str, r: dict) -> str:
    exact = {hf: sd for sd, hf in r["exact"]}
    v = exact.get(h, h)
    if "resnets" in h:
        for sd, hf in r["resnet"]:
            v = v.replace(hf, sd)
    for sd, hf in r["layer"]:
        v = v.replace(hf, sd)
    return v


def vae_forward(h: str, r: dict) -> str:
    v = h
    for sd, hf in r["layer"]:
        v = v.replace(hf, sd)
    if "attentions" in h:
        for sd, hf in r["attn"]:
            v = v.replace(hf, sd)
    return v


def text_relabel(h: str, table) -> str:
    protected = {re.escape(hf): sd for sd, hf in table}
    return re.sub("|".join(protected), lambda m: protected[re.escape(m.group(0))], h)


QKV = re.compile(r"^(.*)\.([qkv])_proj\.(weight|bias)$")


def openclip_forward(h: str, table, sd2: bool) -> tuple[str, int | None]:
    """(original key, q/k/v index or None); SD2's script prefixes 'transformer.' first."""
    if sd2:
        h = "transformer." + h
    m = QKV.match(h)
    if m and m.group(1).endswith(".self_attn"):
        return text_relabel(m.group(1), table) + f".in_proj_{m.group(3)}", "qkv".index(m.group(2))
    if h == "text_projection.weight":
        return "text_projection", None
    return text_relabel(h, table), None


def invert(orig: str, forward, pairs, real: Real, depth: int = 3) -> str:
    """The diffusers key whose forward renaming is ``orig`` and whose form is a real diffusers
    key: a search over reverse replacements of the scripts' (original, diffusers) parts."""
    frontier, seen = {orig}, {orig}
    for _ in range(depth):
        nxt = set()
        for v in frontier:
            for sd, hf in pairs:
                if sd in v:
                    c = v.replace(sd, hf)
                    if c not in seen:
                        seen.add(c)
                        nxt.add(c)
        frontier = nxt
    found = sorted(c for c in seen if c in real and forward(c) == orig)
    assert len(found) == 1, f"{orig}: {found or 'no real diffusers name'}"
    return found[0]


@lru_cache(None)
def diffusers_name(comp: str, key: str, gold: str, ruleset: str, old_vae: bool = False) -> str | None:
    """The diffusers name of the original inner key ``key`` of component ``comp`` (for open_clip
    q/k/v: the q_proj name), or None when it has no diffusers counterpart."""
    g = golden(gold)
    R = rules()[ruleset]
    if comp == "unet":
        pairs = R["unet"]["exact"] + R["unet"]["resnet"] + R["unet"]["layer"]
        return invert(key, lambda h: unet_forward(h, R["unet"]), pairs, Real(g))
    if comp == "vae":
        r = rules()["sd"]["vae"] if old_vae else R["vae"]
        return invert(key, lambda h: vae_forward(h, r), r["layer"] + r["attn"], Real(g, old_vae))
    if comp == "clip_l":     # both scripts keep the HF names (identity)
        return key
    sd2 = comp == "clip_h"   # open_clip -> HF
    table = rules()["sd"]["text_v20"] if sd2 else rules()["sdxl"]["text_openclip"]
    fwd = lambda h: openclip_forward(h, table, sd2)[0]  # noqa: E731
    search = table + ([("transformer.", "")] if sd2 else [])   # SD2's script adds 'transformer.' first
    if sd2 and NO_COUNTERPART.search("cond_stage_model.model." + key) or key == "logit_scale":
        return None
    if key == "text_projection":
        return "text_projection.weight"
    if ".in_proj_" in key:
        kind = key.rsplit("_", 1)[1]
        return invert(key, fwd, search + [(f"in_proj_{kind}", f"q_proj.{kind}")], Real(g), depth=5)
    return invert(key, fwd, search, Real(g), depth=4)


def to_diffusers(comp: str, inner: Mapping[str, np.ndarray], gold: str, ruleset: str,
                 old_vae: bool = False) -> dict[str, np.ndarray]:
    """Diffusers tensors of one component, named by the scripts' tables (never by fpcore)."""
    out: dict[str, np.ndarray] = {}
    for k, v in inner.items():
        name = diffusers_name(comp, k, gold, ruleset, old_vae)
        if name is None:
            continue
        if comp == "vae" and ".mid.attn_1." in k and v.ndim == 4:
            v = v.reshape(v.shape[:2])               # diffusers keeps attention projections as linears
        if comp in ("clip_h", "clip_g") and k == "text_projection":
            v = np.ascontiguousarray(v.T)
        if comp in ("clip_h", "clip_g") and ".in_proj_" in k:
            for i, part in enumerate(np.split(v, 3, axis=0)):
                out[name.replace(".q_proj.", f".{'qkv'[i]}_proj.")] = part
            continue
        out[name] = v
    return out


def write_diffusers(folder, sd: Mapping[str, np.ndarray], family: str, dtype: str = "F16",
                    fp16_names: bool = False, old_vae: bool = False) -> Path:
    """Write a single-file state dict of ``family`` (sd1, sd2, sdxl, or a variant of one) as a
    diffusers folder (model_index.json, unet/, vae/, text_encoder/, text_encoder_2/).
    ``fp16_names``: weights named ``*.fp16.safetensors`` (the fp16 variant of a repository);
    ``old_vae``: VAE attention with the names diffusers used before 0.14 (query/key/value)."""
    base = VARIANTS[family][0] if family in VARIANTS else family
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": PIPELINE[base], "_diffusers_version": "0.30.0"}
    suffix = ".fp16" if fp16_names else ""
    for comp, prefix, sub, gold, ruleset in FAMILY[base]:
        inner = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not inner:
            continue
        os.makedirs(root / sub, exist_ok=True)
        text = sub.startswith("text_encoder")
        name = ("model" if text else "diffusion_pytorch_model") + suffix + ".safetensors"
        write_safetensors(root / sub / name, to_diffusers(comp, inner, gold, ruleset, old_vae), dtype)
        index[sub] = ["transformers" if text else "diffusers", MODEL_CLASS[comp]]
    (root / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return root
