"""Synthetic Stable Diffusion checkpoints for tests and benchmarks.

Builds the key names and tensor shapes of real single-file checkpoints
(LDM / SGM layout, exactly as in the files people download) at full size or
at reduced width, fills them with deterministic random weights of realistic
statistics, and writes them as ``.safetensors`` with an own writer (so that
BF16 and FP8 can be produced from numpy).

Architecture knowledge lives in the tables ``_UNET``, ``_TEXT``, ``_VAE``,
``_FAMILY`` and ``_SIZES``; the generators (``_unet_spec``, ``_hf_clip_spec``,
``_open_clip_spec``, ``_vae_spec``) are generic.

Public API::

    FAMILIES, VARIANT_FAMILIES, ALL_FAMILIES
    COMPONENTS
    SIZES
    checkpoint_spec(family, size="tiny", components=None) -> {key: shape}
    dtype_of_key(key) -> "F16" | "I64"
    random_state_dict(spec, seed, *, scale_by_fan_in=True) -> {key: ndarray}
    write_safetensors(path, tensors, dtype="F16", metadata=None, order="sorted")
    write_spec_file(path, spec, dtype="F16", *, fill="sparse", metadata=None,
                    seed=0, order="sorted") -> file size
    param_count(spec) -> int          (excluding integer buffers by default)
    spec_nbytes(spec, dtype="F16") -> int  (tensor data bytes)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import tempfile
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "FAMILIES",
    "VARIANT_FAMILIES",
    "ALL_FAMILIES",
    "COMPONENTS",
    "SIZES",
    "DTYPES",
    "checkpoint_spec",
    "dtype_of_key",
    "random_state_dict",
    "write_safetensors",
    "write_spec_file",
    "param_count",
    "spec_nbytes",
]

FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner")
#: same layout as their base family, different UNet input channels
VARIANT_FAMILIES = ("sd1_inpaint", "sd1_pix2pix", "sd2_inpaint", "sdxl_inpaint")
ALL_FAMILIES = FAMILIES + VARIANT_FAMILIES
COMPONENTS = ("unet", "clip_l", "clip_g", "clip_h", "vae")
SIZES = ("tiny", "small", "full")

# safetensors dtype name -> (numpy dtype, bytes per element)
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
}
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")

# --------------------------------------------------------------------------
# Architecture tables (full size).  Widths that shrink with `size` are the
# UNet `model_channels`, the text-encoder `width`/`mlp` and the VAE `ch`;
# everything else (layer counts, context dims, adm dims, vocab, positions,
# latent/image channels) is kept real at every size.
# --------------------------------------------------------------------------

_UNET: dict[str, dict] = {
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

_TEXT: dict[str, dict] = {
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
_VAE = dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4,
            in_channels=3, out_ch=3, double_z=True, embed_dim=4)

# Per family: ordered (component, key prefix) as in the original file.
_FAMILY: dict[str, dict] = {
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
_VARIANTS: dict[str, tuple[str, dict]] = {
    "sd1_inpaint": ("sd1", dict(in_channels=9)),
    "sd1_pix2pix": ("sd1", dict(in_channels=8)),
    "sd2_inpaint": ("sd2", dict(in_channels=9)),
    "sdxl_inpaint": ("sdxl", dict(in_channels=9)),
}

# Reduced widths.  GroupNorm(32) needs channel counts that are multiples of 32.
# "tiny" also sets the SpatialTransformer inner dim (n_heads * d_head) to 32 at
# every level (released models use inner = channels): with the real context
# dims, attn2.to_k/to_v would otherwise make a tiny SDXL file ~140 MB.
_SIZES: dict[str, dict] = {
    "tiny": dict(model_channels=32, attn_dim=32, text_width=64, text_mlp=256, vae_ch=32),
    "small": dict(model_channels=64, text_width=128, text_mlp=512, vae_ch=64),
    "full": dict(),
}

Spec = dict[str, tuple[int, ...]]


# --------------------------------------------------------------------------
# Generic generators
# --------------------------------------------------------------------------

def _lin(out: int, inp: int, bias: bool = True) -> list[tuple[str, tuple[int, ...]]]:
    r = [("weight", (out, inp))]
    if bias:
        r.append(("bias", (out,)))
    return r


def _conv(out: int, inp: int, k: int, bias: bool = True) -> list[tuple[str, tuple[int, ...]]]:
    r = [("weight", (out, inp, k, k))]
    if bias:
        r.append(("bias", (out,)))
    return r


def _norm(c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [("weight", (c,)), ("bias", (c,))]


class _Builder:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.spec: Spec = {}

    def add(self, name: str, params: Iterable[tuple[str, tuple[int, ...]]]) -> None:
        for pname, shape in params:
            key = f"{self.prefix}{name}.{pname}" if name else f"{self.prefix}{pname}"
            if key in self.spec:
                raise AssertionError(f"duplicate key {key}")
            self.spec[key] = tuple(int(s) for s in shape)


def _unet_resblock(b: _Builder, name: str, cin: int, cout: int, temb: int) -> None:
    b.add(f"{name}.in_layers.0", _norm(cin))
    b.add(f"{name}.in_layers.2", _conv(cout, cin, 3))
    b.add(f"{name}.emb_layers.1", _lin(cout, temb))
    b.add(f"{name}.out_layers.0", _norm(cout))
    b.add(f"{name}.out_layers.3", _conv(cout, cout, 3))
    if cin != cout:
        b.add(f"{name}.skip_connection", _conv(cout, cin, 1))


def _unet_transformer(b: _Builder, name: str, c: int, depth: int, ctx: int,
                      linear: bool, inner: int | None = None) -> None:
    # SpatialTransformer(c, n_heads, d_head): inner_dim = n_heads * d_head, which
    # equals c in every released SD model; the blocks work at inner_dim
    # (LayerNorms, attention, GEGLU feed-forward with mult 4).
    inner = inner or c
    ff = 4 * inner
    b.add(f"{name}.norm", _norm(c))
    b.add(f"{name}.proj_in", _lin(inner, c) if linear else _conv(inner, c, 1))
    for d in range(depth):
        t = f"{name}.transformer_blocks.{d}"
        b.add(f"{t}.attn1.to_q", _lin(inner, inner, bias=False))
        b.add(f"{t}.attn1.to_k", _lin(inner, inner, bias=False))
        b.add(f"{t}.attn1.to_v", _lin(inner, inner, bias=False))
        b.add(f"{t}.attn1.to_out.0", _lin(inner, inner))
        b.add(f"{t}.ff.net.0.proj", _lin(2 * ff, inner))  # GEGLU
        b.add(f"{t}.ff.net.2", _lin(inner, ff))
        b.add(f"{t}.attn2.to_q", _lin(inner, inner, bias=False))
        b.add(f"{t}.attn2.to_k", _lin(inner, ctx, bias=False))
        b.add(f"{t}.attn2.to_v", _lin(inner, ctx, bias=False))
        b.add(f"{t}.attn2.to_out.0", _lin(inner, inner))
        b.add(f"{t}.norm1", _norm(inner))
        b.add(f"{t}.norm2", _norm(inner))
        b.add(f"{t}.norm3", _norm(inner))
    b.add(f"{name}.proj_out", _lin(c, inner) if linear else _conv(c, inner, 1))


def _unet_spec(prefix: str, cfg: Mapping) -> Spec:
    """openaimodel.UNetModel (LDM / SGM) state-dict keys and shapes."""
    b = _Builder(prefix)
    mc = cfg["model_channels"]
    mult = cfg["channel_mult"]
    nrb = cfg["num_res_blocks"]
    depth = cfg["transformer_depth"]
    ctx = cfg["context_dim"]
    linear = cfg["use_linear_in_transformer"]
    attn = cfg.get("attn_dim")
    temb = 4 * mc

    b.add("time_embed.0", _lin(temb, mc))
    b.add("time_embed.2", _lin(temb, temb))
    if cfg.get("adm_in_channels"):
        b.add("label_emb.0.0", _lin(temb, cfg["adm_in_channels"]))
        b.add("label_emb.0.2", _lin(temb, temb))

    b.add("input_blocks.0.0", _conv(mc, cfg["in_channels"], 3))
    chans = [mc]
    ch = mc
    n = 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            _unet_resblock(b, f"input_blocks.{n}.0", ch, m * mc, temb)
            ch = m * mc
            if depth[level]:
                _unet_transformer(b, f"input_blocks.{n}.1", ch, depth[level], ctx, linear, attn)
            chans.append(ch)
            n += 1
        if level != len(mult) - 1:
            b.add(f"input_blocks.{n}.0.op", _conv(ch, ch, 3))
            chans.append(ch)
            n += 1

    _unet_resblock(b, "middle_block.0", ch, ch, temb)
    _unet_transformer(b, "middle_block.1", ch, cfg["transformer_depth_middle"], ctx, linear, attn)
    _unet_resblock(b, "middle_block.2", ch, ch, temb)

    n = 0
    for level in reversed(range(len(mult))):
        for i in range(nrb + 1):
            skip = chans.pop()
            _unet_resblock(b, f"output_blocks.{n}.0", ch + skip, mult[level] * mc, temb)
            ch = mult[level] * mc
            j = 1
            if depth[level]:
                _unet_transformer(b, f"output_blocks.{n}.1", ch, depth[level], ctx, linear, attn)
                j = 2
            if level and i == nrb:
                b.add(f"output_blocks.{n}.{j}.conv", _conv(ch, ch, 3))
            n += 1

    b.add("out.0", _norm(ch))
    b.add("out.2", _conv(cfg["out_channels"], mc, 3))
    return b.spec


def _hf_clip_spec(prefix: str, cfg: Mapping) -> Spec:
    """transformers.CLIPTextModel ``text_model.*`` keys (prefix ends in text_model.)."""
    b = _Builder(prefix)
    w, mlp = cfg["width"], cfg["mlp"]
    b.add("embeddings.token_embedding", [("weight", (cfg["vocab"], w))])
    b.add("embeddings.position_embedding", [("weight", (cfg["positions"], w))])
    if cfg.get("position_ids"):
        b.add("embeddings", [("position_ids", (1, cfg["positions"]))])
    for i in range(cfg["layers"]):
        layer = f"encoder.layers.{i}"
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            b.add(f"{layer}.self_attn.{p}", _lin(w, w))
        b.add(f"{layer}.layer_norm1", _norm(w))
        b.add(f"{layer}.mlp.fc1", _lin(mlp, w))
        b.add(f"{layer}.mlp.fc2", _lin(w, mlp))
        b.add(f"{layer}.layer_norm2", _norm(w))
    b.add("final_layer_norm", _norm(w))
    return b.spec


def _open_clip_spec(prefix: str, cfg: Mapping) -> Spec:
    """open_clip text tower keys as stored by SD2 / SGM (prefix ends in model.)."""
    b = _Builder(prefix)
    w, mlp = cfg["width"], cfg["mlp"]
    b.add("", [("positional_embedding", (cfg["positions"], w))])
    b.add("", [("text_projection", (w, cfg["proj"]))])
    b.add("", [("logit_scale", ())])
    b.add("token_embedding", [("weight", (cfg["vocab"], w))])
    for i in range(cfg["layers"]):
        r = f"transformer.resblocks.{i}"
        b.add(f"{r}.ln_1", _norm(w))
        b.add(f"{r}.attn", [("in_proj_weight", (3 * w, w)), ("in_proj_bias", (3 * w,))])
        b.add(f"{r}.attn.out_proj", _lin(w, w))
        b.add(f"{r}.ln_2", _norm(w))
        b.add(f"{r}.mlp.c_fc", _lin(mlp, w))
        b.add(f"{r}.mlp.c_proj", _lin(w, mlp))
    b.add("ln_final", _norm(w))
    return b.spec


def _vae_resblock(b: _Builder, name: str, cin: int, cout: int) -> None:
    b.add(f"{name}.norm1", _norm(cin))
    b.add(f"{name}.conv1", _conv(cout, cin, 3))
    b.add(f"{name}.norm2", _norm(cout))
    b.add(f"{name}.conv2", _conv(cout, cout, 3))
    if cin != cout:
        b.add(f"{name}.nin_shortcut", _conv(cout, cin, 1))


def _vae_mid(b: _Builder, name: str, c: int) -> None:
    _vae_resblock(b, f"{name}.block_1", c, c)
    b.add(f"{name}.attn_1.norm", _norm(c))
    for p in ("q", "k", "v", "proj_out"):
        b.add(f"{name}.attn_1.{p}", _conv(c, c, 1))
    _vae_resblock(b, f"{name}.block_2", c, c)


def _vae_spec(prefix: str, cfg: Mapping) -> Spec:
    """ldm AutoencoderKL (Encoder/Decoder from diffusionmodules.model)."""
    b = _Builder(prefix)
    ch, mult, nrb, z = cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"], cfg["z_channels"]
    # encoder
    b.add("encoder.conv_in", _conv(ch, cfg["in_channels"], 3))
    in_mult = (1,) + tuple(mult)
    cin = ch
    for i, m in enumerate(mult):
        cin = ch * in_mult[i]
        cout = ch * m
        for j in range(nrb):
            _vae_resblock(b, f"encoder.down.{i}.block.{j}", cin, cout)
            cin = cout
        if i != len(mult) - 1:
            b.add(f"encoder.down.{i}.downsample.conv", _conv(cin, cin, 3))
    _vae_mid(b, "encoder.mid", cin)
    b.add("encoder.norm_out", _norm(cin))
    b.add("encoder.conv_out", _conv(2 * z if cfg["double_z"] else z, cin, 3))
    # decoder (nn.ModuleList built with insert(0, ...): keys up.0 .. up.N-1)
    top = ch * mult[-1]
    b.add("decoder.conv_in", _conv(top, z, 3))
    _vae_mid(b, "decoder.mid", top)
    ups: dict[int, Spec] = {}
    cin = top
    for i in reversed(range(len(mult))):
        ub = _Builder(b.prefix)
        cout = ch * mult[i]
        for j in range(nrb + 1):
            _vae_resblock(ub, f"decoder.up.{i}.block.{j}", cin, cout)
            cin = cout
        if i != 0:
            ub.add(f"decoder.up.{i}.upsample.conv", _conv(cin, cin, 3))
        ups[i] = ub.spec
    for i in range(len(mult)):
        b.spec.update(ups[i])
    b.add("decoder.norm_out", _norm(cin))
    b.add("decoder.conv_out", _conv(cfg["out_ch"], cin, 3))
    e = cfg["embed_dim"]
    b.add("quant_conv", _conv(2 * e, 2 * z, 1))
    b.add("post_quant_conv", _conv(z, e, 1))
    return b.spec


def _sized_unet(name: str, size: str) -> dict:
    cfg = dict(_UNET[name])
    s = _SIZES[size]
    if "model_channels" in s:
        cfg["model_channels"] = s["model_channels"]
    cfg["attn_dim"] = s.get("attn_dim")
    return cfg


def _sized_text(name: str, size: str) -> dict:
    cfg = dict(_TEXT[name])
    s = _SIZES[size]
    if "text_width" in s:
        cfg["width"] = s["text_width"]
        cfg["mlp"] = s["text_mlp"]
        if "proj" in cfg:
            cfg["proj"] = s["text_width"]
    return cfg


def _sized_vae(size: str) -> dict:
    cfg = dict(_VAE)
    s = _SIZES[size]
    if "vae_ch" in s:
        cfg["ch"] = s["vae_ch"]
    return cfg


def checkpoint_spec(family: str, size: str = "tiny", components=None) -> Spec:
    """Key -> shape of a single-file checkpoint of `family`, in file-module order.

    `components`: None for all parts of the family, else an iterable over
    COMPONENTS; names that the family does not have (e.g. "clip_g" for sd1)
    are skipped, unknown names raise ValueError.
    """
    overrides: dict = {}
    if family in _VARIANTS:
        family, overrides = _VARIANTS[family]
    if family not in _FAMILY:
        raise ValueError(f"unknown family {family!r}; known: {ALL_FAMILIES}")
    if size not in _SIZES:
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
    fam = _FAMILY[family]
    spec: Spec = {}
    for comp, prefix in fam["parts"]:
        if comp not in wanted:
            continue
        if comp == "unet":
            part = _unet_spec(prefix, {**_sized_unet(fam["unet"], size), **overrides})
        elif comp == "vae":
            part = _vae_spec(prefix, _sized_vae(size))
        else:
            cfg = _sized_text(comp, size)
            gen = _hf_clip_spec if cfg["kind"] == "hf_clip" else _open_clip_spec
            part = gen(prefix, cfg)
        spec.update(part)
    return spec


# --------------------------------------------------------------------------
# dtypes, sizes, random weights
# --------------------------------------------------------------------------

def dtype_of_key(key: str) -> str:
    """Default dtype class of a key: integer buffers are "I64", the rest "F16"."""
    if key.endswith("position_ids"):
        return "I64"
    return "F16"


def _is_int_key(key: str) -> bool:
    return dtype_of_key(key).startswith("I")


def param_count(spec: Mapping[str, tuple[int, ...]], *, include_int: bool = False) -> int:
    """Number of elements in `spec` (integer buffers such as position_ids excluded by default)."""
    return sum(math.prod(s) for k, s in spec.items() if include_int or not _is_int_key(k))


def _resolve_dtype(key: str, dtype: str | Mapping[str, str], is_int: bool) -> str:
    if is_int:
        return "I64"
    d = dtype.get(key, "F16") if isinstance(dtype, Mapping) else dtype
    if d not in _FLOAT_DTYPES:
        raise ValueError(f"unsupported float dtype {d!r} for {key}; known: {_FLOAT_DTYPES}")
    return d


def spec_nbytes(spec: Mapping[str, tuple[int, ...]], dtype: str | Mapping[str, str] = "F16") -> int:
    """Bytes of tensor data (without header) when `spec` is written with `dtype`."""
    return sum(math.prod(s) * DTYPES[_resolve_dtype(k, dtype, _is_int_key(k))].itemsize
               for k, s in spec.items())


def _key_rng(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
    words = [int(w) for w in np.frombuffer(digest, dtype="<u4")]
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *words])


_EMBED_MARKERS = ("token_embedding", "position_embedding", "positional_embedding")


def _random_tensor(key: str, shape: tuple[int, ...], seed: int, scale_by_fan_in: bool) -> np.ndarray:
    if key.endswith("position_ids"):
        return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    if key.endswith("logit_scale"):
        return np.full(shape, np.log(100.0), dtype=np.float32)  # 4.6052
    rng = _key_rng(seed, key)
    x = rng.standard_normal(shape, dtype=np.float32)
    leaf = key.rsplit(".", 1)[-1]
    if any(m in key for m in _EMBED_MARKERS):
        x *= np.float32(0.02)
    elif leaf.endswith("bias"):  # bias, in_proj_bias
        x *= np.float32(0.02)
    elif len(shape) == 1:  # every 1-D weight is a LayerNorm / GroupNorm scale
        x = np.float32(1.0) + np.float32(0.05) * x
    elif len(shape) >= 2 and scale_by_fan_in:
        fan_in = math.prod(shape[1:])
        x *= np.float32(1.0 / math.sqrt(fan_in))
    return x


def random_state_dict(spec: Mapping[str, tuple[int, ...]], seed: int, *,
                      scale_by_fan_in: bool = True) -> dict[str, np.ndarray]:
    """Deterministic float32 tensors (int64 for position_ids) for every key of `spec`.

    Each tensor depends only on (seed, key, shape): weights ~ N(0, 1/fan_in)
    (N(0, 1) if not scale_by_fan_in), norm scales 1 + 0.05 N, biases 0.02 N,
    embeddings 0.02 N, logit_scale ln(100), position_ids arange.
    """
    return {k: _random_tensor(k, tuple(s), seed, scale_by_fan_in) for k, s in spec.items()}


# --------------------------------------------------------------------------
# safetensors writing
# --------------------------------------------------------------------------

def _ordered_keys(keys: Iterable[str], order: str) -> list[str]:
    ks = sorted(keys)
    if order == "sorted":
        return ks
    if order == "reverse":
        return ks[::-1]
    if order == "insertion":
        return list(keys)
    if order.startswith("shuffle:"):
        random.Random(int(order.split(":", 1)[1])).shuffle(ks)
        return ks
    raise ValueError(f"unknown order {order!r}: use 'sorted', 'reverse', 'insertion' or 'shuffle:<seed>'")


def _convert(arr: np.ndarray, dt: str) -> np.ndarray:
    if dt == "I64":
        return np.ascontiguousarray(arr, dtype="<i8")
    a = np.asarray(arr)
    if dt.startswith("F8_"):
        fi = ml_dtypes.finfo(DTYPES[dt])
        a = np.clip(a.astype(np.float32, copy=False), float(fi.min), float(fi.max))  # saturate
    return np.ascontiguousarray(a.astype(DTYPES[dt], copy=False))


def _header_bytes(entries: list[tuple[str, str, tuple[int, ...], int]],
                  metadata: Mapping[str, str] | None) -> bytes:
    """entries: (key, dtype, shape, nbytes) in data order -> padded header incl. 8-byte length."""
    header: dict = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    off = 0
    for key, dt, shape, nbytes in entries:
        header[key] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def _atomic_write(path, writer) -> None:
    from .paths import atomic_write
    atomic_write(path, writer)


def write_safetensors(path, tensors: Mapping[str, np.ndarray], dtype: str | Mapping[str, str] = "F16",
                      metadata: Mapping[str, str] | None = None, order: str = "sorted") -> None:
    """Write `tensors` as a safetensors file (own writer; supports BF16 and FP8).

    Float arrays are converted to `dtype` (one name for all, or a key -> name
    dict, default "F16" for missing keys); integer arrays are written as I64.
    FP8 conversion saturates to the finite range.  `order` sets the order of
    the tensor data in the file ("sorted", "reverse", "insertion",
    "shuffle:<seed>"); the header lists tensors in the same order.
    """
    keys = _ordered_keys(tensors.keys(), order)
    converted: list[tuple[str, np.ndarray]] = []
    entries = []
    for k in keys:
        a = np.asarray(tensors[k])
        is_int = np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_
        dt = _resolve_dtype(k, dtype, is_int)
        c = _convert(a, dt)
        converted.append((k, c))
        entries.append((k, dt, a.shape, c.nbytes))
    head = _header_bytes(entries, metadata)

    def _w(f):
        f.write(head)
        for _, c in converted:
            f.write(memoryview(c.reshape(-1).view(np.uint8)))

    _atomic_write(path, _w)
    log.debug("wrote %s: %d tensors, %d data bytes", path, len(keys), sum(e[3] for e in entries))


_CHUNK = 64 << 20


def write_spec_file(path, spec: Mapping[str, tuple[int, ...]], dtype: str | Mapping[str, str] = "F16", *,
                    fill: str = "sparse", metadata: Mapping[str, str] | None = None, seed: int = 0,
                    order: str = "sorted") -> int:
    """Write a safetensors file with a real header for `spec`, without materialising tensors.

    fill="sparse": the data region is a hole (truncate to size); fill="random":
    pseudo-random bytes from numpy's SFC64(seed) bit generator, streamed in
    64 MiB chunks (deterministic per seed; float data may then contain NaN/Inf
    bit patterns).  `order` as for write_safetensors.  Returns the file size.
    """
    if fill not in ("sparse", "random"):
        raise ValueError(f"unknown fill {fill!r}: use 'sparse' or 'random'")
    keys = _ordered_keys(spec.keys(), order)
    entries = []
    for k in keys:
        shape = tuple(spec[k])
        dt = _resolve_dtype(k, dtype, _is_int_key(k))
        entries.append((k, dt, shape, math.prod(shape) * DTYPES[dt].itemsize))
    head = _header_bytes(entries, metadata)
    data = sum(e[3] for e in entries)
    total = len(head) + data

    def _w(f):
        f.write(head)
        if fill == "sparse":
            f.truncate(total)
            return
        bits = np.random.SFC64(seed)  # raw 64-bit output: ~1 GB/s, 8x faster than Generator.bytes
        left = data
        while left:
            n = min(left, _CHUNK)
            words = bits.random_raw((n + 7) // 8)
            f.write(memoryview(words.view(np.uint8))[:n])
            left -= n

    _atomic_write(path, _w)
    log.debug("wrote %s (%s): %d tensors, %d bytes", path, fill, len(keys), total)
    return total


# --------------------------------------------------------------------------
# Lineage operations: fine-tunes, baked LoRAs, merges (bench/zoo.py, tests)
# --------------------------------------------------------------------------
import zlib  # noqa: E402

from . import layout  # noqa: E402

SHARED_RHO = 0.25        # weight of the shared direction: sibling delta cosine ~ 0.25^2 = 0.06
COMMON_SEED = 424242


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def _is_weight(v: np.ndarray) -> bool:
    return v.dtype == np.float32


def finetune(sd: dict, strength: float, seed: int, comps=("unet",), rho: float = SHARED_RHO) -> dict:
    """Dense fine-tune: relative RMS change ``strength`` per tensor, part of it shared."""
    out = {}
    for k, w in sd.items():
        if not _is_weight(w) or layout.canonical(k)[0] not in comps or w.size == 0:
            out[k] = w
            continue
        rms = float(np.sqrt(np.mean(w * w))) or 1.0
        g = _rng(seed, k).standard_normal(w.shape).astype(np.float32)
        c = _rng(COMMON_SEED, k).standard_normal(w.shape).astype(np.float32)
        shared = (c - w / rms) / math.sqrt(2.0)        # common data direction + weight decay
        d = math.sqrt(1 - rho * rho) * g + rho * shared
        d *= strength * rms / (float(np.sqrt(np.mean(d * d))) or 1.0)
        out[k] = w + d
    return out


def bake_lora(sd: dict, rank: int, strength: float, seed: int) -> dict:
    """W + B A on every 2-D / conv weight of the UNet's attention and feed-forward layers."""
    out = dict(sd)
    for k, w in sd.items():
        if not _is_weight(w) or w.ndim < 2 or layout.canonical(k)[0] != "unet":
            continue
        if not any(s in k for s in ("attn1", "attn2", ".ff.", "proj_in", "proj_out")):
            continue
        m = w.reshape(w.shape[0], -1)
        r = _rng(seed, k)
        B = r.standard_normal((m.shape[0], rank)).astype(np.float32)
        A = r.standard_normal((rank, m.shape[1])).astype(np.float32)
        d = B @ A
        d *= strength * float(np.sqrt(np.mean(m * m))) / (float(np.sqrt(np.mean(d * d))) or 1.0)
        out[k] = (m + d).reshape(w.shape)
    return out


def merge(parts: list[tuple[dict, float]], block_weights: dict[str, list[float]] | None = None) -> dict:
    """Weighted sum; with ``block_weights`` {group: [w per part]} UNet blocks get their own weights."""
    first = parts[0][0]
    out = {}
    for k in first:
        if not _is_weight(first[k]):
            out[k] = first[k]
            continue
        ws = [w for _, w in parts]
        if block_weights:
            g = layout.block_of(layout.canonical_key(k))
            if g in block_weights:
                ws = block_weights[g]
        out[k] = sum(w * sd[k] for (sd, _), w in zip(parts, ws))
    return out


def unet_only(sd: dict) -> dict:
    return {k[len("model.diffusion_model."):]: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}




# --------------------------------------------------------------------------
# More families and partial files (full size, for header-only detection tests).
# Real shapes matter for the keys the architecture rules look at; the rest is a
# realistic key set at the real widths, so that sparse files have real sizes.
# --------------------------------------------------------------------------

def _T5_spec(prefix: str, layers: int = 24, d: int = 4096, ff: int = 10240, umt5: bool = False,
             vocab: int = 32128) -> Spec:
    b = _Builder(prefix)
    b.add("shared", [("weight", (vocab, d))])
    for i in range(layers):
        blk = f"encoder.block.{i}.layer"
        for p in ("q", "k", "v", "o"):
            b.add(f"{blk}.0.SelfAttention.{p}", [("weight", (d, d))])
        if i == 0 or umt5:
            b.add(f"{blk}.0.SelfAttention.relative_attention_bias", [("weight", (32, 64))])
        b.add(f"{blk}.0.layer_norm", [("weight", (d,))])
        b.add(f"{blk}.1.DenseReluDense.wi_0", [("weight", (ff, d))])
        b.add(f"{blk}.1.DenseReluDense.wi_1", [("weight", (ff, d))])
        b.add(f"{blk}.1.DenseReluDense.wo", [("weight", (d, ff))])
        b.add(f"{blk}.1.layer_norm", [("weight", (d,))])
    b.add("encoder.final_layer_norm", [("weight", (d,))])
    return b.spec


def _clip_hf(prefix: str, name: str, projection: bool = False) -> Spec:
    cfg = dict(_TEXT[name])
    spec = _hf_clip_spec(prefix + "text_model.", {**cfg, "position_ids": name == "clip_l"})
    if projection:
        spec[prefix + "text_projection.weight"] = (cfg["width"], cfg["width"])
    return spec


def _vae16(prefix: str, z: int = 16) -> Spec:
    spec = _vae_spec(prefix, {**_VAE, "z_channels": z, "embed_dim": z})
    return {k: s for k, s in spec.items() if "quant_conv" not in k}   # SD3/Flux VAEs have none


def _mm_block(b: _Builder, name: str, h: int, pre_only: bool = False, qk_norm: bool = False,
              attn2: bool = False) -> None:
    b.add(f"{name}.adaLN_modulation.1", _lin((2 if pre_only else 6) * h + (3 * h if attn2 else 0), h))
    b.add(f"{name}.attn.qkv", _lin(3 * h, h))
    if qk_norm:
        b.add(f"{name}.attn.ln_q", [("weight", (64,))])
        b.add(f"{name}.attn.ln_k", [("weight", (64,))])
    if attn2:
        b.add(f"{name}.attn2.qkv", _lin(3 * h, h))
        b.add(f"{name}.attn2.proj", _lin(h, h))
        if qk_norm:
            b.add(f"{name}.attn2.ln_q", [("weight", (64,))])
            b.add(f"{name}.attn2.ln_k", [("weight", (64,))])
    if not pre_only:
        b.add(f"{name}.attn.proj", _lin(h, h))
        b.add(f"{name}.mlp.fc1", _lin(4 * h, h))
        b.add(f"{name}.mlp.fc2", _lin(h, 4 * h))


def _sd3_dit(prefix: str, depth: int, qk_norm: bool = False, attn2_layers: int = 0) -> Spec:
    h = 64 * depth
    b = _Builder(prefix)
    b.add("x_embedder.proj", _conv(h, 16, 2))
    b.add("", [("pos_embed", (1, 36864 if depth < 30 else 36864, h))])
    b.add("context_embedder", _lin(h, 4096))
    b.add("y_embedder.mlp.0", _lin(h, 2048))
    b.add("y_embedder.mlp.2", _lin(h, h))
    b.add("t_embedder.mlp.0", _lin(h, 256))
    b.add("t_embedder.mlp.2", _lin(h, h))
    for i in range(depth):
        _mm_block(b, f"joint_blocks.{i}.context_block", h, pre_only=i == depth - 1, qk_norm=qk_norm)
        _mm_block(b, f"joint_blocks.{i}.x_block", h, qk_norm=qk_norm, attn2=i < attn2_layers)
    b.add("final_layer.linear", _lin(64, h))
    b.add("final_layer.adaLN_modulation.1", _lin(2 * h, h))
    return b.spec


def _sd3(depth: int, **kw) -> Spec:
    spec = _sd3_dit("model.diffusion_model.", depth, **kw)
    spec.update(_clip_hf("text_encoders.clip_l.transformer.", "clip_l", projection=True))
    spec.update(_clip_hf("text_encoders.clip_g.transformer.", "clip_g", projection=True))
    spec.update(_T5_spec("text_encoders.t5xxl.transformer."))
    spec.update(_vae16("first_stage_model."))
    return spec


def _flux_dit(prefix: str, h: int = 3072, double: int = 19, single: int = 38, in_ch: int = 64,
              guidance: bool = True, chroma: bool = False, flux2: bool = False) -> Spec:
    b = _Builder(prefix)
    mlp = 3 * h if flux2 else 4 * h
    bias = not flux2
    b.add("img_in", _lin(h, in_ch, bias))
    b.add("txt_in", _lin(h, 15360 if flux2 else 4096, bias))
    if chroma:
        b.add("distilled_guidance_layer.in_proj", _lin(5120, 64))
        for i in range(5):
            b.add(f"distilled_guidance_layer.layers.{i}.in_layer", _lin(5120, 5120))
            b.add(f"distilled_guidance_layer.layers.{i}.out_layer", _lin(5120, 5120))
            b.add(f"distilled_guidance_layer.norms.{i}", [("scale", (5120,))])
        b.add("distilled_guidance_layer.out_proj", _lin(h, 5120))
    else:
        b.add("time_in.in_layer", _lin(h, 256, bias))
        b.add("time_in.out_layer", _lin(h, h, bias))
        if not flux2:
            b.add("vector_in.in_layer", _lin(h, 768))
            b.add("vector_in.out_layer", _lin(h, h))
        if guidance:
            b.add("guidance_in.in_layer", _lin(h, 256, bias))
            b.add("guidance_in.out_layer", _lin(h, h, bias))
    if flux2:
        b.add("double_stream_modulation_img.lin", _lin(6 * h, h, False))
        b.add("double_stream_modulation_txt.lin", _lin(6 * h, h, False))
        b.add("single_stream_modulation.lin", _lin(3 * h, h, False))
    for i in range(double):
        for s in ("img", "txt"):
            if not (chroma or flux2):
                b.add(f"double_blocks.{i}.{s}_mod.lin", _lin(6 * h, h))
            b.add(f"double_blocks.{i}.{s}_attn.qkv", _lin(3 * h, h, bias))
            b.add(f"double_blocks.{i}.{s}_attn.norm.query_norm", [("scale", (128,))])
            b.add(f"double_blocks.{i}.{s}_attn.norm.key_norm", [("scale", (128,))])
            b.add(f"double_blocks.{i}.{s}_attn.proj", _lin(h, h, bias))
            b.add(f"double_blocks.{i}.{s}_mlp.0", _lin(2 * mlp if flux2 else mlp, h, bias))
            b.add(f"double_blocks.{i}.{s}_mlp.2", _lin(h, mlp, bias))
    for i in range(single):
        b.add(f"single_blocks.{i}.linear1", _lin(3 * h + (2 * mlp if flux2 else mlp), h, bias))
        b.add(f"single_blocks.{i}.linear2", _lin(h, h + mlp, bias))
        b.add(f"single_blocks.{i}.norm.query_norm", [("scale", (128,))])
        b.add(f"single_blocks.{i}.norm.key_norm", [("scale", (128,))])
        if not (chroma or flux2):
            b.add(f"single_blocks.{i}.modulation.lin", _lin(3 * h, h))
    b.add("final_layer.linear", _lin(in_ch if in_ch != 384 else 64, h, bias))
    if not chroma:
        b.add("final_layer.adaLN_modulation.1", _lin(2 * h, h, bias))
    return b.spec


def _auraflow() -> Spec:
    h = 3072
    b = _Builder("model.diffusion_model.")
    b.add("cond_seq_linear", _lin(h, 2048, False))
    b.add("init_x_linear", _lin(h, 64))
    b.add("", [("positional_encoding", (1, 9216, h)), ("register_tokens", (1, 8, h))])
    b.add("t_embedder.mlp.0", _lin(h, 256))
    b.add("t_embedder.mlp.2", _lin(h, h))
    for i in range(4):
        for s in ("X", "C"):
            b.add(f"double_layers.{i}.mod{s}.1", _lin(6 * h, h, False))
            b.add(f"double_layers.{i}.mlp{s}.c_fc1", _lin(8192, h, False))
            b.add(f"double_layers.{i}.mlp{s}.c_fc2", _lin(8192, h, False))
            b.add(f"double_layers.{i}.mlp{s}.c_proj", _lin(h, 8192, False))
        for p in ("w1q", "w1k", "w1v", "w1o", "w2q", "w2k", "w2v", "w2o"):
            b.add(f"double_layers.{i}.attn.{p}", _lin(h, h, False))
    for i in range(32):
        b.add(f"single_layers.{i}.modCX.1", _lin(6 * h, h, False))
        for p in ("w1q", "w1k", "w1v", "w1o"):
            b.add(f"single_layers.{i}.attn.{p}", _lin(h, h, False))
        b.add(f"single_layers.{i}.mlp.c_fc1", _lin(8192, h, False))
        b.add(f"single_layers.{i}.mlp.c_fc2", _lin(8192, h, False))
        b.add(f"single_layers.{i}.mlp.c_proj", _lin(h, 8192, False))
    b.add("modF.1", _lin(2 * h, h, False))
    b.add("final_linear", _lin(64, h, False))
    return b.spec


def _hunyuan_dit() -> Spec:
    h, depth = 1408, 40
    b = _Builder("")
    b.add("x_embedder.proj", _conv(h, 4, 2))
    b.add("t_embedder.mlp.0", _lin(h, 256))
    b.add("t_embedder.mlp.2", _lin(h, h))
    b.add("extra_embedder.0", _lin(4 * h, 3968))
    b.add("extra_embedder.2", _lin(h, 4 * h))
    b.add("mlp_t5.0", _lin(8192, 2048))
    b.add("mlp_t5.2", _lin(1024, 8192))
    b.add("", [("text_embedding_padding", (333, 1024))])
    b.add("pooler.q_proj", _lin(1024, 1024))
    b.add("style_embedder", [("weight", (1, h))])
    for i in range(depth):
        p = f"blocks.{i}"
        b.add(f"{p}.norm1", _norm(h))
        b.add(f"{p}.attn1.Wqkv", _lin(3 * h, h))
        b.add(f"{p}.attn1.q_norm", _norm(88))
        b.add(f"{p}.attn1.k_norm", _norm(88))
        b.add(f"{p}.attn1.out_proj", _lin(h, h))
        b.add(f"{p}.norm2", _norm(h))
        b.add(f"{p}.mlp.fc1", _lin(6144, h))
        b.add(f"{p}.mlp.fc2", _lin(h, 6144))
        b.add(f"{p}.default_modulation.1", _lin(h, h))
        b.add(f"{p}.attn2.q_proj", _lin(h, h))
        b.add(f"{p}.attn2.kv_proj", _lin(2 * h, 1024))
        b.add(f"{p}.attn2.out_proj", _lin(h, h))
        b.add(f"{p}.norm3", _norm(h))
        if i > depth // 2:
            b.add(f"{p}.skip_norm", _norm(h))
            b.add(f"{p}.skip_linear", _lin(h, 2 * h))
    b.add("final_layer.adaLN_modulation.1", _lin(2 * h, h))
    b.add("final_layer.linear", _lin(32, h))
    return b.spec


def _pixart(sigma: bool) -> Spec:
    h = 1152
    b = _Builder("")
    b.add("x_embedder.proj", _conv(h, 4, 2))
    b.add("", [("pos_embed", (1, 4096, h))])
    b.add("t_embedder.mlp.0", _lin(h, 256))
    b.add("t_embedder.mlp.2", _lin(h, h))
    b.add("t_block.1", _lin(6 * h, h))
    b.add("y_embedder.y_proj.fc1", _lin(h, 4096))
    b.add("y_embedder.y_proj.fc2", _lin(h, h))
    b.add("y_embedder", [("y_embedding", (300 if sigma else 120, 4096))])
    if not sigma:
        b.add("csize_embedder.mlp.0", _lin(h // 3, 256))
        b.add("ar_embedder.mlp.0", _lin(h // 3, 256))
    for i in range(28):
        p = f"blocks.{i}"
        b.add(p, [("scale_shift_table", (6, h))])
        b.add(f"{p}.attn.qkv", _lin(3 * h, h))
        b.add(f"{p}.attn.proj", _lin(h, h))
        b.add(f"{p}.cross_attn.q_linear", _lin(h, h))
        b.add(f"{p}.cross_attn.kv_linear", _lin(2 * h, h))
        b.add(f"{p}.cross_attn.proj", _lin(h, h))
        b.add(f"{p}.mlp.fc1", _lin(4 * h, h))
        b.add(f"{p}.mlp.fc2", _lin(h, 4 * h))
    b.add("final_layer", [("scale_shift_table", (2, h))])
    b.add("final_layer.linear", _lin(32, h))
    return b.spec


def _cascade(stage: str) -> Spec:
    b = _Builder("")
    if stage == "c":
        hid, cond = (2048, 2048), 2048
        b.add("clip_txt_mapper", _lin(cond, 1280))
        b.add("clip_txt_pooled_mapper", _lin(cond * 4, 1280))
        b.add("clip_img_mapper", _lin(cond * 4, 768))
        b.add("embedding.1", _conv(hid[0], 64, 1))
        blocks = (8, 24)
        out_ch = 16
    else:
        hid, cond = (320, 640, 1280, 1280), 1280
        b.add("clip_mapper", _lin(cond * 4, 1280))
        b.add("effnet_mapper.0", _conv(hid[0] * 4, 16, 1))
        b.add("effnet_mapper.2", _conv(hid[0], hid[0] * 4, 1))
        b.add("pixels_mapper.0", _conv(hid[0] * 4, 3, 1))
        b.add("embedding.1", _conv(hid[0], 16, 2))
        blocks = (2, 6, 28, 6)
        out_ch = 4
    for lvl, (c, n) in enumerate(zip(hid, blocks)):
        for j in range(n):
            for d in ("down_blocks", "up_blocks"):
                p = f"{d}.{lvl}.{j}"
                b.add(f"{p}.depthwise", _conv(c, 1, 3))
                b.add(f"{p}.channelwise.0", _lin(4 * c, c))
                b.add(f"{p}.channelwise.4", _lin(c, 4 * c))
                b.add(f"{p}.mapper", _lin(2 * c, 64))
    b.add("clf.1", _conv(out_ch * 4, hid[0], 1))
    return b.spec


def _lumina2() -> Spec:
    h = 2304
    b = _Builder("model.diffusion_model.")
    b.add("x_embedder", _lin(h, 64))
    b.add("t_embedder.mlp.0", _lin(256, 256))
    b.add("t_embedder.mlp.2", _lin(256, 256))
    b.add("cap_embedder.0", [("weight", (2304,))])
    b.add("cap_embedder.1", _lin(h, 2304))

    def layer(p, mod=True):
        b.add(f"{p}.attention.qkv", _lin(h + 2 * 768, h, False))
        b.add(f"{p}.attention.out", _lin(h, h, False))
        b.add(f"{p}.attention.q_norm", [("weight", (96,))])
        b.add(f"{p}.attention.k_norm", [("weight", (96,))])
        for n in ("w1", "w3"):
            b.add(f"{p}.feed_forward.{n}", _lin(6144, h, False))
        b.add(f"{p}.feed_forward.w2", _lin(h, 6144, False))
        for n in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2"):
            b.add(f"{p}.{n}", [("weight", (h,))])
        if mod:
            b.add(f"{p}.adaLN_modulation.0", _lin(4 * h, 256))
    for i in range(2):
        layer(f"noise_refiner.{i}")
        layer(f"context_refiner.{i}", mod=False)
    for i in range(26):
        layer(f"layers.{i}")
    b.add("norm_final", [("weight", (h,))])
    b.add("final_layer.linear", _lin(64, h))
    b.add("final_layer.adaLN_modulation.1", _lin(h, 256))
    return b.spec


def _hidream() -> Spec:
    h = 2560
    b = _Builder("")
    b.add("x_embedder.proj", _lin(h, 64))
    b.add("t_embedder.timestep_embedder.linear_1", _lin(h, 256))
    b.add("t_embedder.timestep_embedder.linear_2", _lin(h, h))
    b.add("p_embedder.pooled_embedder.linear_1", _lin(h, 2048))
    b.add("p_embedder.pooled_embedder.linear_2", _lin(h, h))
    for i in range(49):
        b.add(f"caption_projection.{i}.linear", _lin(h, 4096, False))
    for i in range(16):
        p = f"double_stream_blocks.{i}.block"
        b.add(f"{p}.adaLN_modulation.1", _lin(12 * h, h))
        for n in ("to_q", "to_k", "to_v", "to_out", "to_q_t", "to_k_t", "to_v_t", "to_out_t"):
            b.add(f"{p}.attn1.{n}", _lin(h, h))
        b.add(f"{p}.ff_i.gate.weight", [("", (4, h))])
        b.add(f"{p}.ff_t.w1", _lin(6912, h, False))
    for i in range(32):
        p = f"single_stream_blocks.{i}.block"
        b.add(f"{p}.adaLN_modulation.1", _lin(6 * h, h))
        for n in ("to_q", "to_k", "to_v", "to_out"):
            b.add(f"{p}.attn1.{n}", _lin(h, h))
    b.add("final_layer.linear", _lin(64, h))
    b.add("final_layer.adaLN_modulation.1", _lin(2 * h, h))
    return {k.replace(".weight.", "."): s for k, s in b.spec.items()}


def _qwen_image() -> Spec:
    h = 3072
    b = _Builder("model.diffusion_model.")
    b.add("img_in", _lin(h, 64))
    b.add("txt_norm", [("weight", (3584,))])
    b.add("txt_in", _lin(h, 3584))
    b.add("time_text_embed.timestep_embedder.linear_1", _lin(h, 256))
    b.add("time_text_embed.timestep_embedder.linear_2", _lin(h, h))
    for i in range(60):
        p = f"transformer_blocks.{i}"
        b.add(f"{p}.img_mod.1", _lin(6 * h, h))
        b.add(f"{p}.txt_mod.1", _lin(6 * h, h))
        for n in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            b.add(f"{p}.attn.{n}", _lin(h, h))
        for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            b.add(f"{p}.attn.{n}", [("weight", (128,))])
        for s in ("img", "txt"):
            b.add(f"{p}.{s}_mlp.net.0.proj", _lin(4 * h, h))
            b.add(f"{p}.{s}_mlp.net.2", _lin(h, 4 * h))
    b.add("norm_out.linear", _lin(2 * h, h))
    b.add("proj_out", _lin(64, h))
    return b.spec


def _wan(dim: int = 5120, layers: int = 40, ffn: int = 13824, in_dim: int = 16, i2v: bool = False,
         vace: bool = False, out_dim: int = 16) -> Spec:
    b = _Builder("model.diffusion_model.")
    b.add("patch_embedding", [("weight", (dim, in_dim, 1, 2, 2)), ("bias", (dim,))])
    b.add("text_embedding.0", _lin(dim, 4096))
    b.add("text_embedding.2", _lin(dim, dim))
    b.add("time_embedding.0", _lin(dim, 256))
    b.add("time_embedding.2", _lin(dim, dim))
    b.add("time_projection.1", _lin(6 * dim, dim))
    if i2v:
        b.add("img_emb.proj.0", _norm(1280))
        b.add("img_emb.proj.1", _lin(1280, 1280))
        b.add("img_emb.proj.3", _lin(dim, 1280))
        b.add("img_emb.proj.4", _norm(dim))
    for i in range(layers):
        p = f"blocks.{i}"
        b.add(p, [("modulation", (1, 6, dim))])
        for a in ("self_attn", "cross_attn"):
            for n in ("q", "k", "v", "o"):
                b.add(f"{p}.{a}.{n}", _lin(dim, dim))
            b.add(f"{p}.{a}.norm_q", [("weight", (dim,))])
            b.add(f"{p}.{a}.norm_k", [("weight", (dim,))])
        if i2v:
            b.add(f"{p}.cross_attn.k_img", _lin(dim, dim))
            b.add(f"{p}.cross_attn.v_img", _lin(dim, dim))
            b.add(f"{p}.cross_attn.norm_k_img", [("weight", (dim,))])
        b.add(f"{p}.norm3", _norm(dim))
        b.add(f"{p}.ffn.0", _lin(ffn, dim))
        b.add(f"{p}.ffn.2", _lin(dim, ffn))
    if vace:
        b.add("vace_patch_embedding", [("weight", (dim, 96, 1, 2, 2)), ("bias", (dim,))])
        for i in range(8):
            b.add(f"vace_blocks.{i}.after_proj", _lin(dim, dim))
    b.add("head", [("modulation", (1, 2, dim))])
    b.add("head.head", _lin(4 * out_dim, dim))
    return b.spec


def _ltxv() -> Spec:
    h = 2048
    b = _Builder("model.diffusion_model.")
    b.add("patchify_proj", _lin(h, 128))
    b.add("adaln_single.emb.timestep_embedder.linear_1", _lin(h, 256))
    b.add("adaln_single.emb.timestep_embedder.linear_2", _lin(h, h))
    b.add("adaln_single.linear", _lin(6 * h, h))
    b.add("caption_projection.linear_1", _lin(h, 4096))
    b.add("caption_projection.linear_2", _lin(h, h))
    for i in range(28):
        p = f"transformer_blocks.{i}"
        b.add(p, [("scale_shift_table", (6, h))])
        for a, ctx in (("attn1", h), ("attn2", h)):
            b.add(f"{p}.{a}.to_q", _lin(h, h))
            b.add(f"{p}.{a}.to_k", _lin(h, ctx))
            b.add(f"{p}.{a}.to_v", _lin(h, ctx))
            b.add(f"{p}.{a}.to_out.0", _lin(h, h))
            b.add(f"{p}.{a}.q_norm", [("weight", (h,))])
            b.add(f"{p}.{a}.k_norm", [("weight", (h,))])
        b.add(f"{p}.ff.net.0.proj", _lin(4 * h, h))
        b.add(f"{p}.ff.net.2", _lin(h, 4 * h))
    b.add("", [("scale_shift_table", (2, h))])
    b.add("proj_out", _lin(128, h))
    return b.spec


def _hunyuan_video() -> Spec:
    h = 3072
    b = _Builder("model.diffusion_model.")
    b.add("img_in.proj", [("weight", (h, 16, 1, 2, 2)), ("bias", (h,))])
    b.add("txt_in.input_embedder", _lin(h, 4096))
    b.add("txt_in.t_embedder.mlp.0", _lin(h, 256))
    b.add("txt_in.t_embedder.mlp.2", _lin(h, h))
    b.add("txt_in.c_embedder.linear_1", _lin(h, 4096))
    b.add("txt_in.c_embedder.linear_2", _lin(h, h))
    for i in range(2):
        p = f"txt_in.individual_token_refiner.blocks.{i}"
        b.add(f"{p}.norm1", _norm(h))
        b.add(f"{p}.self_attn_qkv", _lin(3 * h, h))
        b.add(f"{p}.self_attn_proj", _lin(h, h))
        b.add(f"{p}.norm2", _norm(h))
        b.add(f"{p}.mlp.fc1", _lin(4 * h, h))
        b.add(f"{p}.mlp.fc2", _lin(h, 4 * h))
        b.add(f"{p}.adaLN_modulation.1", _lin(2 * h, h))
    b.add("time_in.mlp.0", _lin(h, 256))
    b.add("time_in.mlp.2", _lin(h, h))
    b.add("vector_in.in_layer", _lin(h, 768))
    b.add("vector_in.out_layer", _lin(h, h))
    b.add("guidance_in.mlp.0", _lin(h, 256))
    b.add("guidance_in.mlp.2", _lin(h, h))
    for i in range(20):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}"
            b.add(f"{p}_mod.linear", _lin(6 * h, h))
            b.add(f"{p}_attn_qkv", _lin(3 * h, h))
            b.add(f"{p}_attn_q_norm", [("weight", (128,))])
            b.add(f"{p}_attn_k_norm", [("weight", (128,))])
            b.add(f"{p}_attn_proj", _lin(h, h))
            b.add(f"{p}_mlp.fc1", _lin(4 * h, h))
            b.add(f"{p}_mlp.fc2", _lin(h, 4 * h))
    for i in range(40):
        p = f"single_blocks.{i}"
        b.add(f"{p}.linear1", _lin(7 * h, h))
        b.add(f"{p}.linear2", _lin(h, 5 * h))
        b.add(f"{p}.q_norm", [("weight", (128,))])
        b.add(f"{p}.k_norm", [("weight", (128,))])
        b.add(f"{p}.modulation.linear", _lin(3 * h, h))
    b.add("final_layer.linear", _lin(64, h))
    b.add("final_layer.adaLN_modulation.1", _lin(2 * h, h))
    return b.spec


def _mochi() -> Spec:
    hx, hy = 3072, 1536
    b = _Builder("model.diffusion_model.")
    b.add("x_embedder.proj", _lin(hx, 48))
    b.add("t_embedder.mlp.0", _lin(hx, 256))
    b.add("t_embedder.mlp.2", _lin(hx, hx))
    b.add("t5_y_embedder.to_kv", _lin(2 * hx, 4096))
    b.add("t5_y_embedder.to_q", _lin(hx, 4096))
    b.add("t5_y_embedder.to_out", _lin(hx, hx))
    b.add("t5_yproj", _lin(hy, 4096))
    b.add("", [("pos_frequencies", (3, 24, 64))])
    for i in range(48):
        p = f"blocks.{i}"
        b.add(f"{p}.mod_x", _lin(4 * hx, hx))
        b.add(f"{p}.mod_y", _lin(4 * hy if i < 47 else hy, hx))
        b.add(f"{p}.attn.qkv_x", _lin(3 * hx, hx, False))
        b.add(f"{p}.attn.qkv_y", _lin(3 * hx, hy, False))
        b.add(f"{p}.attn.proj_x", _lin(hx, hx))
        b.add(f"{p}.mlp_x.w1", _lin(2 * 8192, hx, False))
        b.add(f"{p}.mlp_x.w2", _lin(hx, 8192, False))
    b.add("final_layer.mod", _lin(2 * hx, hx))
    b.add("final_layer.linear", _lin(48, hx))
    return b.spec


def _cosmos(predict2: bool) -> Spec:
    h = 2048 if predict2 else 4096
    b = _Builder("model.diffusion_model.")
    b.add("x_embedder.proj.1", _lin(h, 68, False))
    b.add("t_embedder.1.linear_1", _lin(h, h, False))
    b.add("t_embedder.1.linear_2", _lin(3 * h, h, False))
    n = 28
    for i in range(n):
        if predict2:
            p = f"blocks.{i}"
            for a, ctx in (("self_attn", h), ("cross_attn", 1024)):
                b.add(f"{p}.{a}.q_proj", _lin(h, h, False))
                b.add(f"{p}.{a}.k_proj", _lin(h, ctx, False))
                b.add(f"{p}.{a}.v_proj", _lin(h, ctx, False))
                b.add(f"{p}.{a}.output_proj", _lin(h, h, False))
                b.add(f"{p}.{a}.q_norm", [("weight", (128,))])
                b.add(f"{p}.{a}.k_norm", [("weight", (128,))])
            b.add(f"{p}.mlp.layer1", _lin(4 * h, h, False))
            b.add(f"{p}.mlp.layer2", _lin(h, 4 * h, False))
            for m in ("self_attn", "cross_attn", "mlp"):
                b.add(f"{p}.adaln_modulation_{m}.1", _lin(256, h, False))
                b.add(f"{p}.adaln_modulation_{m}.2", _lin(3 * h, 256, False))
        else:
            p = f"blocks.block{i}.blocks"
            for j, ctx in ((0, h), (1, 1024)):
                for n_ in ("to_q", "to_k", "to_v"):
                    b.add(f"{p}.{j}.block.attn.{n_}.0", _lin(h, h if n_ == "to_q" else ctx, False))
                    b.add(f"{p}.{j}.block.attn.{n_}.1", [("weight", (128,))])
                b.add(f"{p}.{j}.block.attn.to_out.0", _lin(h, h, False))
                b.add(f"{p}.{j}.adaLN_modulation.1", _lin(256, h, False))
                b.add(f"{p}.{j}.adaLN_modulation.2", _lin(3 * h, 256, False))
            b.add(f"{p}.2.block.layer1", _lin(4 * h, h, False))
            b.add(f"{p}.2.block.layer2", _lin(h, 4 * h, False))
    b.add("final_layer.linear", _lin(64, h, False))
    return b.spec


def _svd() -> Spec:
    cfg = dict(in_channels=8, out_channels=4, model_channels=320, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
               transformer_depth=(1, 1, 1, 0), transformer_depth_middle=1, context_dim=1024,
               use_linear_in_transformer=True, adm_in_channels=768)
    spec = _unet_spec("model.diffusion_model.", cfg)
    extra: Spec = {}
    for k, s in spec.items():
        m = k.split(".")
        if k.endswith(".in_layers.0.weight"):          # every ResBlock becomes a VideoResBlock
            base = k[:-len("in_layers.0.weight")]
            c = s[0]
            extra[base + "time_mixer.mix_factor"] = (1,)
            extra[base + "time_stack.in_layers.0.weight"] = (c,)
            extra[base + "time_stack.out_layers.0.weight"] = (spec[base + "out_layers.0.weight"][0],)
        if k.endswith(".proj_in.weight") and len(m) > 3:
            base = k[:-len("proj_in.weight")]
            c = s[0]
            extra[base + "time_mixer.mix_factor"] = (1,)
            extra[base + "time_pos_embed.0.weight"] = (4 * c, c)
            for a in ("attn1", "attn2"):
                extra[base + f"time_stack.0.{a}.to_q.weight"] = (c, c)
                extra[base + f"time_stack.0.{a}.to_k.weight"] = (c, c if a == "attn1" else 1024)
                extra[base + f"time_stack.0.{a}.to_v.weight"] = (c, c if a == "attn1" else 1024)
            extra[base + "time_stack.0.ff.net.0.proj.weight"] = (8 * c, c)
    spec.update(extra)
    return spec


def _sdxl_like(**overrides) -> Spec:
    cfg = {**_UNET["sdxl"], **overrides}
    spec = _unet_spec("model.diffusion_model.", cfg)
    spec.update(_hf_clip_spec("conditioner.embedders.0.transformer.text_model.", _TEXT["clip_l"]))
    spec.update(_open_clip_spec("conditioner.embedders.1.model.", _TEXT["clip_g"]))
    spec.update(_vae_spec("first_stage_model.", _VAE))
    return spec


def _lora_kohya_sdxl(rank: int = 16) -> Spec:
    unet = _unet_spec("", _UNET["sdxl"])
    spec: Spec = {}
    for k, s in unet.items():
        if len(s) == 2 and any(a in k for a in ("attn1", "attn2")) and k.endswith(".weight"):
            name = "lora_unet_" + k[:-len(".weight")].replace(".", "_")
            spec[name + ".lora_down.weight"] = (rank, s[1])
            spec[name + ".lora_up.weight"] = (s[0], rank)
            spec[name + ".alpha"] = ()
    for i in range(12):
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            n = f"lora_te1_text_model_encoder_layers_{i}_self_attn_{p}"
            spec[n + ".lora_down.weight"] = (rank, 768)
            spec[n + ".lora_up.weight"] = (768, rank)
    return spec


def _lycoris_sd1(rank: int = 8) -> Spec:
    unet = _unet_spec("", _UNET["sd1"])
    spec: Spec = {}
    for k, s in unet.items():
        if len(s) == 2 and "attn2" in k and k.endswith(".weight"):
            name = "lora_unet_" + k[:-len(".weight")].replace(".", "_")
            for p in ("hada_w1_a", "hada_w2_a"):
                spec[f"{name}.{p}"] = (s[0], rank)
            for p in ("hada_w1_b", "hada_w2_b"):
                spec[f"{name}.{p}"] = (rank, s[1])
            spec[name + ".alpha"] = ()
    return spec


def _controlnet_sd1() -> Spec:
    cfg = dict(_UNET["sd1"])
    unet = _unet_spec("control_model.", cfg)
    spec = {k: s for k, s in unet.items() if not k.startswith("control_model.output_blocks") and
            not k.startswith("control_model.out.")}
    b = _Builder("control_model.")
    for i, (o, c) in enumerate(((16, 3), (16, 16), (32, 16), (32, 32), (96, 32), (96, 96), (256, 96))):
        b.add(f"input_hint_block.{2 * i}", _conv(o, c, 3))
    b.add("input_hint_block.14", _conv(320, 256, 3))
    for i, c in enumerate((320, 320, 320, 320, 640, 640, 640, 1280, 1280, 1280, 1280, 1280)):
        b.add(f"zero_convs.{i}.0", _conv(c, c, 1))
    b.add("middle_block_out.0", _conv(1280, 1280, 1))
    spec.update(b.spec)
    return spec


_EXTRA_BUILDERS = {
    # denoiser checkpoints
    "ssd1b": lambda: _sdxl_like(transformer_depth=(0, 2, 4), transformer_depth_middle=0),
    "segmind_vega": lambda: _sdxl_like(transformer_depth=(0, 1, 2), transformer_depth_middle=0),
    "koala_700m": lambda: _sdxl_like(num_res_blocks=1, transformer_depth=(0, 2, 5), transformer_depth_middle=0),
    "koala_1b": lambda: _sdxl_like(num_res_blocks=1, transformer_depth=(0, 2, 6), transformer_depth_middle=6),
    "kolors": lambda: _unet_spec("", {**_UNET["sdxl"], "adm_in_channels": 5632}),
    "playground_v2.5": lambda: {**_sdxl_like(), "edm_mean": (1, 4, 1, 1), "edm_std": (1, 4, 1, 1)},
    "sdxl_vpred": lambda: {**_sdxl_like(), "v_pred": (), "ztsnr": ()},
    "sd3_medium": lambda: _sd3(24),
    "sd3.5_medium": lambda: _sd3_dit("model.diffusion_model.", 24, qk_norm=True, attn2_layers=13),
    "sd3.5_large": lambda: _sd3_dit("", 38, qk_norm=True),
    "flux_dev": lambda: {**_flux_dit("model.diffusion_model."),
                         **_clip_hf("text_encoders.clip_l.transformer.", "clip_l"),
                         **_T5_spec("text_encoders.t5xxl.transformer."), **_vae16("vae.")},
    "flux_schnell": lambda: _flux_dit("", guidance=False),
    "flux_fill": lambda: _flux_dit("model.diffusion_model.", in_ch=384),
    "flux2": lambda: _flux_dit("", h=6144, double=8, single=48, in_ch=128, flux2=True),
    "chroma": lambda: _flux_dit("", chroma=True),
    "auraflow": _auraflow,
    "hunyuan_dit": _hunyuan_dit,
    "pixart_alpha": lambda: _pixart(False),
    "pixart_sigma": lambda: _pixart(True),
    "stable_cascade_c": lambda: _cascade("c"),
    "stable_cascade_b": lambda: _cascade("b"),
    "lumina2": _lumina2,
    "hidream": _hidream,
    "qwen_image": _qwen_image,
    "wan_t2v_14b": _wan,
    "wan_t2v_1.3b": lambda: _wan(1536, 30, 8960),
    "wan_i2v_14b": lambda: _wan(in_dim=36, i2v=True),
    "wan_vace_14b": lambda: _wan(vace=True),
    "wan2.2_ti2v_5b": lambda: _wan(3072, 30, 14336, in_dim=48, out_dim=48),
    "ltxv": _ltxv,
    "hunyuan_video": _hunyuan_video,
    "mochi": _mochi,
    "cosmos_predict1": lambda: _cosmos(False),
    "cosmos_predict2": lambda: _cosmos(True),
    "svd": _svd,
    # partial files
    "te_clip_l": lambda: _clip_hf("", "clip_l"),
    "te_clip_g": lambda: _clip_hf("", "clip_g", projection=True),
    "te_clip_h": lambda: _open_clip_spec("", _TEXT["clip_h"]),
    "te_t5xxl": lambda: _T5_spec(""),
    "te_umt5": lambda: _T5_spec("", umt5=True, vocab=256384),
    "vae_sd": lambda: _vae_spec("", _VAE),
    "vae_flux": lambda: _vae16(""),
    "vae_flux2": lambda: _vae16("", z=32),
    "lora_sdxl": _lora_kohya_sdxl,
    "lycoris_sd1": _lycoris_sd1,
    "ti_sd1": lambda: {"emb_params": (4, 768)},
    "ti_sdxl": lambda: {"clip_l": (2, 768), "clip_g": (2, 1280)},
    "controlnet_sd1": _controlnet_sd1,
}

#: names accepted by extra_spec()
EXTRA_SPECS = tuple(_EXTRA_BUILDERS)


def extra_spec(name: str) -> Spec:
    """Full-size key -> shape of a family or partial file beyond checkpoint_spec's SD ones."""
    if name not in _EXTRA_BUILDERS:
        raise ValueError(f"unknown spec {name!r}; known: {EXTRA_SPECS}")
    return dict(_EXTRA_BUILDERS[name]())


# --------------------------------------------------------------------------
# Other formats: torch zip checkpoints (written without torch), diffusers, GGUF
# --------------------------------------------------------------------------
import pickle as _pickle  # noqa: E402
import zipfile as _zipfile  # noqa: E402

_TORCH_STORAGE = {"F64": "DoubleStorage", "F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage",
                  "I64": "LongStorage", "I32": "IntStorage"}


def _pk(obj) -> bytes:
    """Pickle opcodes of a primitive (str, int, bool, tuple of those), without PROTO/STOP."""
    return _pickle.dumps(obj, protocol=2)[2:-1]


def _pk_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def torch_pickle(entries: list[tuple[str, str, tuple[int, ...], str, int, tuple[int, ...]]],
                 wrap: str | None = "state_dict", extra: Mapping | None = None) -> bytes:
    """data.pkl of a torch checkpoint, written opcode by opcode (no torch needed).

    entries: (key, dtype, shape, storage key, storage numel, stride). ``wrap`` nests the
    state dict under that key (as Lightning/A1111 checkpoints do); ``extra`` adds
    primitive top-level entries (e.g. ``global_step``)."""
    out = bytearray(b"\x80\x02")
    od = _pk_global("collections", "OrderedDict") + b")R"
    if wrap:
        out += b"}" + _pk(wrap)
    out += od + b"("
    for key, dt, shape, skey, numel, stride in entries:
        out += _pk(key)
        out += _pk_global("torch._utils", "_rebuild_tensor_v2") + b"("
        out += b"(" + _pk("storage") + _pk_global("torch", _TORCH_STORAGE[dt]) + _pk(skey) + _pk("cpu") \
            + _pk(numel) + b"tQ"                                   # TUPLE, BINPERSID
        out += _pk(0) + _pk(tuple(shape)) + _pk(tuple(stride)) + _pk(False) + od + b"tR"
    out += b"u"                                                       # SETITEMS
    if wrap:
        out += b"s"                                                   # SETITEM wrap -> state dict
        for k, v in (extra or {}).items():
            out += _pk(k) + _pk(v) + b"s"
    out += b"."
    return bytes(out)


def write_torch_ckpt(path, tensors: Mapping[str, np.ndarray], dtype: str = "F16", wrap: str | None = "state_dict",
                     transpose_2d: bool = False) -> None:
    """Write ``tensors`` in the torch zip checkpoint layout (``archive/data.pkl`` plus one
    stored ``archive/data/<n>`` entry per tensor), readable by ``torch.load``.
    ``transpose_2d`` stores 2-D tensors transposed with a non-contiguous stride."""
    entries, blobs = [], []
    for i, (k, a) in enumerate(tensors.items()):
        a = np.asarray(a)
        is_int = np.issubdtype(a.dtype, np.integer)
        dt = "I64" if is_int else dtype
        c = _convert(a, dt)
        stride = tuple(int(s) // c.itemsize for s in c.strides) if c.ndim else ()
        if transpose_2d and c.ndim == 2:
            stored = np.ascontiguousarray(c.T)
            stride = (1, c.shape[0])
            c_bytes = stored.tobytes()
        else:
            c_bytes = c.tobytes()
        entries.append((k, dt, c.shape, str(i), c.size, stride))
        blobs.append((str(i), c_bytes))
    pkl = torch_pickle(entries, wrap)

    def _w(f):
        with _zipfile.ZipFile(f, "w", _zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", pkl)
            z.writestr("archive/byteorder", "little")
            for name, b in blobs:
                z.writestr(f"archive/data/{name}", b)
            z.writestr("archive/version", "3\n")

    _atomic_write(path, _w)


def write_diffusers(folder, sd: Mapping[str, np.ndarray], family: str, dtype: str = "F16",
                    fp16_names: bool = False) -> None:
    """Write a single-file state dict of ``family`` (sd1, sd2, sdxl) as a diffusers folder
    (model_index.json, unet/, vae/, text_encoder/, text_encoder_2/)."""
    from .formats import diffusers as dfs
    base = _VARIANTS[family][0] if family in _VARIANTS else family
    cfg = _UNET[base]
    levels, nrb = len(cfg["channel_mult"]), cfg["num_res_blocks"]
    up_attn = {i for i in range(levels) if cfg["transformer_depth"][levels - 1 - i]}
    upairs = dfs.unet_pairs(levels, nrb, up_attn)
    vpairs = dfs.vae_pairs(len(_VAE["ch_mult"]), _VAE["num_res_blocks"])
    parts: dict[str, dict[str, np.ndarray]] = {"unet": {}, "vae": {}, "text_encoder": {}, "text_encoder_2": {}}
    for k, v in sd.items():
        comp, inner = layout.canonical(k)
        if comp == "unet":
            parts["unet"][dfs.map_key(inner, upairs, reverse=True)] = v
        elif comp == "vae":
            nk = dfs.map_key(inner, vpairs, reverse=True)
            if ".mid_block.attentions." in nk and v.ndim == 4:
                v = v.reshape(v.shape[:2])
            parts["vae"][nk] = v
        elif comp == "clip_l":
            parts["text_encoder"][inner] = v
        elif comp in ("clip_g", "clip_h"):
            parts["text_encoder_2" if comp == "clip_g" else "text_encoder"].update(_openclip_to_hf(inner, v))
    suffix = ".fp16" if fp16_names else ""
    os.makedirs(folder, exist_ok=True)
    for sub, tensors in parts.items():
        if not tensors:
            continue
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        name = ("diffusion_pytorch_model" if sub in ("unet", "vae") else "model") + suffix + ".safetensors"
        write_safetensors(os.path.join(folder, sub, name), tensors, dtype)
    with open(os.path.join(folder, "model_index.json"), "w", encoding="utf-8") as f:
        json.dump({"_class_name": "StableDiffusionXLPipeline" if base == "sdxl" else "StableDiffusionPipeline",
                   "_diffusers_version": "0.30.0"}, f)


def _openclip_to_hf(inner: str, v: np.ndarray) -> dict[str, np.ndarray]:
    import re as _re
    m = _re.match(r"^transformer\.resblocks\.(\d+)\.(.*)$", inner)
    if inner == "token_embedding.weight":
        return {"text_model.embeddings.token_embedding.weight": v}
    if inner == "positional_embedding":
        return {"text_model.embeddings.position_embedding.weight": v}
    if inner == "text_projection":
        return {"text_projection.weight": np.ascontiguousarray(v.T)}
    if inner.startswith("ln_final."):
        return {"text_model.final_layer_norm." + inner.split(".", 1)[1]: v}
    if m:
        i, rest = m.groups()
        p = f"text_model.encoder.layers.{i}."
        if rest.startswith("attn.in_proj_"):
            kind = rest[len("attn.in_proj_"):]
            q, k_, v_ = np.split(v, 3, axis=0)
            return {f"{p}self_attn.q_proj.{kind}": q, f"{p}self_attn.k_proj.{kind}": k_,
                    f"{p}self_attn.v_proj.{kind}": v_}
        for a, b in (("attn.out_proj.", "self_attn.out_proj."), ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."),
                     ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")):
            if rest.startswith(a):
                return {p + b + rest[len(a):]: v}
    return {}   # logit_scale and other open_clip-only entries have no HF counterpart


def write_gguf(path, tensors: Mapping[str, np.ndarray], quant: str = "Q8_0", arch: str = "sd1") -> None:
    """Write ``tensors`` as GGUF the way ComfyUI-GGUF does: original key names, tensors of
    2+ dims whose last dim fits the quant block quantized, the rest kept as F16/F32."""
    import gguf  # the optional dependency of the GGUF reader
    qt = gguf.GGMLQuantizationType[quant]
    bs = gguf.GGML_QUANT_SIZES[qt][0]
    w = gguf.GGUFWriter(os.fspath(path), arch)
    for k, a in tensors.items():
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.floating):
            w.add_tensor(k, a.astype(np.int32))
        elif a.ndim >= 2 and a.shape[-1] % bs == 0:
            q = gguf.quants.quantize(a.astype(np.float32), qt)
            w.add_tensor(k, q, raw_shape=q.shape, raw_dtype=qt)
        else:
            w.add_tensor(k, a.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def ties_merge(base: dict, models: list[dict], density: float = 0.2, lam: float = 1.0) -> dict:
    """TIES merge (trim to the top ``density`` of each delta, elect signs, disjoint mean)."""
    out = {}
    for k, b in base.items():
        if not _is_weight(b) or b.size == 0:
            out[k] = b
            continue
        ds = []
        for m in models:
            d = m[k] - b
            if d.size > 1:
                cut = np.quantile(np.abs(d), 1 - density)
                d = np.where(np.abs(d) >= cut, d, 0)
            ds.append(d)
        D = np.stack(ds)
        sign = np.sign(D.sum(0))
        agree = (np.sign(D) == sign) & (D != 0)
        n = np.maximum(agree.sum(0), 1)
        out[k] = b + lam * (np.where(agree, D, 0).sum(0) / n)
    return out


def dare_merge(base: dict, models: list[tuple[dict, float]], drop: float = 0.9, seed: int = 0) -> dict:
    """DARE: drop each delta element with probability ``drop``, rescale the rest, weighted sum."""
    out = {}
    for k, b in base.items():
        if not _is_weight(b) or b.size == 0:
            out[k] = b
            continue
        acc = b.copy()
        for i, (m, w) in enumerate(models):
            keep = _rng(seed + i, k).random(b.shape) >= drop
            acc = acc + w * np.where(keep, (m[k] - b) / (1 - drop), 0)
        out[k] = acc
    return out
