"""Stable Diffusion 1/2/XL single-file checkpoints: architecture tables and ``checkpoint_spec``.

Builds the key names and tensor shapes of real single-file checkpoints (LDM / SGM
layout, exactly as in the files people download) at full size or at reduced width.
Architecture knowledge lives in the tables ``UNET``, ``TEXT``, ``VAE``,
``FAMILY_LAYOUT``, ``VARIANTS`` and ``SIZE_WIDTHS``; the generators in
``testkit.blocks`` are generic.
"""
from __future__ import annotations

from .blocks import Spec, hf_clip_spec, open_clip_spec, unet_spec, vae_spec

FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner")
#: same layout as their base family, different UNet input channels
VARIANT_FAMILIES = ("sd1_inpaint", "sd1_pix2pix", "sd2_inpaint", "sd2_depth", "sd2_unclip", "sdxl_inpaint")
ALL_FAMILIES = FAMILIES + VARIANT_FAMILIES
COMPONENTS = ("unet", "clip_l", "clip_g", "clip_h", "vae")
SIZES = ("tiny", "small", "full")


# --------------------------------------------------------------------------
# Architecture tables (full size).  Widths that shrink with `size` are the
# UNet `model_channels`, the text-encoder `width`/`mlp` and the VAE `ch`;
# everything else (layer counts, context dims, adm dims, vocab, positions,
# latent/image channels) is kept real at every size.
# --------------------------------------------------------------------------

UNET: dict[str, dict] = {
    # SD 1.x: v1-inference.yaml (openaimodel.UNetModel)
    "sd1": dict(
        in_channels=4, out_channels=4, model_channels=320,
        channel_mult=(1, 2, 4, 4), num_res_blocks=2,
        transformer_depth=(1, 1, 1, 0),  # per level; 0 = no SpatialTransformer
        transformer_depth_middle=1, context_dim=768,
        use_linear_in_transformer=False, adm_in_channels=None,
    ),
    # SD 2.x: v2-inference(-v).yaml
    "sd2": dict(
        in_channels=4, out_channels=4, model_channels=320,
        channel_mult=(1, 2, 4, 4), num_res_blocks=2,
        transformer_depth=(1, 1, 1, 0),
        transformer_depth_middle=1, context_dim=1024,
        use_linear_in_transformer=True, adm_in_channels=None,
    ),
    # SDXL base: sd_xl_base.yaml (attention_resolutions [4, 2], depth [1, 2, 10])
    "sdxl": dict(
        in_channels=4, out_channels=4, model_channels=320,
        channel_mult=(1, 2, 4), num_res_blocks=2,
        transformer_depth=(0, 2, 10),
        transformer_depth_middle=10, context_dim=2048,
        use_linear_in_transformer=True, adm_in_channels=2816,
    ),
    # SDXL refiner: sd_xl_refiner.yaml (attention_resolutions [4, 2], depth 4)
    "sdxl_refiner": dict(
        in_channels=4, out_channels=4, model_channels=384,
        channel_mult=(1, 2, 4, 4), num_res_blocks=2,
        transformer_depth=(0, 4, 4, 0),
        transformer_depth_middle=4, context_dim=1280,
        use_linear_in_transformer=True, adm_in_channels=2560,
    ),
}

TEXT: dict[str, dict] = {
    # OpenAI CLIP ViT-L/14 text model, HF transformers layout
    "clip_l": dict(kind="hf_clip", width=768, mlp=3072, layers=12,
                   vocab=49408, positions=77, position_ids=True),
    # open_clip ViT-H/14 text tower (SD 2.x)
    "clip_h": dict(kind="open_clip", width=1024, mlp=4096, layers=24,
                   vocab=49408, positions=77, proj=1024),
    # open_clip ViT-bigG/14 text tower (SDXL)
    "clip_g": dict(kind="open_clip", width=1280, mlp=5120, layers=32,
                   vocab=49408, positions=77, proj=1280),
}

# KL-f8 autoencoder (ddconfig of every SD1/SD2/SDXL checkpoint)
VAE = dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4,
            in_channels=3, out_ch=3, double_z=True, embed_dim=4)

# Per family: ordered (component, key prefix) as in the original file.
FAMILY_LAYOUT: dict[str, dict] = {
    "sd1": dict(unet="sd1", parts=(
        ("unet", "model.diffusion_model."),
        ("clip_l", "cond_stage_model.transformer.text_model."),
        ("vae", "first_stage_model."),
    )),
    "sd2": dict(unet="sd2", parts=(
        ("unet", "model.diffusion_model."),
        ("clip_h", "cond_stage_model.model."),
        ("vae", "first_stage_model."),
    )),
    "sdxl": dict(unet="sdxl", parts=(
        ("unet", "model.diffusion_model."),
        ("clip_l", "conditioner.embedders.0.transformer.text_model."),
        ("clip_g", "conditioner.embedders.1.model."),
        ("vae", "first_stage_model."),
    )),
    "sdxl_refiner": dict(unet="sdxl_refiner", parts=(
        ("unet", "model.diffusion_model."),
        ("clip_g", "conditioner.embedders.0.model."),
        ("vae", "first_stage_model."),
    )),
}

# Variants: (base family, UNet overrides).  Inpainting UNets take
# latent + mask + masked latent (4 + 1 + 4), instruct-pix2pix latent + image latent.
# SD2 depth (v2-midas-inference.yaml): latent + depth map, in_channels 5. SD2.1 unCLIP
# (v2-1-stable-unclip-h-inference.yaml): num_classes "sequential" with adm_in_channels
# 2048 (the OpenCLIP-H image embedding 1024 + its noise-level embedding 1024), which
# gives the UNet a label_emb.
VARIANTS: dict[str, tuple[str, dict]] = {
    "sd1_inpaint": ("sd1", dict(in_channels=9)),
    "sd1_pix2pix": ("sd1", dict(in_channels=8)),
    "sd2_inpaint": ("sd2", dict(in_channels=9)),
    "sd2_depth": ("sd2", dict(in_channels=5)),
    "sd2_unclip": ("sd2", dict(adm_in_channels=2048)),
    "sdxl_inpaint": ("sdxl", dict(in_channels=9)),
}

# Reduced widths.  GroupNorm(32) needs channel counts that are multiples of 32.
# "tiny" also sets the SpatialTransformer inner dim (n_heads * d_head) to 32 at
# every level (released models use inner = channels): with the real context
# dims, attn2.to_k/to_v would otherwise make a tiny SDXL file ~140 MB.
SIZE_WIDTHS: dict[str, dict] = {
    "tiny": dict(model_channels=32, attn_dim=32, text_width=64, text_mlp=256, vae_ch=32),
    "small": dict(model_channels=64, text_width=128, text_mlp=512, vae_ch=64),
    "full": dict(),
}


def _sized_unet(name: str, size: str) -> dict:
    cfg = dict(UNET[name])
    s = SIZE_WIDTHS[size]
    if "model_channels" in s:
        cfg["model_channels"] = s["model_channels"]
    cfg["attn_dim"] = s.get("attn_dim")
    return cfg


def _sized_text(name: str, size: str) -> dict:
    cfg = dict(TEXT[name])
    s = SIZE_WIDTHS[size]
    if "text_width" in s:
        cfg["width"] = s["text_width"]
        cfg["mlp"] = s["text_mlp"]
        if "proj" in cfg:
            cfg["proj"] = s["text_width"]
    return cfg


def _sized_vae(size: str) -> dict:
    cfg = dict(VAE)
    s = SIZE_WIDTHS[size]
    if "vae_ch" in s:
        cfg["ch"] = s["vae_ch"]
    return cfg


def checkpoint_spec(family: str, size: str = "tiny", components=None, unet: dict | None = None) -> Spec:
    """Key -> shape of a single-file checkpoint of `family`, in file-module order.

    `components`: None for all parts of the family, else an iterable over
    COMPONENTS; names that the family does not have (e.g. "clip_g" for sd1)
    are skipped, unknown names raise ValueError. `unet`: UNet config entries
    to override (e.g. ``{"adm_in_channels": 2304}``: the family's layout at a
    width no architecture rule knows).
    """
    overrides: dict = {}
    if family in VARIANTS:
        family, overrides = VARIANTS[family]
    overrides = {**overrides, **(unet or {})}
    if family not in FAMILY_LAYOUT:
        raise ValueError(f"unknown family {family!r}; known: {ALL_FAMILIES}")
    if size not in SIZE_WIDTHS:
        raise ValueError(f"unknown size {size!r}; known: {SIZES}")
    if components is not None:
        if isinstance(components, str):
            components = (components,)
        wanted = set(components)
        bad = wanted - set(COMPONENTS)
        if bad:
            raise ValueError(f"unknown components {sorted(bad)}; known: {COMPONENTS}")
    else:
        wanted = set(COMPONENTS)
    fam = FAMILY_LAYOUT[family]
    spec: Spec = {}
    for comp, prefix in fam["parts"]:
        if comp not in wanted:
            continue
        if comp == "unet":
            part = unet_spec(prefix, {**_sized_unet(fam["unet"], size), **overrides})
        elif comp == "vae":
            part = vae_spec(prefix, _sized_vae(size))
        else:
            cfg = _sized_text(comp, size)
            gen = hf_clip_spec if cfg["kind"] == "hf_clip" else open_clip_spec
            part = gen(prefix, cfg)
        spec.update(part)
    return spec


# Text encoders and 16-channel VAEs at full size, as other families' files hold them.

def clip_hf(prefix: str, name: str, projection: bool = False) -> Spec:
    cfg = dict(TEXT[name])
    spec = hf_clip_spec(prefix + "text_model.", {**cfg, "position_ids": name == "clip_l"})
    if projection:
        spec[prefix + "text_projection.weight"] = (cfg["width"], cfg["width"])
    return spec


def vae16(prefix: str, z: int = 16) -> Spec:
    spec = vae_spec(prefix, {**VAE, "z_channels": z, "embed_dim": z})
    return {k: s for k, s in spec.items() if "quant_conv" not in k}   # SD3/Flux VAEs have none
