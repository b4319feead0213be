"""Test-file generators for the tests and bench/ (not part of the engine; not in the wheel).

Synthetic checkpoints with the real key names and layouts of the files people
download, at full size or reduced width, deterministic random weights of
realistic statistics, lineage operations (fine-tunes, baked LoRAs, merges) and
writers for every container the engine reads.

Modules, by job::

    blocks              generic layer generators (UNet, CLIP, open_clip, VAE, T5) -> {key: shape}
    sd                  SD1/SD2/SDXL tables, checkpoint_spec(family, size, components)
    image_dits          SD3, Flux, AuraFlow, PixArt, Cascade, Lumina, HiDream, Qwen-Image
    video_dits          Wan, LTXV, HunyuanVideo, Mochi, Cosmos
    extra               extra_spec(name): those families, partial files, LoRAs, ControlNet
    weights             DTYPES, dtype_of_key, param_count, spec_nbytes, random_state_dict, convert
    safetensors_writer  write_safetensors, write_spec_file (sparse full-size files), rewrite_metadata
    formats             write_torch_ckpt, torch_pickle, write_gguf, openclip_to_hf
    diffusers           write_diffusers: diffusers folders named by diffusers' own conversion tables
    lineage             finetune, bake_lora, merge, ties_merge, dare_merge, unet_only, is_weight
"""
from __future__ import annotations

from .blocks import Builder, Spec, hf_clip_spec, open_clip_spec, t5_spec, unet_spec, vae_spec
from .extra import EXTRA_SPECS, extra_spec
from .diffusers import write_diffusers
from .formats import openclip_to_hf, torch_pickle, write_gguf, write_torch_ckpt
from .lineage import (COMMON_SEED, SHARED_RHO, bake_lora, dare_merge, finetune, is_weight, merge, ties_merge,
                      unet_only)
from .safetensors_writer import rewrite_metadata, write_safetensors, write_spec_file
from .sd import (ALL_FAMILIES, COMPONENTS, FAMILIES, FAMILY_LAYOUT, SIZE_WIDTHS, SIZES, TEXT, UNET, VAE,
                 VARIANT_FAMILIES, VARIANTS, checkpoint_spec)
from .weights import DTYPES, FLOAT_DTYPES, convert, dtype_of_key, param_count, random_state_dict, spec_nbytes

__all__ = [
    "ALL_FAMILIES", "Builder", "COMMON_SEED", "COMPONENTS", "DTYPES", "EXTRA_SPECS", "FAMILIES", "FAMILY_LAYOUT",
    "FLOAT_DTYPES", "SHARED_RHO", "SIZES", "SIZE_WIDTHS", "Spec", "TEXT", "UNET", "VAE", "VARIANTS",
    "VARIANT_FAMILIES", "bake_lora", "checkpoint_spec", "convert", "dare_merge", "dtype_of_key", "extra_spec",
    "finetune", "hf_clip_spec", "is_weight", "merge", "open_clip_spec", "openclip_to_hf", "param_count",
    "random_state_dict", "rewrite_metadata", "spec_nbytes", "t5_spec", "ties_merge", "torch_pickle", "unet_only",
    "unet_spec", "vae_spec", "write_diffusers", "write_gguf", "write_safetensors", "write_spec_file", "write_torch_ckpt",
]
