"""Canonical key layout: which component a tensor belongs to, under which inner name.

The same weights must fingerprint alike in a full checkpoint, a UNet-only file and a
file without prefixes, so every key is mapped to ``component:inner_key``. The mapping
is a table of prefixes (first match wins), plus rules for bare keys.
"""
from __future__ import annotations

import re

#: (prefix in the file, component, prefix that replaces it in the inner key)
PREFIXES: list[tuple[str, str, str]] = [
    ("model.diffusion_model.", "unet", ""),
    ("diffusion_model.", "unet", ""),
    ("model_ema.", "ema", ""),                                  # EMA copy in SD1 training checkpoints
    ("cond_stage_model.transformer.text_model.", "clip_l", "text_model."),
    ("cond_stage_model.transformer.", "clip_l", ""),
    ("cond_stage_model.model.", "clip_h", ""),                  # SD2: open_clip ViT-H
    ("conditioner.embedders.0.transformer.text_model.", "clip_l", "text_model."),
    ("conditioner.embedders.0.model.", "clip_g", ""),           # SDXL refiner: bigG only
    ("conditioner.embedders.1.model.", "clip_g", ""),           # SDXL base: bigG second
    ("first_stage_model.", "vae", ""),
    ("vae.", "vae", ""),
]

#: bare keys (no prefix): (regex on the key, component)
BARE: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^(input_blocks|middle_block|output_blocks|time_embed|label_emb|out)\."), "unet"),
    (re.compile(r"^(encoder|decoder|quant_conv|post_quant_conv)\."), "vae"),
    (re.compile(r"^text_model\."), "clip_l"),
]

#: keys that carry no weights worth sampling (markers and bookkeeping)
MARKERS = {"v_pred", "ztsnr", "edm_mean", "edm_std"}

#: components that describe a denoiser (the part a verdict is about)
DENOISERS = ("unet", "dit")
#: components that are carried along but never compared
IGNORED = ("ema", "other")

#: order in which components are reported
ORDER = ("unet", "dit", "clip_l", "clip_g", "clip_h", "t5", "vae", "other", "ema")


def canonical(key: str) -> tuple[str, str]:
    """Map a file key to (component, inner key)."""
    for prefix, comp, repl in PREFIXES:
        if key.startswith(prefix):
            return comp, repl + key[len(prefix):]
    if key in MARKERS:
        return "other", key
    for rx, comp in BARE:
        if rx.match(key):
            return comp, key
    return "other", key


def canonical_key(key: str) -> str:
    comp, inner = canonical(key)
    return f"{comp}:{inner}"


def split(key: str) -> tuple[str, str]:
    """Inverse of canonical_key's joining: 'unet:x.y' -> ('unet', 'x.y')."""
    comp, _, inner = key.partition(":")
    return comp, inner


def components_of(canonical_keys) -> list[str]:
    seen = {split(k)[0] for k in canonical_keys}
    return [c for c in ORDER if c in seen and c not in IGNORED]


#: UNet block groups for per-block merge fits (A1111 "MBW": IN, M, OUT)
BLOCK_GROUPS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^unet:input_blocks\."), "input"),
    (re.compile(r"^unet:middle_block\."), "middle"),
    (re.compile(r"^unet:output_blocks\."), "output"),
]


def block_of(canonical_key_: str) -> str | None:
    for rx, name in BLOCK_GROUPS:
        if rx.match(canonical_key_):
            return name
    return None
