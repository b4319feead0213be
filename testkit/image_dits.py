"""Image DiT and other post-SDXL denoisers at full size (header-only detection tests).

Real shapes matter for the keys the architecture rules look at; the rest is a
realistic key set at the real widths, so that sparse files have real sizes.
"""
from __future__ import annotations

from .blocks import Builder, Spec, conv, lin, norm, t5_spec
from .sd import clip_hf, vae16

def mm_block(b: Builder, name: str, h: int, pre_only: bool = False, qk_norm: bool = False,
              attn2: bool = False) -> None:
    b.add(f"{name}.adaLN_modulation.1", lin((2 if pre_only else 6) * h + (3 * h if attn2 else 0), h))
    b.add(f"{name}.attn.qkv", lin(3 * h, h))
    if qk_norm:
        b.add(f"{name}.attn.ln_q", [("weight", (64,))])
        b.add(f"{name}.attn.ln_k", [("weight", (64,))])
    if attn2:
        b.add(f"{name}.attn2.qkv", lin(3 * h, h))
        b.add(f"{name}.attn2.proj", lin(h, h))
        if qk_norm:
            b.add(f"{name}.attn2.ln_q", [("weight", (64,))])
            b.add(f"{name}.attn2.ln_k", [("weight", (64,))])
    if not pre_only:
        b.add(f"{name}.attn.proj", lin(h, h))
        b.add(f"{name}.mlp.fc1", lin(4 * h, h))
        b.add(f"{name}.mlp.fc2", lin(h, 4 * h))


def sd3_dit(prefix: str, depth: int, qk_norm: bool = False, attn2_layers: int = 0) -> Spec:
    h = 64 * depth
    b = Builder(prefix)
    b.add("x_embedder.proj", conv(h, 16, 2))
    b.add("", [("pos_embed", (1, 36864 if depth < 30 else 36864, h))])
    b.add("context_embedder", lin(h, 4096))
    b.add("y_embedder.mlp.0", lin(h, 2048))
    b.add("y_embedder.mlp.2", lin(h, h))
    b.add("t_embedder.mlp.0", lin(h, 256))
    b.add("t_embedder.mlp.2", lin(h, h))
    for i in range(depth):
        mm_block(b, f"joint_blocks.{i}.context_block", h, pre_only=i == depth - 1, qk_norm=qk_norm)
        mm_block(b, f"joint_blocks.{i}.x_block", h, qk_norm=qk_norm, attn2=i < attn2_layers)
    b.add("final_layer.linear", lin(64, h))
    b.add("final_layer.adaLN_modulation.1", lin(2 * h, h))
    return b.spec


def sd3(depth: int, **kw) -> Spec:
    spec = sd3_dit("model.diffusion_model.", depth, **kw)
    spec.update(clip_hf("text_encoders.clip_l.transformer.", "clip_l", projection=True))
    spec.update(clip_hf("text_encoders.clip_g.transformer.", "clip_g", projection=True))
    spec.update(t5_spec("text_encoders.t5xxl.transformer."))
    spec.update(vae16("first_stage_model."))
    return spec


def flux_dit(prefix: str, h: int = 3072, double: int = 19, single: int = 38, in_ch: int = 64,
              guidance: bool = True, chroma: bool = False, flux2: bool = False) -> Spec:
    b = Builder(prefix)
    mlp = 3 * h if flux2 else 4 * h
    bias = not flux2
    b.add("img_in", lin(h, in_ch, bias))
    b.add("txt_in", lin(h, 15360 if flux2 else 4096, bias))
    if chroma:
        b.add("distilled_guidance_layer.in_proj", lin(5120, 64))
        for i in range(5):
            b.add(f"distilled_guidance_layer.layers.{i}.in_layer", lin(5120, 5120))
            b.add(f"distilled_guidance_layer.layers.{i}.out_layer", lin(5120, 5120))
            b.add(f"distilled_guidance_layer.norms.{i}", [("scale", (5120,))])
        b.add("distilled_guidance_layer.out_proj", lin(h, 5120))
    else:
        b.add("time_in.in_layer", lin(h, 256, bias))
        b.add("time_in.out_layer", lin(h, h, bias))
        if not flux2:
            b.add("vector_in.in_layer", lin(h, 768))
            b.add("vector_in.out_layer", lin(h, h))
        if guidance:
            b.add("guidance_in.in_layer", lin(h, 256, bias))
            b.add("guidance_in.out_layer", lin(h, h, bias))
    if flux2:
        b.add("double_stream_modulation_img.lin", lin(6 * h, h, False))
        b.add("double_stream_modulation_txt.lin", lin(6 * h, h, False))
        b.add("single_stream_modulation.lin", lin(3 * h, h, False))
    for i in range(double):
        for s in ("img", "txt"):
            if not (chroma or flux2):
                b.add(f"double_blocks.{i}.{s}_mod.lin", lin(6 * h, h))
            b.add(f"double_blocks.{i}.{s}_attn.qkv", lin(3 * h, h, bias))
            b.add(f"double_blocks.{i}.{s}_attn.norm.query_norm", [("scale", (128,))])
            b.add(f"double_blocks.{i}.{s}_attn.norm.key_norm", [("scale", (128,))])
            b.add(f"double_blocks.{i}.{s}_attn.proj", lin(h, h, bias))
            b.add(f"double_blocks.{i}.{s}_mlp.0", lin(2 * mlp if flux2 else mlp, h, bias))
            b.add(f"double_blocks.{i}.{s}_mlp.2", lin(h, mlp, bias))
    for i in range(single):
        b.add(f"single_blocks.{i}.linear1", lin(3 * h + (2 * mlp if flux2 else mlp), h, bias))
        b.add(f"single_blocks.{i}.linear2", lin(h, h + mlp, bias))
        b.add(f"single_blocks.{i}.norm.query_norm", [("scale", (128,))])
        b.add(f"single_blocks.{i}.norm.key_norm", [("scale", (128,))])
        if not (chroma or flux2):
            b.add(f"single_blocks.{i}.modulation.lin", lin(3 * h, h))
    b.add("final_layer.linear", lin(in_ch if in_ch != 384 else 64, h, bias))
    if not chroma:
        b.add("final_layer.adaLN_modulation.1", lin(2 * h, h, bias))
    return b.spec


def auraflow() -> Spec:
    h = 3072
    b = Builder("model.diffusion_model.")
    b.add("cond_seq_linear", lin(h, 2048, False))
    b.add("init_x_linear", lin(h, 64))
    b.add("", [("positional_encoding", (1, 9216, h)), ("register_tokens", (1, 8, h))])
    b.add("t_embedder.mlp.0", lin(h, 256))
    b.add("t_embedder.mlp.2", lin(h, h))
    for i in range(4):
        for s in ("X", "C"):
            b.add(f"double_layers.{i}.mod{s}.1", lin(6 * h, h, False))
            b.add(f"double_layers.{i}.mlp{s}.c_fc1", lin(8192, h, False))
            b.add(f"double_layers.{i}.mlp{s}.c_fc2", lin(8192, h, False))
            b.add(f"double_layers.{i}.mlp{s}.c_proj", lin(h, 8192, False))
        for p in ("w1q", "w1k", "w1v", "w1o", "w2q", "w2k", "w2v", "w2o"):
            b.add(f"double_layers.{i}.attn.{p}", lin(h, h, False))
    for i in range(32):
        b.add(f"single_layers.{i}.modCX.1", lin(6 * h, h, False))
        for p in ("w1q", "w1k", "w1v", "w1o"):
            b.add(f"single_layers.{i}.attn.{p}", lin(h, h, False))
        b.add(f"single_layers.{i}.mlp.c_fc1", lin(8192, h, False))
        b.add(f"single_layers.{i}.mlp.c_fc2", lin(8192, h, False))
        b.add(f"single_layers.{i}.mlp.c_proj", lin(h, 8192, False))
    b.add("modF.1", lin(2 * h, h, False))
    b.add("final_linear", lin(64, h, False))
    return b.spec


def hunyuan_dit() -> Spec:
    h, depth = 1408, 40
    b = Builder("")
    b.add("x_embedder.proj", conv(h, 4, 2))
    b.add("t_embedder.mlp.0", lin(h, 256))
    b.add("t_embedder.mlp.2", lin(h, h))
    b.add("extra_embedder.0", lin(4 * h, 3968))
    b.add("extra_embedder.2", lin(h, 4 * h))
    b.add("mlp_t5.0", lin(8192, 2048))
    b.add("mlp_t5.2", lin(1024, 8192))
    b.add("", [("text_embedding_padding", (333, 1024))])
    b.add("pooler.q_proj", lin(1024, 1024))
    b.add("style_embedder", [("weight", (1, h))])
    for i in range(depth):
        p = f"blocks.{i}"
        b.add(f"{p}.norm1", norm(h))
        b.add(f"{p}.attn1.Wqkv", lin(3 * h, h))
        b.add(f"{p}.attn1.q_norm", norm(88))
        b.add(f"{p}.attn1.k_norm", norm(88))
        b.add(f"{p}.attn1.out_proj", lin(h, h))
        b.add(f"{p}.norm2", norm(h))
        b.add(f"{p}.mlp.fc1", lin(6144, h))
        b.add(f"{p}.mlp.fc2", lin(h, 6144))
        b.add(f"{p}.default_modulation.1", lin(h, h))
        b.add(f"{p}.attn2.q_proj", lin(h, h))
        b.add(f"{p}.attn2.kv_proj", lin(2 * h, 1024))
        b.add(f"{p}.attn2.out_proj", lin(h, h))
        b.add(f"{p}.norm3", norm(h))
        if i > depth // 2:
            b.add(f"{p}.skip_norm", norm(h))
            b.add(f"{p}.skip_linear", lin(h, 2 * h))
    b.add("final_layer.adaLN_modulation.1", lin(2 * h, h))
    b.add("final_layer.linear", lin(32, h))
    return b.spec


def pixart(sigma: bool) -> Spec:
    h = 1152
    b = Builder("")
    b.add("x_embedder.proj", conv(h, 4, 2))
    b.add("", [("pos_embed", (1, 4096, h))])
    b.add("t_embedder.mlp.0", lin(h, 256))
    b.add("t_embedder.mlp.2", lin(h, h))
    b.add("t_block.1", lin(6 * h, h))
    b.add("y_embedder.y_proj.fc1", lin(h, 4096))
    b.add("y_embedder.y_proj.fc2", lin(h, h))
    b.add("y_embedder", [("y_embedding", (300 if sigma else 120, 4096))])
    if not sigma:
        b.add("csize_embedder.mlp.0", lin(h // 3, 256))
        b.add("ar_embedder.mlp.0", lin(h // 3, 256))
    for i in range(28):
        p = f"blocks.{i}"
        b.add(p, [("scale_shift_table", (6, h))])
        b.add(f"{p}.attn.qkv", lin(3 * h, h))
        b.add(f"{p}.attn.proj", lin(h, h))
        b.add(f"{p}.cross_attn.q_linear", lin(h, h))
        b.add(f"{p}.cross_attn.kv_linear", lin(2 * h, h))
        b.add(f"{p}.cross_attn.proj", lin(h, h))
        b.add(f"{p}.mlp.fc1", lin(4 * h, h))
        b.add(f"{p}.mlp.fc2", lin(h, 4 * h))
    b.add("final_layer", [("scale_shift_table", (2, h))])
    b.add("final_layer.linear", lin(32, h))
    return b.spec


def cascade(stage: str) -> Spec:
    b = Builder("")
    if stage == "c":
        hid, cond = (2048, 2048), 2048
        b.add("clip_txt_mapper", lin(cond, 1280))
        b.add("clip_txt_pooled_mapper", lin(cond * 4, 1280))
        b.add("clip_img_mapper", lin(cond * 4, 768))
        b.add("embedding.1", conv(hid[0], 64, 1))
        blocks = (8, 24)
        out_ch = 16
    else:
        hid, cond = (320, 640, 1280, 1280), 1280
        b.add("clip_mapper", lin(cond * 4, 1280))
        b.add("effnet_mapper.0", conv(hid[0] * 4, 16, 1))
        b.add("effnet_mapper.2", conv(hid[0], hid[0] * 4, 1))
        b.add("pixels_mapper.0", conv(hid[0] * 4, 3, 1))
        b.add("embedding.1", conv(hid[0], 16, 2))
        blocks = (2, 6, 28, 6)
        out_ch = 4
    for lvl, (c, n) in enumerate(zip(hid, blocks)):
        for j in range(n):
            for d in ("down_blocks", "up_blocks"):
                p = f"{d}.{lvl}.{j}"
                b.add(f"{p}.depthwise", conv(c, 1, 3))
                b.add(f"{p}.channelwise.0", lin(4 * c, c))
                b.add(f"{p}.channelwise.4", lin(c, 4 * c))
                b.add(f"{p}.mapper", lin(2 * c, 64))
    b.add("clf.1", conv(out_ch * 4, hid[0], 1))
    return b.spec


def lumina2() -> Spec:
    h = 2304
    b = Builder("model.diffusion_model.")
    b.add("x_embedder", lin(h, 64))
    b.add("t_embedder.mlp.0", lin(256, 256))
    b.add("t_embedder.mlp.2", lin(256, 256))
    b.add("cap_embedder.0", [("weight", (2304,))])
    b.add("cap_embedder.1", lin(h, 2304))

    def layer(p, mod=True):
        b.add(f"{p}.attention.qkv", lin(h + 2 * 768, h, False))
        b.add(f"{p}.attention.out", lin(h, h, False))
        b.add(f"{p}.attention.q_norm", [("weight", (96,))])
        b.add(f"{p}.attention.k_norm", [("weight", (96,))])
        for n in ("w1", "w3"):
            b.add(f"{p}.feed_forward.{n}", lin(6144, h, False))
        b.add(f"{p}.feed_forward.w2", lin(h, 6144, False))
        for n in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2"):
            b.add(f"{p}.{n}", [("weight", (h,))])
        if mod:
            b.add(f"{p}.adaLN_modulation.0", lin(4 * h, 256))
    for i in range(2):
        layer(f"noise_refiner.{i}")
        layer(f"context_refiner.{i}", mod=False)
    for i in range(26):
        layer(f"layers.{i}")
    b.add("norm_final", [("weight", (h,))])
    b.add("final_layer.linear", lin(64, h))
    b.add("final_layer.adaLN_modulation.1", lin(h, 256))
    return b.spec


def hidream() -> Spec:
    h = 2560
    b = Builder("")
    b.add("x_embedder.proj", lin(h, 64))
    b.add("t_embedder.timestep_embedder.linear_1", lin(h, 256))
    b.add("t_embedder.timestep_embedder.linear_2", lin(h, h))
    b.add("p_embedder.pooled_embedder.linear_1", lin(h, 2048))
    b.add("p_embedder.pooled_embedder.linear_2", lin(h, h))
    for i in range(49):
        b.add(f"caption_projection.{i}.linear", lin(h, 4096, False))
    for i in range(16):
        p = f"double_stream_blocks.{i}.block"
        b.add(f"{p}.adaLN_modulation.1", lin(12 * h, h))
        for n in ("to_q", "to_k", "to_v", "to_out", "to_q_t", "to_k_t", "to_v_t", "to_out_t"):
            b.add(f"{p}.attn1.{n}", lin(h, h))
        b.add(f"{p}.ff_i.gate.weight", [("", (4, h))])
        b.add(f"{p}.ff_t.w1", lin(6912, h, False))
    for i in range(32):
        p = f"single_stream_blocks.{i}.block"
        b.add(f"{p}.adaLN_modulation.1", lin(6 * h, h))
        for n in ("to_q", "to_k", "to_v", "to_out"):
            b.add(f"{p}.attn1.{n}", lin(h, h))
    b.add("final_layer.linear", lin(64, h))
    b.add("final_layer.adaLN_modulation.1", lin(2 * h, h))
    return {k.replace(".weight.", "."): s for k, s in b.spec.items()}


def qwen_image() -> Spec:
    h = 3072
    b = Builder("model.diffusion_model.")
    b.add("img_in", lin(h, 64))
    b.add("txt_norm", [("weight", (3584,))])
    b.add("txt_in", lin(h, 3584))
    b.add("time_text_embed.timestep_embedder.linear_1", lin(h, 256))
    b.add("time_text_embed.timestep_embedder.linear_2", lin(h, h))
    for i in range(60):
        p = f"transformer_blocks.{i}"
        b.add(f"{p}.img_mod.1", lin(6 * h, h))
        b.add(f"{p}.txt_mod.1", lin(6 * h, h))
        for n in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            b.add(f"{p}.attn.{n}", lin(h, h))
        for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            b.add(f"{p}.attn.{n}", [("weight", (128,))])
        for s in ("img", "txt"):
            b.add(f"{p}.{s}_mlp.net.0.proj", lin(4 * h, h))
            b.add(f"{p}.{s}_mlp.net.2", lin(h, 4 * h))
    b.add("norm_out.linear", lin(2 * h, h))
    b.add("proj_out", lin(64, h))
    return b.spec
