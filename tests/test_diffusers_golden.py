"""Golden diffusers key names: a diffusers folder must show the original single-file keys.

The names come from outside this project (testkit/data/diffusers_keys/, each file says where):
the diffusers key names of the released SD1.5 / SD2.1 / SDXL-base components and the
original names that diffusers' own conversion scripts give them. Nothing here uses
fpcore's key map. Folders are written from a single file by testkit.diffusers with the
scripts' renaming tables (rules.json), inverted by search and checked both ways: every
written key has the form of a real diffusers key and the scripts' forward renaming gives
back the original name (every test that writes a diffusers folder uses that writer).

(1) every golden pair: the opened folder exposes the original key, with the values of the
    diffusers tensor (q/k/v concatenated in that order into in_proj_*, text_projection
    transposed, VAE attention linears as 1x1 convs);
(2) SD1, SD2, SDXL: a folder and its single-file twin have the same components and the same
    sampled values per canonical key.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import testkit as kit

from fpcore.sources import open_source

from fpcore.identify import fingerprint_path

from testkit.diffusers import (FAMILY, Real, golden, openclip_forward, rules, unet_forward, vae_forward,
                               write_diffusers)

SEED = 1234


def single_file_state(family: str) -> dict[str, np.ndarray]:
    spec = kit.checkpoint_spec(family, "tiny")
    return {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
            for k, v in kit.random_state_dict(spec, SEED).items()}


def write_folder(root: Path, family: str, sd: dict[str, np.ndarray], old_vae: bool = False) -> Path:
    return write_diffusers(root, sd, family, "F32", old_vae=old_vae)


@pytest.fixture(scope="module")
def states():
    return {f: single_file_state(f) for f in FAMILY}


@pytest.fixture(scope="module")
def twins(tmp_path_factory, states):
    """family -> (single file, diffusers folder, diffusers folder with pre-0.14 VAE names)"""
    out = {}
    for fam, sd in states.items():
        d = tmp_path_factory.mktemp(fam)
        kit.write_safetensors(d / f"{fam}.safetensors", sd, "F32")
        out[fam] = (d / f"{fam}.safetensors", write_folder(d / "diffusers", fam, sd),
                    write_folder(d / "diffusers_oldvae", fam, sd, old_vae=True))
    return out


# -- the data itself -----------------------------------------------------------------------------

GOLDEN_FILES = ["sd1_unet", "sd2_unet", "sdxl_unet", "clip_l", "clip_h", "clip_g", "vae"]


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden_tables_agree_with_the_scripts_renaming(name):
    """Each golden pair is what the conversion script's tables give, and covers every block type."""
    g = golden(name)
    assert "huggingface/diffusers scripts/convert_diffusers_to_original" in g["source"]
    assert len(g["pairs"]) >= 40
    R = rules()
    for rows, old in ((g["pairs"], False), (g.get("pairs_old", []), True)):
        for hf, orig, shape, how in rows:
            assert hf in Real(g, old)
            if name.endswith("unet"):
                r = R["sdxl" if name == "sdxl_unet" else "sd"]["unet"]
                assert "model.diffusion_model." + unet_forward(hf, r) == orig
            elif name == "vae":
                r = R["sd"]["vae"] if old else R["sdxl"]["vae"]
                assert "first_stage_model." + vae_forward(hf, r) == orig
            elif name == "clip_l":
                assert "cond_stage_model.transformer." + hf == orig
            else:
                sd2 = name == "clip_h"
                key, idx = openclip_forward(hf, R["sd"]["text_v20"] if sd2 else R["sdxl"]["text_openclip"], sd2)
                prefix = "cond_stage_model.model." if sd2 else "conditioner.embedders.1.model."
                assert prefix + key == orig and (how == f"qkv:{idx}" if idx is not None else how != "qkv")
    text = " ".join(r[0] for r in g["pairs"])
    needed = {
        "unet": ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_k", "to_out.0", "ff.net.0.proj", "proj_in",
                 "resnets.0.norm1", "time_emb_proj", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv",
                 "time_embedding.linear_1", "mid_block.attentions.0", "mid_block.resnets.1", "conv_in", "conv_out"],
        "vae": ["mid_block.attentions.0.to_q", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv",
                "mid_block.resnets.1", "conv_norm_out", "quant_conv"],
        "clip": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "layer_norm1", "final_layer_norm",
                 "token_embedding", "position_embedding"],
    }["unet" if name.endswith("unet") else "vae" if name == "vae" else "clip"]
    if name == "sdxl_unet":
        needed.append("add_embedding.linear_2")
    if name == "clip_g":
        needed.append("text_projection")
    for n in needed:
        assert n in text, (name, n)
    if name == "vae":
        assert "mid_block.attentions.0.query" in " ".join(r[0] for r in g["pairs_old"])


# -- (1) every golden pair through the public opener -------------------------------------------

def _elements(src, key: str) -> np.ndarray:
    t = src.tensors[key]
    raw = src.read_elements([(key, 0, t.numel)])[0]
    assert t.dtype == "F32", (key, t.dtype)
    return np.frombuffer(raw, "<f4").reshape(t.shape)


def _golden_rows(family: str):
    for comp, prefix, folder, gold, _ in FAMILY[family]:
        g = golden(gold)
        for hf, orig, shape, how in g["pairs"]:
            if gold == "clip_l":
                orig = prefix + orig[len("cond_stage_model.transformer."):]
            yield comp, folder, hf, orig, how


@pytest.mark.parametrize("family", list(FAMILY))
def test_every_golden_pair_is_exposed_with_its_values(twins, family):
    _, folder, _ = twins[family]
    from safetensors.numpy import load_file
    stored = {}
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2"):
        for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
            if (folder / sub / name).exists():
                stored[sub] = load_file(str(folder / sub / name))
    missing, wrong = [], []
    with open_source(folder) as src:
        exposed = set(src.tensors)
        rows = list(_golden_rows(family))
        for comp, sub, hf, orig, how in rows:
            if hf not in stored[sub]:   # golden names the tiny twin lacks would be a writer bug
                raise AssertionError(f"{sub}/{hf} not written")
            if orig not in exposed:
                missing.append(orig)
                continue
            got = _elements(src, orig)
            want = stored[sub][hf]
            if how and how.startswith("qkv:"):
                i = int(how[4:])
                n = want.shape[0]
                got = got[i * n:(i + 1) * n]
            elif how == "T":
                want = want.T
            elif how == "1x1":
                got = got.reshape(want.shape)
            if got.shape != want.shape or not np.array_equal(got, want):
                wrong.append(orig)
    assert not missing, f"{family}: {len(missing)} of {len(rows)} golden original keys not exposed, e.g. {missing[:4]}"
    assert not wrong, f"{family}: values differ for {wrong[:4]}"


def test_vae_attention_with_pre_014_names_is_exposed(twins):
    _, _, folder = twins["sd1"]
    with open_source(folder) as src:
        exposed = set(src.tensors)
        for hf, orig, shape, how in golden("vae")["pairs_old"]:
            assert orig in exposed, (hf, orig)
            if how == "1x1":
                assert len(src.tensors[orig].shape) == 4


# -- (2) a folder and its single-file twin --------------------------------------------------------

@pytest.mark.parametrize("old_vae", [False, True], ids=["vae", "vae_pre014"])
@pytest.mark.parametrize("family", list(FAMILY))
def test_folder_fingerprints_like_its_single_file(twins, family, old_vae):
    single, folder, folder_old = twins[family]
    fa, aa = fingerprint_path(single)[:2]
    fb, ab = fingerprint_path(folder_old if old_vae else folder)[:2]
    assert ab.components == aa.components, f"{family}: folder {ab.components} vs single file {aa.components}"
    assert ab.family == aa.family
    ia, ib = fa.index, fb.index
    only_single = [k for k in ia if k not in ib]
    only_folder = [k for k in ib if k not in ia]
    assert not only_folder, only_folder[:4]
    # open_clip's logit_scale has no diffusers counterpart, nor have the SD2 text encoder's 24th layer
    # and projection (see clip_g.json, clip_h.json)
    allowed = r"resblocks\.23\.|text_projection|logit_scale" if family == "sd2" else r":logit_scale$"
    assert all(re.search(allowed, k) for k in only_single), only_single[:4]
    if family == "sd2":
        assert any("resblocks.23." in k for k in only_single)
    diff = [k for k in ib if fa.shapes[ia[k]] != fb.shapes[ib[k]] or fa.h_val[ia[k]] != fb.h_val[ib[k]]]
    assert not diff, f"{family}: {len(diff)} canonical keys sample differently, e.g. {diff[:4]}"
