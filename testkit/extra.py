"""``extra_spec``: families and partial files beyond ``checkpoint_spec``'s SD ones, by name.

Full-size key -> shape of SDXL relatives, DiTs, video models, standalone text
encoders and VAEs, LoRAs, textual inversions and a ControlNet.
"""
from __future__ import annotations

from .blocks import Builder, Spec, conv, open_clip_spec, t5_spec, unet_spec, vae_spec, hf_clip_spec
from .image_dits import (auraflow, cascade, flux_dit, hidream, hunyuan_dit, lumina2, pixart, qwen_image, sd3,
                         sd3_dit)
from .sd import TEXT, UNET, VAE, clip_hf, vae16
from .video_dits import cosmos, hunyuan_video, ltxv, mochi, wan

def svd() -> Spec:
    cfg = dict(in_channels=8, out_channels=4, model_channels=320, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
               transformer_depth=(1, 1, 1, 0), transformer_depth_middle=1, context_dim=1024,
               use_linear_in_transformer=True, adm_in_channels=768)
    spec = unet_spec("model.diffusion_model.", cfg)
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


def sdxl_like(**overrides) -> Spec:
    cfg = {**UNET["sdxl"], **overrides}
    spec = unet_spec("model.diffusion_model.", cfg)
    spec.update(hf_clip_spec("conditioner.embedders.0.transformer.text_model.", TEXT["clip_l"]))
    spec.update(open_clip_spec("conditioner.embedders.1.model.", TEXT["clip_g"]))
    spec.update(vae_spec("first_stage_model.", VAE))
    return spec


def lora_kohya_sdxl(rank: int = 16) -> Spec:
    return lora_kohya("sdxl", rank)


def lora_kohya(family: str = "sdxl", rank: int = 16) -> Spec:
    """A kohya sd-scripts LoRA of an SD1 or SDXL model: the UNet's attention projections and the
    CLIP-L text encoder's (``lora_te_`` for SD1, ``lora_te1_`` for SDXL's first encoder)."""
    unet = unet_spec("", UNET[family])
    spec: Spec = {}
    for k, s in unet.items():
        if len(s) in (2, 4) and any(a in k for a in ("attn1", "attn2")) and k.endswith(".weight"):
            name = "lora_unet_" + k[:-len(".weight")].replace(".", "_")
            spec[name + ".lora_down.weight"] = (rank, s[1])
            spec[name + ".lora_up.weight"] = (s[0], rank)
            spec[name + ".alpha"] = ()
    te = "lora_te1_" if family == "sdxl" else "lora_te_"
    for i in range(12):
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            n = f"{te}text_model_encoder_layers_{i}_self_attn_{p}"
            spec[n + ".lora_down.weight"] = (rank, 768)
            spec[n + ".lora_up.weight"] = (768, rank)
    return spec


def lycoris_sd1(rank: int = 8) -> Spec:
    unet = unet_spec("", UNET["sd1"])
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


def controlnet_sd1() -> Spec:
    cfg = dict(UNET["sd1"])
    unet = unet_spec("control_model.", cfg)
    spec = {k: s for k, s in unet.items() if not k.startswith("control_model.output_blocks") and
            not k.startswith("control_model.out.")}
    b = Builder("control_model.")
    for i, (o, c) in enumerate(((16, 3), (16, 16), (32, 16), (32, 32), (96, 32), (96, 96), (256, 96))):
        b.add(f"input_hint_block.{2 * i}", conv(o, c, 3))
    b.add("input_hint_block.14", conv(320, 256, 3))
    for i, c in enumerate((320, 320, 320, 320, 640, 640, 640, 1280, 1280, 1280, 1280, 1280)):
        b.add(f"zero_convs.{i}.0", conv(c, c, 1))
    b.add("middle_block_out.0", conv(1280, 1280, 1))
    spec.update(b.spec)
    return spec


EXTRA_BUILDERS = {
    # denoiser checkpoints
    "ssd1b": lambda: sdxl_like(transformer_depth=(0, 2, 4), transformer_depth_middle=0),
    "segmind_vega": lambda: sdxl_like(transformer_depth=(0, 1, 2), transformer_depth_middle=0),
    "koala_700m": lambda: sdxl_like(num_res_blocks=1, transformer_depth=(0, 2, 5), transformer_depth_middle=0),
    "koala_1b": lambda: sdxl_like(num_res_blocks=1, transformer_depth=(0, 2, 6), transformer_depth_middle=6),
    "kolors": lambda: unet_spec("", {**UNET["sdxl"], "adm_in_channels": 5632}),
    "playground_v2.5": lambda: {**sdxl_like(), "edm_mean": (1, 4, 1, 1), "edm_std": (1, 4, 1, 1)},
    "sdxl_vpred": lambda: {**sdxl_like(), "v_pred": (), "ztsnr": ()},
    "sd3_medium": lambda: sd3(24),
    "sd3.5_medium": lambda: sd3_dit("model.diffusion_model.", 24, qk_norm=True, attn2_layers=13),
    "sd3.5_large": lambda: sd3_dit("", 38, qk_norm=True),
    "flux_dev": lambda: {**flux_dit("model.diffusion_model."),
                         **clip_hf("text_encoders.clip_l.transformer.", "clip_l"),
                         **t5_spec("text_encoders.t5xxl.transformer."), **vae16("vae.")},
    "flux_schnell": lambda: flux_dit("", guidance=False),
    "flux_fill": lambda: flux_dit("model.diffusion_model.", in_ch=384),
    "flux2": lambda: flux_dit("", h=6144, double=8, single=48, in_ch=128, flux2=True),
    "chroma": lambda: flux_dit("", chroma=True),
    "auraflow": auraflow,
    "hunyuan_dit": hunyuan_dit,
    "pixart_alpha": lambda: pixart(False),
    "pixart_sigma": lambda: pixart(True),
    "stable_cascade_c": lambda: cascade("c"),
    "stable_cascade_b": lambda: cascade("b"),
    "lumina2": lumina2,
    "hidream": hidream,
    "qwen_image": qwen_image,
    "wan_t2v_14b": wan,
    "wan_t2v_1.3b": lambda: wan(1536, 30, 8960),
    "wan_i2v_14b": lambda: wan(in_dim=36, i2v=True),
    "wan_vace_14b": lambda: wan(vace=True),
    "wan2.2_ti2v_5b": lambda: wan(3072, 30, 14336, in_dim=48, out_dim=48),
    "ltxv": ltxv,
    "hunyuan_video": hunyuan_video,
    "mochi": mochi,
    "cosmos_predict1": lambda: cosmos(False),
    "cosmos_predict2": lambda: cosmos(True),
    "svd": svd,
    # partial files
    "te_clip_l": lambda: clip_hf("", "clip_l"),
    "te_clip_g": lambda: clip_hf("", "clip_g", projection=True),
    "te_clip_h": lambda: open_clip_spec("", TEXT["clip_h"]),
    "te_t5xxl": lambda: t5_spec(""),
    "te_umt5": lambda: t5_spec("", umt5=True, vocab=256384),
    "vae_sd": lambda: vae_spec("", VAE),
    "vae_flux": lambda: vae16(""),
    "vae_flux2": lambda: vae16("", z=32),
    "lora_sdxl": lora_kohya_sdxl,
    "lora_sd1": lambda: lora_kohya("sd1"),
    "lycoris_sd1": lycoris_sd1,
    "ti_sd1": lambda: {"emb_params": (4, 768)},
    "ti_sdxl": lambda: {"clip_l": (2, 768), "clip_g": (2, 1280)},
    "controlnet_sd1": controlnet_sd1,
}

#: names accepted by extra_spec()
EXTRA_SPECS = tuple(EXTRA_BUILDERS)


def extra_spec(name: str) -> Spec:
    """Full-size key -> shape of a family or partial file beyond checkpoint_spec's SD ones."""
    if name not in EXTRA_BUILDERS:
        raise ValueError(f"unknown spec {name!r}; known: {EXTRA_SPECS}")
    return dict(EXTRA_BUILDERS[name]())
