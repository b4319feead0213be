"""Video denoisers at full size (header-only detection tests)."""
from __future__ import annotations

from .blocks import Builder, Spec, lin, norm

def wan(dim: int = 5120, layers: int = 40, ffn: int = 13824, in_dim: int = 16, i2v: bool = False,
         vace: bool = False, out_dim: int = 16) -> Spec:
    b = Builder("model.diffusion_model.")
    b.add("patch_embedding", [("weight", (dim, in_dim, 1, 2, 2)), ("bias", (dim,))])
    b.add("text_embedding.0", lin(dim, 4096))
    b.add("text_embedding.2", lin(dim, dim))
    b.add("time_embedding.0", lin(dim, 256))
    b.add("time_embedding.2", lin(dim, dim))
    b.add("time_projection.1", lin(6 * dim, dim))
    if i2v:
        b.add("img_emb.proj.0", norm(1280))
        b.add("img_emb.proj.1", lin(1280, 1280))
        b.add("img_emb.proj.3", lin(dim, 1280))
        b.add("img_emb.proj.4", norm(dim))
    for i in range(layers):
        p = f"blocks.{i}"
        b.add(p, [("modulation", (1, 6, dim))])
        for a in ("self_attn", "cross_attn"):
            for n in ("q", "k", "v", "o"):
                b.add(f"{p}.{a}.{n}", lin(dim, dim))
            b.add(f"{p}.{a}.norm_q", [("weight", (dim,))])
            b.add(f"{p}.{a}.norm_k", [("weight", (dim,))])
        if i2v:
            b.add(f"{p}.cross_attn.k_img", lin(dim, dim))
            b.add(f"{p}.cross_attn.v_img", lin(dim, dim))
            b.add(f"{p}.cross_attn.norm_k_img", [("weight", (dim,))])
        b.add(f"{p}.norm3", norm(dim))
        b.add(f"{p}.ffn.0", lin(ffn, dim))
        b.add(f"{p}.ffn.2", lin(dim, ffn))
    if vace:
        b.add("vace_patch_embedding", [("weight", (dim, 96, 1, 2, 2)), ("bias", (dim,))])
        for i in range(8):
            b.add(f"vace_blocks.{i}.after_proj", lin(dim, dim))
    b.add("head", [("modulation", (1, 2, dim))])
    b.add("head.head", lin(4 * out_dim, dim))
    return b.spec


def ltxv() -> Spec:
    h = 2048
    b = Builder("model.diffusion_model.")
    b.add("patchify_proj", lin(h, 128))
    b.add("adaln_single.emb.timestep_embedder.linear_1", lin(h, 256))
    b.add("adaln_single.emb.timestep_embedder.linear_2", lin(h, h))
    b.add("adaln_single.linear", lin(6 * h, h))
    b.add("caption_projection.linear_1", lin(h, 4096))
    b.add("caption_projection.linear_2", lin(h, h))
    for i in range(28):
        p = f"transformer_blocks.{i}"
        b.add(p, [("scale_shift_table", (6, h))])
        for a, ctx in (("attn1", h), ("attn2", h)):
            b.add(f"{p}.{a}.to_q", lin(h, h))
            b.add(f"{p}.{a}.to_k", lin(h, ctx))
            b.add(f"{p}.{a}.to_v", lin(h, ctx))
            b.add(f"{p}.{a}.to_out.0", lin(h, h))
            b.add(f"{p}.{a}.q_norm", [("weight", (h,))])
            b.add(f"{p}.{a}.k_norm", [("weight", (h,))])
        b.add(f"{p}.ff.net.0.proj", lin(4 * h, h))
        b.add(f"{p}.ff.net.2", lin(h, 4 * h))
    b.add("", [("scale_shift_table", (2, h))])
    b.add("proj_out", lin(128, h))
    return b.spec


def hunyuan_video() -> Spec:
    h = 3072
    b = Builder("model.diffusion_model.")
    b.add("img_in.proj", [("weight", (h, 16, 1, 2, 2)), ("bias", (h,))])
    b.add("txt_in.input_embedder", lin(h, 4096))
    b.add("txt_in.t_embedder.mlp.0", lin(h, 256))
    b.add("txt_in.t_embedder.mlp.2", lin(h, h))
    b.add("txt_in.c_embedder.linear_1", lin(h, 4096))
    b.add("txt_in.c_embedder.linear_2", lin(h, h))
    for i in range(2):
        p = f"txt_in.individual_token_refiner.blocks.{i}"
        b.add(f"{p}.norm1", norm(h))
        b.add(f"{p}.self_attn_qkv", lin(3 * h, h))
        b.add(f"{p}.self_attn_proj", lin(h, h))
        b.add(f"{p}.norm2", norm(h))
        b.add(f"{p}.mlp.fc1", lin(4 * h, h))
        b.add(f"{p}.mlp.fc2", lin(h, 4 * h))
        b.add(f"{p}.adaLN_modulation.1", lin(2 * h, h))
    b.add("time_in.mlp.0", lin(h, 256))
    b.add("time_in.mlp.2", lin(h, h))
    b.add("vector_in.in_layer", lin(h, 768))
    b.add("vector_in.out_layer", lin(h, h))
    b.add("guidance_in.mlp.0", lin(h, 256))
    b.add("guidance_in.mlp.2", lin(h, h))
    for i in range(20):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}"
            b.add(f"{p}_mod.linear", lin(6 * h, h))
            b.add(f"{p}_attn_qkv", lin(3 * h, h))
            b.add(f"{p}_attn_q_norm", [("weight", (128,))])
            b.add(f"{p}_attn_k_norm", [("weight", (128,))])
            b.add(f"{p}_attn_proj", lin(h, h))
            b.add(f"{p}_mlp.fc1", lin(4 * h, h))
            b.add(f"{p}_mlp.fc2", lin(h, 4 * h))
    for i in range(40):
        p = f"single_blocks.{i}"
        b.add(f"{p}.linear1", lin(7 * h, h))
        b.add(f"{p}.linear2", lin(h, 5 * h))
        b.add(f"{p}.q_norm", [("weight", (128,))])
        b.add(f"{p}.k_norm", [("weight", (128,))])
        b.add(f"{p}.modulation.linear", lin(3 * h, h))
    b.add("final_layer.linear", lin(64, h))
    b.add("final_layer.adaLN_modulation.1", lin(2 * h, h))
    return b.spec


def mochi() -> Spec:
    hx, hy = 3072, 1536
    b = Builder("model.diffusion_model.")
    b.add("x_embedder.proj", lin(hx, 48))
    b.add("t_embedder.mlp.0", lin(hx, 256))
    b.add("t_embedder.mlp.2", lin(hx, hx))
    b.add("t5_y_embedder.to_kv", lin(2 * hx, 4096))
    b.add("t5_y_embedder.to_q", lin(hx, 4096))
    b.add("t5_y_embedder.to_out", lin(hx, hx))
    b.add("t5_yproj", lin(hy, 4096))
    b.add("", [("pos_frequencies", (3, 24, 64))])
    for i in range(48):
        p = f"blocks.{i}"
        b.add(f"{p}.mod_x", lin(4 * hx, hx))
        b.add(f"{p}.mod_y", lin(4 * hy if i < 47 else hy, hx))
        b.add(f"{p}.attn.qkv_x", lin(3 * hx, hx, False))
        b.add(f"{p}.attn.qkv_y", lin(3 * hx, hy, False))
        b.add(f"{p}.attn.proj_x", lin(hx, hx))
        b.add(f"{p}.mlp_x.w1", lin(2 * 8192, hx, False))
        b.add(f"{p}.mlp_x.w2", lin(hx, 8192, False))
    b.add("final_layer.mod", lin(2 * hx, hx))
    b.add("final_layer.linear", lin(48, hx))
    return b.spec


def cosmos(predict2: bool) -> Spec:
    h = 2048 if predict2 else 4096
    b = Builder("model.diffusion_model.")
    b.add("x_embedder.proj.1", lin(h, 68, False))
    b.add("t_embedder.1.linear_1", lin(h, h, False))
    b.add("t_embedder.1.linear_2", lin(3 * h, h, False))
    n = 28
    for i in range(n):
        if predict2:
            p = f"blocks.{i}"
            for a, ctx in (("self_attn", h), ("cross_attn", 1024)):
                b.add(f"{p}.{a}.q_proj", lin(h, h, False))
                b.add(f"{p}.{a}.k_proj", lin(h, ctx, False))
                b.add(f"{p}.{a}.v_proj", lin(h, ctx, False))
                b.add(f"{p}.{a}.output_proj", lin(h, h, False))
                b.add(f"{p}.{a}.q_norm", [("weight", (128,))])
                b.add(f"{p}.{a}.k_norm", [("weight", (128,))])
            b.add(f"{p}.mlp.layer1", lin(4 * h, h, False))
            b.add(f"{p}.mlp.layer2", lin(h, 4 * h, False))
            for m in ("self_attn", "cross_attn", "mlp"):
                b.add(f"{p}.adaln_modulation_{m}.1", lin(256, h, False))
                b.add(f"{p}.adaln_modulation_{m}.2", lin(3 * h, 256, False))
        else:
            p = f"blocks.block{i}.blocks"
            for j, ctx in ((0, h), (1, 1024)):
                for n_ in ("to_q", "to_k", "to_v"):
                    b.add(f"{p}.{j}.block.attn.{n_}.0", lin(h, h if n_ == "to_q" else ctx, False))
                    b.add(f"{p}.{j}.block.attn.{n_}.1", [("weight", (128,))])
                b.add(f"{p}.{j}.block.attn.to_out.0", lin(h, h, False))
                b.add(f"{p}.{j}.adaLN_modulation.1", lin(256, h, False))
                b.add(f"{p}.{j}.adaLN_modulation.2", lin(3 * h, 256, False))
            b.add(f"{p}.2.block.layer1", lin(4 * h, h, False))
            b.add(f"{p}.2.block.layer2", lin(h, 4 * h, False))
    b.add("final_layer.linear", lin(64, h, False))
    return b.spec
