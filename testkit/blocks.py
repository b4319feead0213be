"""Generic key/shape generators: the layer blocks of SD-era networks, as ``{key: shape}`` specs.

Each generator builds the state-dict keys and shapes that the real module of that
name holds (``openaimodel.UNetModel``, ``transformers.CLIPTextModel``, the open_clip
text tower, the ldm ``AutoencoderKL``, a T5 encoder), from a config dict; the
configs themselves are tables in ``testkit.sd``.
"""
from __future__ import annotations

from typing import Iterable, Mapping

Spec = dict[str, tuple[int, ...]]


# --------------------------------------------------------------------------
# Generic generators
# --------------------------------------------------------------------------

def lin(out: int, inp: int, bias: bool = True) -> list[tuple[str, tuple[int, ...]]]:
    r = [("weight", (out, inp))]
    if bias:
        r.append(("bias", (out,)))
    return r


def conv(out: int, inp: int, k: int, bias: bool = True) -> list[tuple[str, tuple[int, ...]]]:
    r = [("weight", (out, inp, k, k))]
    if bias:
        r.append(("bias", (out,)))
    return r


def norm(c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [("weight", (c,)), ("bias", (c,))]


class Builder:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.spec: Spec = {}

    def add(self, name: str, params: Iterable[tuple[str, tuple[int, ...]]]) -> None:
        for pname, shape in params:
            key = f"{self.prefix}{name}.{pname}" if name else f"{self.prefix}{pname}"
            if key in self.spec:
                raise AssertionError(f"duplicate key {key}")
            self.spec[key] = tuple(int(s) for s in shape)


def _unet_resblock(b: Builder, name: str, cin: int, cout: int, temb: int) -> None:
    b.add(f"{name}.in_layers.0", norm(cin))
    b.add(f"{name}.in_layers.2", conv(cout, cin, 3))
    b.add(f"{name}.emb_layers.1", lin(cout, temb))
    b.add(f"{name}.out_layers.0", norm(cout))
    b.add(f"{name}.out_layers.3", conv(cout, cout, 3))
    if cin != cout:
        b.add(f"{name}.skip_connection", conv(cout, cin, 1))


def _unet_transformer(b: Builder, name: str, c: int, depth: int, ctx: int,
                      linear: bool, inner: int | None = None) -> None:
    # SpatialTransformer(c, n_heads, d_head): inner_dim = n_heads * d_head, which
    # equals c in every released SD model; the blocks work at inner_dim
    # (LayerNorms, attention, GEGLU feed-forward with mult 4).
    inner = inner or c
    ff = 4 * inner
    b.add(f"{name}.norm", norm(c))
    b.add(f"{name}.proj_in", lin(inner, c) if linear else conv(inner, c, 1))
    for d in range(depth):
        t = f"{name}.transformer_blocks.{d}"
        b.add(f"{t}.attn1.to_q", lin(inner, inner, bias=False))
        b.add(f"{t}.attn1.to_k", lin(inner, inner, bias=False))
        b.add(f"{t}.attn1.to_v", lin(inner, inner, bias=False))
        b.add(f"{t}.attn1.to_out.0", lin(inner, inner))
        b.add(f"{t}.ff.net.0.proj", lin(2 * ff, inner))  # GEGLU
        b.add(f"{t}.ff.net.2", lin(inner, ff))
        b.add(f"{t}.attn2.to_q", lin(inner, inner, bias=False))
        b.add(f"{t}.attn2.to_k", lin(inner, ctx, bias=False))
        b.add(f"{t}.attn2.to_v", lin(inner, ctx, bias=False))
        b.add(f"{t}.attn2.to_out.0", lin(inner, inner))
        b.add(f"{t}.norm1", norm(inner))
        b.add(f"{t}.norm2", norm(inner))
        b.add(f"{t}.norm3", norm(inner))
    b.add(f"{name}.proj_out", lin(c, inner) if linear else conv(c, inner, 1))


def unet_spec(prefix: str, cfg: Mapping) -> Spec:
    """openaimodel.UNetModel (LDM / SGM) state-dict keys and shapes."""
    b = Builder(prefix)
    mc = cfg["model_channels"]
    mult = cfg["channel_mult"]
    nrb = cfg["num_res_blocks"]
    depth = cfg["transformer_depth"]
    ctx = cfg["context_dim"]
    linear = cfg["use_linear_in_transformer"]
    attn = cfg.get("attn_dim")
    temb = 4 * mc

    b.add("time_embed.0", lin(temb, mc))
    b.add("time_embed.2", lin(temb, temb))
    if cfg.get("adm_in_channels"):
        b.add("label_emb.0.0", lin(temb, cfg["adm_in_channels"]))
        b.add("label_emb.0.2", lin(temb, temb))

    b.add("input_blocks.0.0", conv(mc, cfg["in_channels"], 3))
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
            b.add(f"input_blocks.{n}.0.op", conv(ch, ch, 3))
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
                b.add(f"output_blocks.{n}.{j}.conv", conv(ch, ch, 3))
            n += 1

    b.add("out.0", norm(ch))
    b.add("out.2", conv(cfg["out_channels"], mc, 3))
    return b.spec


def hf_clip_spec(prefix: str, cfg: Mapping) -> Spec:
    """transformers.CLIPTextModel ``text_model.*`` keys (prefix ends in text_model.)."""
    b = Builder(prefix)
    w, mlp = cfg["width"], cfg["mlp"]
    b.add("embeddings.token_embedding", [("weight", (cfg["vocab"], w))])
    b.add("embeddings.position_embedding", [("weight", (cfg["positions"], w))])
    if cfg.get("position_ids"):
        b.add("embeddings", [("position_ids", (1, cfg["positions"]))])
    for i in range(cfg["layers"]):
        layer = f"encoder.layers.{i}"
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            b.add(f"{layer}.self_attn.{p}", lin(w, w))
        b.add(f"{layer}.layer_norm1", norm(w))
        b.add(f"{layer}.mlp.fc1", lin(mlp, w))
        b.add(f"{layer}.mlp.fc2", lin(w, mlp))
        b.add(f"{layer}.layer_norm2", norm(w))
    b.add("final_layer_norm", norm(w))
    return b.spec


def open_clip_spec(prefix: str, cfg: Mapping) -> Spec:
    """open_clip text tower keys as stored by SD2 / SGM (prefix ends in model.)."""
    b = Builder(prefix)
    w, mlp = cfg["width"], cfg["mlp"]
    b.add("", [("positional_embedding", (cfg["positions"], w))])
    b.add("", [("text_projection", (w, cfg["proj"]))])
    b.add("", [("logit_scale", ())])
    b.add("token_embedding", [("weight", (cfg["vocab"], w))])
    for i in range(cfg["layers"]):
        r = f"transformer.resblocks.{i}"
        b.add(f"{r}.ln_1", norm(w))
        b.add(f"{r}.attn", [("in_proj_weight", (3 * w, w)), ("in_proj_bias", (3 * w,))])
        b.add(f"{r}.attn.out_proj", lin(w, w))
        b.add(f"{r}.ln_2", norm(w))
        b.add(f"{r}.mlp.c_fc", lin(mlp, w))
        b.add(f"{r}.mlp.c_proj", lin(w, mlp))
    b.add("ln_final", norm(w))
    return b.spec


def _vae_resblock(b: Builder, name: str, cin: int, cout: int) -> None:
    b.add(f"{name}.norm1", norm(cin))
    b.add(f"{name}.conv1", conv(cout, cin, 3))
    b.add(f"{name}.norm2", norm(cout))
    b.add(f"{name}.conv2", conv(cout, cout, 3))
    if cin != cout:
        b.add(f"{name}.nin_shortcut", conv(cout, cin, 1))


def _vae_mid(b: Builder, name: str, c: int) -> None:
    _vae_resblock(b, f"{name}.block_1", c, c)
    b.add(f"{name}.attn_1.norm", norm(c))
    for p in ("q", "k", "v", "proj_out"):
        b.add(f"{name}.attn_1.{p}", conv(c, c, 1))
    _vae_resblock(b, f"{name}.block_2", c, c)


def vae_spec(prefix: str, cfg: Mapping) -> Spec:
    """ldm AutoencoderKL (Encoder/Decoder from diffusionmodules.model)."""
    b = Builder(prefix)
    ch, mult, nrb, z = cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"], cfg["z_channels"]
    # encoder
    b.add("encoder.conv_in", conv(ch, cfg["in_channels"], 3))
    in_mult = (1,) + tuple(mult)
    cin = ch
    for i, m in enumerate(mult):
        cin = ch * in_mult[i]
        cout = ch * m
        for j in range(nrb):
            _vae_resblock(b, f"encoder.down.{i}.block.{j}", cin, cout)
            cin = cout
        if i != len(mult) - 1:
            b.add(f"encoder.down.{i}.downsample.conv", conv(cin, cin, 3))
    _vae_mid(b, "encoder.mid", cin)
    b.add("encoder.norm_out", norm(cin))
    b.add("encoder.conv_out", conv(2 * z if cfg["double_z"] else z, cin, 3))
    # decoder (nn.ModuleList built with insert(0, ...): keys up.0 .. up.N-1)
    top = ch * mult[-1]
    b.add("decoder.conv_in", conv(top, z, 3))
    _vae_mid(b, "decoder.mid", top)
    ups: dict[int, Spec] = {}
    cin = top
    for i in reversed(range(len(mult))):
        ub = Builder(b.prefix)
        cout = ch * mult[i]
        for j in range(nrb + 1):
            _vae_resblock(ub, f"decoder.up.{i}.block.{j}", cin, cout)
            cin = cout
        if i != 0:
            ub.add(f"decoder.up.{i}.upsample.conv", conv(cin, cin, 3))
        ups[i] = ub.spec
    for i in range(len(mult)):
        b.spec.update(ups[i])
    b.add("decoder.norm_out", norm(cin))
    b.add("decoder.conv_out", conv(cfg["out_ch"], cin, 3))
    e = cfg["embed_dim"]
    b.add("quant_conv", conv(2 * e, 2 * z, 1))
    b.add("post_quant_conv", conv(z, e, 1))
    return b.spec


def t5_spec(prefix: str, layers: int = 24, d: int = 4096, ff: int = 10240, umt5: bool = False,
             vocab: int = 32128) -> Spec:
    b = Builder(prefix)
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
