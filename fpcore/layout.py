"""Canonical key layout: which component a tensor belongs to, under which inner name.

The same weights must fingerprint alike in a full checkpoint, a UNet-only file and a
file without prefixes, so every key is mapped to ``component:inner_key``. The mapping
is a table of prefixes (first match wins), plus rules for bare keys.
"""
from __future__ import annotations

import re

#: (prefix in the file, component, prefix that replaces it in the inner key).
#: component "denoiser" is resolved by the inner key: the LDM UNet layout is "unet",
#: anything else (MMDiT, Flux, Wan, ...) is "dit".
PREFIXES: list[tuple[str, str, str]] = [
    ("model.diffusion_model.", "denoiser", ""),
    ("diffusion_model.", "denoiser", ""),
    ("model_ema.", "ema", ""),                                  # EMA copy in SD1 training checkpoints
    ("cond_stage_model.transformer.text_model.", "clip_l", "text_model."),
    ("cond_stage_model.transformer.", "clip_l", ""),
    ("cond_stage_model.model.", "clip_h", ""),                  # SD2: open_clip ViT-H
    ("conditioner.embedders.0.transformer.text_model.", "clip_l", "text_model."),
    ("conditioner.embedders.0.model.", "clip_g", ""),           # SDXL refiner: bigG only
    ("conditioner.embedders.1.model.", "clip_g", ""),           # SDXL base: bigG second
    ("first_stage_model.", "vae", ""),
    ("vae.", "vae", ""),
    # SD3 / Flux single files (ComfyUI layout)
    ("text_encoders.clip_l.transformer.text_model.", "clip_l", "text_model."),
    ("text_encoders.clip_l.transformer.", "clip_l", ""),
    ("text_encoders.clip_g.transformer.text_model.", "clip_g", "text_model."),
    ("text_encoders.clip_g.transformer.", "clip_g", ""),
    ("text_encoders.t5xxl.transformer.", "t5", ""),
    ("text_encoders.t5xxl.", "t5", ""),
    ("cond_stage_model.t5xxl.transformer.", "t5", ""),
]

#: inner keys of the LDM UNet (openaimodel.UNetModel)
UNET_INNER = re.compile(r"^(input_blocks|middle_block|output_blocks|time_embed|label_emb|out)\.")
#: first names of DiT denoiser keys without prefix (Flux, SD3, PixArt, Wan, HunyuanVideo, ...)
DIT_INNER = re.compile(
    r"^(double_blocks|single_blocks|img_in|txt_in|time_in|vector_in|guidance_in|final_layer|joint_blocks|"
    r"x_embedder|context_embedder|t_embedder|y_embedder|pos_embed|t_block|head\.modulation|head\.head|"
    r"patch_embedding|text_embedding|time_embedding|time_projection|img_emb|vace_patch_embedding|vace_blocks|"
    r"adaln_single|caption_projection|cap_embedder|noise_refiner|context_refiner|double_layers|single_layers|"
    r"cond_seq_linear|register_tokens|positional_encoding|init_x_linear|modF|mlp_t5|extra_embedder|t5_yproj|"
    r"t5_y_embedder|clf|clip_txt_mapper|clip_txt_pooled_mapper|clip_img_mapper|clip_mapper|effnet_mapper|"
    r"txt_norm|img_mod|norm_out|proj_out|distilled_guidance_layer|double_stream_modulation_img|"
    r"double_stream_modulation_txt|single_stream_modulation|final_linear|pos_frequencies|text_embedding_padding|"
    r"pooler|style_embedder|csize_embedder|ar_embedder|patchify_proj|embedding|down_blocks|up_blocks|"
    r"pixels_mapper|norm_final|single_stream_blocks|double_stream_blocks|"
    r"transformer_blocks|blocks|layers|scale_shift_table|x_pad_token|cap_pad_token|t_embedder|time_text_embed|"
    r"p_embedder|text_encoder_pooled_proj)(\.|$)")

#: bare keys (no prefix): (regex on the key, component)
BARE: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^(encoder\.block\.|shared\.weight$|encoder\.final_layer_norm\.)"), "t5"),   # T5 encoder
    (re.compile(r"^(input_blocks|middle_block|output_blocks|time_embed|label_emb|out)\."), "unet"),
    (re.compile(r"^(encoder|decoder|quant_conv|post_quant_conv)\."), "vae"),
    (re.compile(r"^text_model\."), "clip_l"),
    (DIT_INNER, "dit"),
]

#: container prefixes that checkpoint formats define, whatever the family (regex on the file key;
#: group 1 names the container). A key under one belongs to the component PREFIXES names (the
#: UNet/DiT, a text encoder, the VAE); one of a kind PREFIXES does not know makes a component
#: named by its container ("text_encoders.llama", "conditioner.embedders.2"). Diffusers folders
#: are read under these names (unet/ and transformer/ as model.diffusion_model., vae/ as
#: first_stage_model., text_encoder*/ as the text encoders' prefixes: fpcore.sources.diffusers).
#: Bare names (encoder., decoder., pooler.) are never containers: a BERT's encoder.* is no VAE.
CONTAINERS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^(model\.diffusion_model)\."), "denoiser"),         # LDM / A1111 single files
    (re.compile(r"^(diffusion_model)\."), "denoiser"),                 # ComfyUI model saves
    (re.compile(r"^(first_stage_model)\."), "vae"),                    # LDM / A1111 single files
    (re.compile(r"^(vae)\."), "vae"),                                  # ComfyUI checkpoint saves
    (re.compile(r"^(cond_stage_model)\."), "conditioner"),             # LDM (SD1/SD2) text encoder
    (re.compile(r"^(conditioner\.embedders\.\d+)\."), "conditioner"),  # SGM (SDXL, SVD) embedders
    (re.compile(r"^(text_encoders\.[^.]+)\."), "conditioner"),        # ComfyUI checkpoint saves
    (re.compile(r"^(model_ema)\."), "ema"),                            # EMA copy (never compared)
]

#: keys that carry no weights worth sampling (markers and bookkeeping)
MARKERS = {"v_pred", "ztsnr", "edm_mean", "edm_std"}

#: components that describe a denoiser (the part a verdict is about)
DENOISERS = ("unet", "dit")
#: components that are carried along but never compared
IGNORED = ("ema", "other")

#: the one component of a file whose architecture no rule knows: every tensor but the
#: ignored ones (bare-key guesses never split such a file, see arch.declared_components)
WHOLE = "model"

#: order in which components are reported
ORDER = ("unet", "dit", "clip_l", "clip_g", "clip_h", "t5", "vae", WHOLE, "other", "ema")


def canonical(key: str) -> tuple[str, str]:
    """Map a file key to (component, inner key)."""
    for prefix, comp, repl in PREFIXES:
        if key.startswith(prefix):
            inner = repl + key[len(prefix):]
            if comp == "denoiser":
                return ("unet" if UNET_INNER.match(inner) or not DIT_INNER.match(inner) else "dit"), inner
            return comp, inner
    if key in MARKERS:
        return "other", key
    for rx, comp in BARE:
        if rx.match(key):
            return comp, key
    return "other", key


def container_of(key: str) -> str | None:
    """The container a file key sits under (CONTAINERS: "model.diffusion_model",
    "text_encoders.llama"), or None for a bare key."""
    for rx, _ in CONTAINERS:
        m = rx.match(key)
        if m:
            return m.group(1)
    return None


def container_role(name: str) -> str | None:
    """The role ("denoiser", "vae", "conditioner", "ema") of a container name, else None."""
    for rx, role in CONTAINERS:
        m = rx.match(name + ".")
        if m and m.group(1) == name:
            return role
    return None


def component_of(canonical_key_: str) -> str:
    """The component of a canonical key: its prefix, except that a key PREFIXES left in ``other``
    but that sits under a container belongs to a component named by that container."""
    comp, _, inner = canonical_key_.partition(":")
    if comp == "other":
        return container_of(inner) or comp
    return comp


def canonical_key(key: str) -> str:
    comp, inner = canonical(key)
    return f"{comp}:{inner}"


def split(key: str) -> tuple[str, str]:
    """Inverse of canonical_key's joining: 'unet:x.y' -> ('unet', 'x.y')."""
    comp, _, inner = key.partition(":")
    return comp, inner


def in_component(canonical_key_: str, comp: str) -> bool:
    """Does the canonical key belong to component ``comp`` (WHOLE: every key but ignored ones)?"""
    if comp == WHOLE:
        return split(canonical_key_)[0] != "ema"
    if comp in ORDER and comp != "other":        # the prefix says it (component_of differs for other: only)
        return canonical_key_.startswith(comp + ":")
    return component_of(canonical_key_) == comp


def is_container_component(comp: str) -> bool:
    """Whether ``comp`` is a component of unknown kind named by its container."""
    return comp not in ORDER and container_role(comp) is not None


def component_rank(comp: str) -> tuple:
    """Report order: ORDER, with the components named by their container before the VAE."""
    return (ORDER.index(comp), "") if comp in ORDER else (ORDER.index("vae") - 0.5, comp)


def components_of(canonical_keys) -> list[str]:
    seen = {component_of(k) for k in canonical_keys}
    return sorted((c for c in seen if c not in IGNORED and (c in ORDER or is_container_component(c))),
                  key=component_rank)


def layout_digest(items) -> str:
    """Digest of (canonical key, shape) pairs in key order: equal for two files exactly when a
    component holds the same tensors (the references' ``layouts``, the scan's layout families)."""
    import hashlib
    text = "\n".join(f"{k}:{','.join(map(str, s))}" for k, s in items)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


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


# -- files of an architecture no rule knows ---------------------------------------------------

#: components that condition the denoiser on text: a file is as weak as the weakest of them and
#: its denoiser (components named by a conditioner container count with them)
TEXT_ENCODERS = ("clip_l", "clip_g", "clip_h", "t5")
#: how the description of an unrecognised layout names a component (text encoders are counted)
LAYOUT_PART_NAMES = {"unet": "UNet", "dit": "DiT", "vae": "VAE", WHOLE: "one component"}
#: a file of unknown architecture is split by its containers when they hold at least this share
#: of its parameters (EMA copies left out); otherwise it is one WHOLE component. LDM files keep
#: a few bookkeeping tensors at the top level (betas, alphas_cumprod: 1,000 values each, a
#: millionth of a checkpoint); a model with one submodule that happens to be called ``vae``
#: holds most of its weights under bare names.
CONTAINER_MIN_SHARE = 0.99


def is_text_encoder(comp: str) -> bool:
    """A text encoder, or a component of unknown kind in a conditioner container."""
    return comp in TEXT_ENCODERS or (is_container_component(comp) and container_role(comp) == "conditioner")


def format_params(n: int) -> str:
    """'2.6 B', '19.4 M', '860 k' parameters."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.0f} {unit}" if v >= 100 else f"{v:.1f} {unit}"
    return str(int(n))


def layout_name(comps: list[str], params: int) -> str:
    """'unrecognised layout, 2.6 B parameters, UNet + 2 text encoders + VAE': what is known of a
    file no rule recognises, never a guessed family."""
    parts: list[str] = []
    tes = [c for c in comps if c in TEXT_ENCODERS]
    for c in comps:
        if c in TEXT_ENCODERS:
            if c == tes[0]:
                parts.append(f"{len(tes)} text encoder{'s' if len(tes) > 1 else ''}")
        else:
            parts.append(LAYOUT_PART_NAMES.get(c, c))
    what = " + ".join(parts) if comps != [WHOLE] else "bare keys, one component"
    return f"unrecognised layout, {format_params(params)} parameters" + (f", {what}" if what else "")


def describe_unknown(shapes: dict, dtypes_: dict | None, where: dict | None) -> dict:
    """Components and facts of a file no rule recognises, from canonical key -> shape, -> dtype
    and -> the container its file key sits under (``container_of``; None: a bare key).

    Split by container (each container one component: the one PREFIXES names for most of its
    parameters, else the container's own name) when containers hold CONTAINER_MIN_SHARE of the
    parameters; else one WHOLE component. Returns {"components", "containers" (component ->
    container), "params", "component_params", "of" (the component the family digest is of),
    "digest", "name"}."""
    import math
    from .dtypes import DTYPES
    where = where or {}
    params = {k: math.prod(s) for k, s in shapes.items() if in_component(k, WHOLE)
              and (not dtypes_ or dtypes_.get(k) not in DTYPES or DTYPES[dtypes_[k]].is_float)}
    total = sum(params.values())
    per_container: dict[str, dict[str, int]] = {}
    for k, n in params.items():
        c = where.get(k)
        if c and container_role(c) != "ema":
            d = per_container.setdefault(c, {})
            d[component_of(k)] = d.get(component_of(k), 0) + n
    containers: dict[str, str] = {}
    if total and sum(sum(d.values()) for d in per_container.values()) >= CONTAINER_MIN_SHARE * total:
        for c, per in sorted(per_container.items()):
            known = {comp: n for comp, n in per.items() if comp in ORDER and comp not in IGNORED}
            pick = known or {comp: n for comp, n in per.items() if is_container_component(comp)}
            if pick:
                containers.setdefault(max(sorted(pick), key=pick.get), c)
    comps = sorted(containers, key=component_rank) or ([WHOLE] if params else [])
    sizes = {c: sum(n for k, n in params.items() if c == WHOLE or component_of(k) == c) for c in comps}
    of = next((c for c in comps if c in DENOISERS), comps[0] if comps else None)
    digest = layout_digest((k, shapes[k]) for k in sorted(shapes) if of and in_component(k, of)) if of else None
    return {"components": comps, "containers": {c: containers[c] for c in comps if c in containers},
            "params": total, "component_params": sizes, "of": of, "digest": digest,
            "name": layout_name(comps, total)}
