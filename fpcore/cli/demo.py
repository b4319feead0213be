"""``fpcore demo``: a small folder of generated models with a known ancestry, to see what
fpcore reports without downloading anything.

The models are *generated*, not real checkpoints: they have the real key names and layout of
an SD 1.x checkpoint (UNet and CLIP-L text encoder, no VAE) at a reduced width (UNet model
channels 32 instead of 320, text width 64 instead of 768; about 21 MB each), random weights
with the usual scales, and fine-tunes and merges built from them. That is enough to show every
relation fpcore reports; it says nothing about accuracy on real models (see the README).

This generator is deliberately small and ships with the package so that ``fpcore demo``
works from an installed wheel. The test suite's own generator (``testkit/``, many families,
full-size headers) lives outside the package.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import zlib

import numpy as np

log = logging.getLogger(__name__)

#: reduced widths (GroupNorm needs multiples of 32); every count, context and vocabulary size is SD 1.x's own
UNET = dict(model_channels=32, channel_mult=(1, 2, 4, 4), num_res_blocks=2, transformer_depth=(1, 1, 1, 0),
            context_dim=768, inner=32, in_channels=4, out_channels=4)
CLIP_L = dict(width=64, mlp=256, layers=12, vocab=49408, positions=77)
#: share of a fine-tune's change that all fine-tunes have in common (real fine-tunes move partly alike)
SHARED_DIRECTION = 0.25


# ------------------------------------------------------------------ key names and shapes

def _lin(out, inp, bias=True):
    return [("weight", (out, inp))] + ([("bias", (out,))] if bias else [])


def _conv(out, inp, k):
    return [("weight", (out, inp, k, k)), ("bias", (out,))]


def _norm(c):
    return [("weight", (c,)), ("bias", (c,))]


def _add(spec, prefix, params):
    for name, shape in params:
        spec[f"{prefix}.{name}"] = shape


def _resblock(s, p, cin, cout, temb):
    _add(s, f"{p}.in_layers.0", _norm(cin))
    _add(s, f"{p}.in_layers.2", _conv(cout, cin, 3))
    _add(s, f"{p}.emb_layers.1", _lin(cout, temb))
    _add(s, f"{p}.out_layers.0", _norm(cout))
    _add(s, f"{p}.out_layers.3", _conv(cout, cout, 3))
    if cin != cout:
        _add(s, f"{p}.skip_connection", _conv(cout, cin, 1))


def _transformer(s, p, c, inner, ctx):
    _add(s, f"{p}.norm", _norm(c))
    _add(s, f"{p}.proj_in", _conv(inner, c, 1))
    t = f"{p}.transformer_blocks.0"
    for a, kv in (("attn1", inner), ("attn2", ctx)):
        _add(s, f"{t}.{a}.to_q", _lin(inner, inner, False))
        _add(s, f"{t}.{a}.to_k", _lin(inner, kv, False))
        _add(s, f"{t}.{a}.to_v", _lin(inner, kv, False))
        _add(s, f"{t}.{a}.to_out.0", _lin(inner, inner))
    _add(s, f"{t}.ff.net.0.proj", _lin(8 * inner, inner))
    _add(s, f"{t}.ff.net.2", _lin(inner, 4 * inner))
    for n in ("norm1", "norm2", "norm3"):
        _add(s, f"{t}.{n}", _norm(inner))
    _add(s, f"{p}.proj_out", _conv(c, inner, 1))


def sd1_spec() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the demo's SD 1.x checkpoint (LDM layout, as in the files people download)."""
    s: dict[str, tuple[int, ...]] = {}
    u, mc, mult, depth = "model.diffusion_model", UNET["model_channels"], UNET["channel_mult"], UNET["transformer_depth"]
    ctx, inner, temb = UNET["context_dim"], UNET["inner"], 4 * UNET["model_channels"]
    _add(s, f"{u}.time_embed.0", _lin(temb, mc))
    _add(s, f"{u}.time_embed.2", _lin(temb, temb))
    _add(s, f"{u}.input_blocks.0.0", _conv(mc, UNET["in_channels"], 3))
    chans, ch, n = [mc], mc, 1
    for level, m in enumerate(mult):
        for _ in range(UNET["num_res_blocks"]):
            _resblock(s, f"{u}.input_blocks.{n}.0", ch, m * mc, temb)
            ch = m * mc
            if depth[level]:
                _transformer(s, f"{u}.input_blocks.{n}.1", ch, inner, ctx)
            chans.append(ch)
            n += 1
        if level != len(mult) - 1:
            _add(s, f"{u}.input_blocks.{n}.0.op", _conv(ch, ch, 3))
            chans.append(ch)
            n += 1
    _resblock(s, f"{u}.middle_block.0", ch, ch, temb)
    _transformer(s, f"{u}.middle_block.1", ch, inner, ctx)
    _resblock(s, f"{u}.middle_block.2", ch, ch, temb)
    n = 0
    for level in reversed(range(len(mult))):
        for i in range(UNET["num_res_blocks"] + 1):
            _resblock(s, f"{u}.output_blocks.{n}.0", ch + chans.pop(), mult[level] * mc, temb)
            ch, j = mult[level] * mc, 1
            if depth[level]:
                _transformer(s, f"{u}.output_blocks.{n}.1", ch, inner, ctx)
                j = 2
            if level and i == UNET["num_res_blocks"]:
                _add(s, f"{u}.output_blocks.{n}.{j}.conv", _conv(ch, ch, 3))
            n += 1
    _add(s, f"{u}.out.0", _norm(ch))
    _add(s, f"{u}.out.2", _conv(UNET["out_channels"], mc, 3))
    t, w, mlp = "cond_stage_model.transformer.text_model", CLIP_L["width"], CLIP_L["mlp"]
    s[f"{t}.embeddings.token_embedding.weight"] = (CLIP_L["vocab"], w)
    s[f"{t}.embeddings.position_embedding.weight"] = (CLIP_L["positions"], w)
    for i in range(CLIP_L["layers"]):
        layer = f"{t}.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _add(s, f"{layer}.self_attn.{proj}", _lin(w, w))
        _add(s, f"{layer}.layer_norm1", _norm(w))
        _add(s, f"{layer}.mlp.fc1", _lin(mlp, w))
        _add(s, f"{layer}.mlp.fc2", _lin(w, mlp))
        _add(s, f"{layer}.layer_norm2", _norm(w))
    _add(s, f"{t}.final_layer_norm", _norm(w))
    return s


# ------------------------------------------------------------------ weights and their ancestry

def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def random_model(spec: dict, seed: int) -> dict[str, np.ndarray]:
    """Weights N(0, 1/fan_in), norm scales 1 + 0.05 N, biases and embeddings 0.02 N."""
    out = {}
    for k, shape in spec.items():
        x = _rng(seed, k).standard_normal(shape, dtype=np.float32)
        if k.endswith("bias") or "embedding" in k:
            x *= np.float32(0.02)
        elif len(shape) == 1:
            x = np.float32(1) + np.float32(0.05) * x
        else:
            x *= np.float32(1 / math.sqrt(math.prod(shape[1:])))
        out[k] = x
    return out


def finetune(model: dict, strength: float, seed: int) -> dict[str, np.ndarray]:
    """Change every tensor by ``strength`` of its RMS, part of it in a direction all fine-tunes share."""
    out = {}
    for k, w in model.items():
        rms = float(np.sqrt(np.mean(w * w))) or 1.0
        own = _rng(seed, k).standard_normal(w.shape, dtype=np.float32)
        shared = (_rng(424242, k).standard_normal(w.shape, dtype=np.float32) - w / rms) / math.sqrt(2)
        d = math.sqrt(1 - SHARED_DIRECTION ** 2) * own + SHARED_DIRECTION * shared
        out[k] = w + d * np.float32(strength * rms / (float(np.sqrt(np.mean(d * d))) or 1.0))
    return out


def merge(models: list[dict], weights: list[float]) -> dict[str, np.ndarray]:
    """A weighted-sum merge, as checkpoint mergers make them."""
    return {k: sum(np.float32(w) * m[k] for m, w in zip(models, weights)) for k in models[0]}


def write_safetensors(path: str, model: dict, dtype: str = "F16", metadata: dict | None = None) -> None:
    """A plain safetensors file (sorted keys), F16 / F32 / BF16 (BF16 rounded to nearest even)."""
    from ..paths import atomic_write
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    blobs, off = [], 0
    for k in sorted(model):
        x = np.ascontiguousarray(model[k], dtype=np.float32)
        if dtype == "BF16":
            bits = x.view(np.uint32)
            raw = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()
        else:
            raw = x.astype({"F16": "<f2", "F32": "<f4"}[dtype]).tobytes()
        header[k] = {"dtype": dtype, "shape": list(x.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)

    def write(f):
        f.write(len(h).to_bytes(8, "little") + h)
        for b in blobs:
            f.write(b)
    atomic_write(path, write)


# ------------------------------------------------------------------ the demo folder

#: (reference name, parent, how it is made)
REFERENCES = [("Demo Base 1.0", None, "a base model (random weights)"),
              ("Demo Anime", "Demo Base 1.0", "a 30 % fine-tune of Demo Base 1.0"),
              ("Demo Photo", "Demo Base 1.0", "another 30 % fine-tune of Demo Base 1.0")]


def build(out_dir: str) -> dict:
    """Write ``out_dir/models`` (the folder to scan) and register the references in ``out_dir/refs``
    (``out_dir/cache`` holds the demo's store). Returns the paths and what each file is."""
    from .. import api
    models, refs, cache, work = (os.path.join(out_dir, d) for d in ("models", "refs", "cache", ".work"))
    for d in (models, refs, cache, work):   # a rerun starts afresh: the demo owns these folders
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    spec = sd1_spec()
    base = random_model(spec, 1)
    anime, photo = finetune(base, 0.30, 11), finetune(base, 0.30, 12)
    files = {
        "base.safetensors": (base, "F16", "the base itself: identical to the reference Demo Base 1.0"),
        "base_copy.safetensors": (None, None, "a byte copy of base.safetensors: an identical group"),
        "base_bf16.safetensors": (base, "BF16", "the base stored as bf16: same weights, another precision"),
        "anime_v2.safetensors": (finetune(anime, 0.05, 21), "F16",
                                 "a 5 % fine-tune of Demo Anime: derivative, lineage Demo Base 1.0 → Demo Anime"),
        "anime_photo_mix.safetensors": (merge([anime, photo], [0.6, 0.4]), "F16",
                                        "0.6 × Demo Anime + 0.4 × Demo Photo: a merge"),
        "scratch.safetensors": (random_model(spec, 99), "F16",
                                "a model trained from scratch (unrelated weights): unknown"),
        "broken.safetensors": (None, None, "the first 4 kB of base.safetensors: unreadable, one line on stderr"),
    }
    for name, (model, dtype, _) in files.items():
        if model is not None:
            write_safetensors(os.path.join(models, name), model, dtype, {"demo": "generated by fpcore demo"})
    shutil.copyfile(os.path.join(models, "base.safetensors"), os.path.join(models, "base_copy.safetensors"))
    with open(os.path.join(models, "base.safetensors"), "rb") as f:
        head = f.read(4096)
    with open(os.path.join(models, "broken.safetensors"), "wb") as f:
        f.write(head)
    # the references: the base from the folder itself, the fine-tunes from files that are not in it
    made = {"Demo Base 1.0": os.path.join(models, "base.safetensors")}
    for name, model in (("Demo Anime", anime), ("Demo Photo", photo)):
        made[name] = os.path.join(work, name.replace(" ", "_") + ".safetensors")
        write_safetensors(made[name], model, "F16")
    for name, parent, _ in REFERENCES:
        api.add_reference(made[name], name, parent=parent, refs_dir=refs)
    shutil.rmtree(work, ignore_errors=True)
    story = [f"reference {n}: {how}" + (f" (parent {p})" if p else "") for n, p, how in REFERENCES]
    story += [f"{name}: {what}" for name, (_, _, what) in files.items()]
    return {"models": models, "refs": refs, "cache": cache, "story": story,
            "bad": [os.path.join(models, "broken.safetensors")],
            "expected": {name: what for name, (_, _, what) in files.items()}}
