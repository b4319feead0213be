"""Key maps: pure functions that rename keys between the layouts one model is stored in.

- diffusers <-> original single-file (LDM / SGM) names for the UNet and the VAE: per
  component a list of (diffusers prefix, original prefix, suffix table) pairs generated for
  the block structure found, plus suffix renames inside ResNet and VAE attention blocks;
- Hugging Face CLIP <-> open_clip names for OpenCLIP ViT-H / bigG text encoders;
- the layouts a host keeps a loaded model in (ComfyUI) -> checkpoint names.

Nothing here reads a file; the sources apply these maps to what they read.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
            "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}
CLIP_TO_OPENCLIP = [  # (HF inner regex, open_clip template)
    (r"^text_model\.embeddings\.token_embedding\.weight$", "token_embedding.weight"),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$", "transformer.resblocks.{0}.attn.out_proj.{1}"),
    (r"^text_model\.encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)$", "transformer.resblocks.{0}.ln_1.{1}"),
    (r"^text_model\.encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)$", "transformer.resblocks.{0}.ln_2.{1}"),
    (r"^text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)$", "transformer.resblocks.{0}.mlp.c_fc.{1}"),
    (r"^text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)$", "transformer.resblocks.{0}.mlp.c_proj.{1}"),
    (r"^text_model\.final_layer_norm\.(weight|bias)$", "ln_final.{0}"),
]
QKV = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$")


def _count(keys, prefix_fmt: str) -> int:
    n = 0
    while any(k.startswith(prefix_fmt.format(n)) for k in keys):
        n += 1
    return n


def unet_pairs(levels: int, nrb: int, up_attn: set[int]) -> list[tuple[str, str, str | None]]:
    """(diffusers prefix, LDM prefix, suffix table name) for an LDM UNet of this structure."""
    p: list[tuple[str, str, str | None]] = [
        ("time_embedding.linear_1.", "time_embed.0.", None), ("time_embedding.linear_2.", "time_embed.2.", None),
        ("add_embedding.linear_1.", "label_emb.0.0.", None), ("add_embedding.linear_2.", "label_emb.0.2.", None),
        ("conv_in.", "input_blocks.0.0.", None), ("conv_norm_out.", "out.0.", None), ("conv_out.", "out.2.", None),
        ("mid_block.resnets.0.", "middle_block.0.", "resnet"), ("mid_block.attentions.0.", "middle_block.1.", None),
        ("mid_block.resnets.1.", "middle_block.2.", "resnet")]
    s = nrb + 1
    for i in range(levels):
        for j in range(nrb):
            p.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{i * s + j + 1}.0.", "resnet"))
            p.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{i * s + j + 1}.1.", None))
        if i < levels - 1:
            p.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * s}.0.op.", None))
        for j in range(s):
            p.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * s + j}.0.", "resnet"))
            if i in up_attn:   # else output_blocks.{..}.1 is the upsampler, which the reverse map must find
                p.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * s + j}.1.", None))
        if i < levels - 1:
            p.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * s + nrb}.{2 if i in up_attn else 1}.", None))
    return p


def vae_pairs(levels: int, nrb: int) -> list[tuple[str, str, str | None]]:
    p: list[tuple[str, str, str | None]] = []
    for side in ("encoder", "decoder"):
        p.append((f"{side}.conv_norm_out.", f"{side}.norm_out.", None))
        p.append((f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.", "vae_attn"))
        for j in range(2):
            p.append((f"{side}.mid_block.resnets.{j}.", f"{side}.mid.block_{j + 1}.", "vae_resnet"))
    for i in range(levels):
        for j in range(nrb):
            p.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", "vae_resnet"))
        if i < levels - 1:
            p.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", None))
        for j in range(nrb + 1):
            p.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{levels - 1 - i}.block.{j}.", "vae_resnet"))
        if i < levels - 1:
            p.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample.", None))
    return p


SUFFIXES = {"resnet": UNET_RESNET, "vae_resnet": VAE_RESNET, "vae_attn": VAE_ATTN}


def map_key(key: str, pairs: list[tuple[str, str, str | None]], reverse: bool = False) -> str:
    """Rename ``key`` by the longest matching prefix pair (and its suffix table)."""
    best = None
    for d, o, table in pairs:
        src, dst = (o, d) if reverse else (d, o)
        if key.startswith(src) and (best is None or len(src) > len(best[0])):
            best = (src, dst, table)
    if best is None:
        return key
    src, dst, table = best
    rest = key[len(src):]
    if table:
        for a, b in SUFFIXES[table].items():
            a_, b_ = (b, a) if reverse else (a, b)
            if rest.startswith(a_ + "."):
                rest = b_ + rest[len(a_):]
                break
    return dst + rest


def unet_structure(keys) -> tuple[int, int, set[int]]:
    levels = _count(keys, "down_blocks.{}.")
    nrb = _count(keys, "down_blocks.0.resnets.{}.")
    up_attn = {i for i in range(levels) if any(k.startswith(f"up_blocks.{i}.attentions.") for k in keys)}
    return levels, nrb, up_attn


def vae_structure(keys) -> tuple[int, int]:
    return _count(keys, "encoder.down_blocks.{}."), _count(keys, "encoder.down_blocks.0.resnets.{}.")


#: number of transformer layers -> prefix of that encoder in the single-file layout
OPENCLIP_BY_LAYERS = {32: "conditioner.embedders.1.model.",   # OpenCLIP ViT-bigG (CLIP-G)
                      24: "cond_stage_model.model.", 23: "cond_stage_model.model."}  # ViT-H (SD2)
LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.")


def hf_clip_layers(tensors) -> int:
    n = -1
    for k in tensors:
        m = LAYER.match(k)
        if m:
            n = max(n, int(m.group(1)))
    return n + 1


def openclip_key(hf_key: str) -> str | None:
    """open_clip inner name of an HF CLIP text-model key that maps one to one (not q/k/v, not
    the text projection), or None."""
    for rx, tmpl in CLIP_TO_OPENCLIP:
        m = re.match(rx, hf_key)
        if m:
            return tmpl.format(*m.groups())
    return None


# -- host layouts --------------------------------------------------------------------------

#: per role of a loaded model: (in-memory prefix, checkpoint prefix) pairs, first match wins.
#: ComfyUI: MODEL = ModelPatcher over BaseModel (``diffusion_model.*``), CLIP = SD1ClipModel /
#: SDXLClipModel (``clip_l.transformer.text_model.*``; clip_g / clip_h are held in the HF
#: layout converted from open_clip, which no checkpoint uses, so they are not compared),
#: VAE = AutoencoderKL keys without prefix.
COMFY_LAYOUTS: dict[str, list[tuple[str, str]]] = {
    "model": [("diffusion_model.", "model.diffusion_model.")],
    "clip": [("clip_l.transformer.text_model.", "cond_stage_model.transformer.text_model.")],
    "vae": [("", "first_stage_model.")],
}


def remap(state: Mapping[str, Any], role: str, layouts: Mapping[str, list[tuple[str, str]]] = COMFY_LAYOUTS
          ) -> tuple[dict[str, Any], list[str]]:
    """Map in-memory keys of ``role`` to checkpoint keys. Returns (mapping, keys not mapped);
    unmapped keys are kept under ``unmapped.<role>.`` so they count as the ignored ``other`` component.
    Every checkpoint prefix in ``COMFY_LAYOUTS`` is one ``layout.PREFIXES`` knows (a test checks it)."""
    out: dict[str, Any] = {}
    unmapped: list[str] = []
    for key, t in state.items():
        for src, dst in layouts.get(role, []):
            if key.startswith(src):
                out[dst + key[len(src):]] = t
                break
        else:
            unmapped.append(key)
            out[f"unmapped.{role}.{key}"] = t
    return out, unmapped
