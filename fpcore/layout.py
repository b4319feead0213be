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
    return canonical_key_.startswith(comp + ":")


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
