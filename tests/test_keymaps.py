"""fpcore.keymaps against golden names from outside this project (testkit/data/diffusers_keys/:
the diffusers names of the released SD1.5 / SD2.1 / SDXL-base components and the original names
diffusers' own conversion scripts give them), with no file written: every golden pair both ways,
the block structure read from the real models' block lists, the open_clip names, and the host
layouts. tests/test_diffusers_golden.py checks the same through folders on disk."""
from __future__ import annotations

import numpy as np
import pytest

from fpcore.sources import keymaps
from testkit.diffusers import block, golden

UNETS = {"sd1_unet": (4, 2, {1, 2, 3}), "sd2_unet": (4, 2, {1, 2, 3}), "sdxl_unet": (3, 2, {0, 1})}
#: levels, resnets per level, up levels with attention: from each model's config.json (SD1.5 / SD2.1:
#: 4 levels, CrossAttnUpBlock2D x3 then UpBlock2D; SDXL: 3 levels, CrossAttnUpBlock2D x2 then UpBlock2D)


def _block_keys(g: dict) -> list[str]:
    """Key prefixes of every block of the real model (its diffusers_blocks list)."""
    return [b + "." for b in g["diffusers_blocks"]]


@pytest.mark.parametrize("name", sorted(UNETS))
def test_unet_structure_and_every_golden_pair_both_ways(name):
    g = golden(name)
    assert keymaps.unet_structure(_block_keys(g)) == UNETS[name]
    pairs = keymaps.unet_pairs(*UNETS[name])
    prefix = "model.diffusion_model."
    rows = g["pairs"]
    assert len(rows) >= 100
    for hf, orig, _, _ in rows:
        assert orig.startswith(prefix)
        assert keymaps.map_key(hf, pairs) == orig[len(prefix):], hf
        assert keymaps.map_key(orig[len(prefix):], pairs, reverse=True) == hf, orig


def test_vae_structure_and_every_golden_pair():
    g = golden("vae")
    assert keymaps.vae_structure(_block_keys(g)) == (4, 2)
    pairs = keymaps.vae_pairs(4, 2)
    prefix = "first_stage_model."
    for hf, orig, _, _ in g["pairs"]:
        assert keymaps.map_key(hf, pairs) == orig[len(prefix):], hf
        assert keymaps.map_key(orig[len(prefix):], pairs, reverse=True) == hf, orig
    for hf, orig, _, _ in g["pairs_old"]:      # diffusers before 0.14: query/key/value/proj_attn
        assert keymaps.map_key(hf, pairs) == orig[len(prefix):], hf


def _real_prefix(d: str, g: dict) -> bool:
    """Whether a diffusers prefix names a block of the real model, or starts a golden key."""
    b = block(d + "x")
    return b in set(g["diffusers_blocks"]) if b else any(hf.startswith(d) for hf, _, _, _ in g["pairs"])


@pytest.mark.parametrize("name", sorted(UNETS) + ["vae"])
def test_every_pair_is_a_part_of_the_real_model_and_prefixes_are_unique(name):
    """No pair for a block the model has not got (a downsampler on the last level, a third mid
    resnet), and no two pairs with one prefix (the longest-prefix rule then never meets a tie)."""
    g = golden(name)
    pairs = keymaps.vae_pairs(4, 2) if name == "vae" else keymaps.unet_pairs(*UNETS[name])
    sdxl_only = {"add_embedding.linear_1.", "add_embedding.linear_2."}     # SDXL's ADM; harmless elsewhere
    # unet_pairs gives every down level attention pairs (the structure it is given knows only the up
    # levels'); on a level without attention they match no key of either layout, so they are harmless
    no_attn = {f"down_blocks.{i}.attentions.{j}." for i in range(4) for j in range(2)
               if name != "vae" and UNETS[name][0] - 1 - i not in UNETS[name][2]}
    extra = [d for d, _, _ in pairs if not _real_prefix(d, g) and not (name != "sdxl_unet" and d in sdxl_only)
             and d not in no_attn]
    assert extra == [], extra
    for side in (0, 1):
        prefixes = [p[side] for p in pairs]
        assert len(prefixes) == len(set(prefixes)), name


def test_block_counts_of_keys_without_blocks():
    assert keymaps.unet_structure(["conv_in.weight"]) == (0, 0, set())
    assert keymaps.vae_structure(["encoder.conv_in.weight"]) == (0, 0)
    assert keymaps.unet_structure(["down_blocks.0.resnets.0.x", "up_blocks.0.resnets.0.x"]) == (1, 1, set())


def test_a_key_no_pair_covers_is_left_as_it_is():
    pairs = keymaps.unet_pairs(4, 2, {1, 2, 3})
    for key in ("something.else.weight", "conv_inx.weight", ""):
        assert keymaps.map_key(key, pairs) == key and keymaps.map_key(key, pairs, reverse=True) == key
    # the longest prefix wins: up_blocks.1.resnets.1. is not up_blocks.1.resnets.10.
    assert keymaps.map_key("up_blocks.1.resnets.1.conv1.weight", pairs) == "output_blocks.4.0.in_layers.2.weight"


@pytest.mark.parametrize("name,prefix,layers", [("clip_h", "cond_stage_model.model.", 23),
                                                ("clip_g", "conditioner.embedders.1.model.", 32)])
def test_openclip_names_of_every_golden_pair(name, prefix, layers):
    g = golden(name)
    hf_names = [hf for hf, _, _, _ in g["pairs"]]
    assert keymaps.hf_clip_layers(dict.fromkeys(hf_names + [f"text_model.encoder.layers.{layers - 1}.mlp.fc1.weight"])) \
        == layers
    assert keymaps.OPENCLIP_BY_LAYERS[layers] == prefix
    for hf, orig, _, how in g["pairs"]:
        inner = orig[len(prefix):]
        if how and how.startswith("qkv:"):          # q, k, v: one third each of in_proj_*
            m = keymaps.QKV.match(hf)
            assert m and "qkv"[int(how[4:])] == m.group(2)
            assert inner == f"transformer.resblocks.{m.group(1)}.attn.in_proj_{m.group(3)}"
            assert keymaps.openclip_key(hf) is None
        elif how == "T":                             # the projection, stored transposed
            assert keymaps.openclip_key(hf) is None and inner == "text_projection"
        else:
            assert keymaps.openclip_key(hf) == inner, hf
            assert not keymaps.QKV.match(hf)


def test_hf_clip_layers_of_keys_without_layers():
    assert keymaps.hf_clip_layers({"text_model.final_layer_norm.weight": 1}) == 0
    assert keymaps.hf_clip_layers({}) == 0
    assert keymaps.hf_clip_layers({"text_model.encoder.layers.11.mlp.fc1.weight": 1,
                                   "text_model.encoder.layers.3.mlp.fc1.weight": 1}) == 12


def test_comfy_layouts_to_checkpoint_names():
    t = np.zeros(1)
    out, unmapped = keymaps.remap({"diffusion_model.input_blocks.0.0.weight": t, "model_sampling.sigmas": t}, "model")
    assert out == {"model.diffusion_model.input_blocks.0.0.weight": t, "unmapped.model.model_sampling.sigmas": t}
    assert unmapped == ["model_sampling.sigmas"]
    out, unmapped = keymaps.remap({"clip_l.transformer.text_model.final_layer_norm.weight": t,
                                   "clip_g.transformer.text_model.final_layer_norm.weight": t}, "clip")
    assert list(out) == ["cond_stage_model.transformer.text_model.final_layer_norm.weight",
                         "unmapped.clip.clip_g.transformer.text_model.final_layer_norm.weight"]
    assert unmapped == ["clip_g.transformer.text_model.final_layer_norm.weight"]
    out, unmapped = keymaps.remap({"decoder.conv_in.weight": t}, "vae")
    assert list(out) == ["first_stage_model.decoder.conv_in.weight"] and unmapped == []
    out, unmapped = keymaps.remap({"x": t}, "no_such_role")
    assert list(out) == ["unmapped.no_such_role.x"] and unmapped == ["x"]
    # another layout table: first matching prefix wins
    out, _ = keymaps.remap({"a.b": t}, "r", {"r": [("a.", "first."), ("a.b", "second.")]})
    assert list(out) == ["first.b"]
