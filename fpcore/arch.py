"""Architecture detection from the header alone: an ordered table of rules.

A rule lists canonical keys that must be present (``require``), keys that must be
absent (``forbid``), regular expressions that some key must match (``match``) or no
key may match (``forbid_match``), shape checks ``(key, dim, value)`` where ``dim`` is
an index or ``"ndim"`` (``key`` may be a regex in ``shapes_match``: the first matching
key in sorted order is checked) and metadata checks ``(metadata key, regex)``. The
first rule that matches wins; every result carries the rule that matched and, for
``--why``, the reason each earlier rule was rejected.

Rules check what does not scale with the model width where possible: key presence
(block counts, optional modules), input channels, context and ADM sizes, layouts.
So reduced-width test models are detected like the real ones.

Rules come in three groups, tried in order:
1. file kinds that are not checkpoints (LoRA / LyCORIS, embeddings, ControlNets);
   LoRA-like kinds then look up the family they target in ``TARGETS``;
2. denoisers (DiT families first, then the LDM UNet families);
3. partial files without a denoiser: VAEs (with their latent family) and text encoders.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from . import layout
from .facts import dominant_dtype  # noqa: F401 - kept importable from here

U = "unet:"
D = "dit:"
LABEL = U + "label_emb.0.0.weight"
IN0 = U + "input_blocks.0.0.weight"
PROJ_IN = U + "input_blocks.1.1.proj_in.weight"
MMDIT = D + "joint_blocks.0.context_block.attn.qkv.weight"
FLUX_KNORM = r"^dit:double_blocks\.0\.img_attn\.norm\.key_norm\.(scale|weight)$"
FLUX_IMG_IN = D + "img_in.weight"
XL_T = U + "input_blocks.7.1.transformer_blocks.{}.attn1.to_q.weight"   # SDXL level-3 transformer depth
PIXART_Y = D + "y_embedder.y_embedding"
WAN = D + "head.modulation"
LORA_RX = r"\.(lora_down|lora_up|lora_A|lora_B|lora\.down|lora\.up)\.weight$"
LYCO_RX = r"\.(hada_w1_a|hada_w2_a|lokr_w1|lokr_w1_a|lokr_w2|lokr_w2_a|oft_diag|oft_blocks)$"
ATTN2_K_RX = r"attn2\.to_k\.weight$"


@dataclass(frozen=True)
class Rule:
    id: str
    family: str
    variant: str | None = None
    require: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    shapes: tuple[tuple[str, int | str, int], ...] = ()
    prediction: str | None = None
    note: str | None = None
    kind: str = "checkpoint"
    match: tuple[str, ...] = ()                                   # each regex must match some key
    forbid_match: tuple[str, ...] = ()                            # no key may match these
    shapes_match: tuple[tuple[str, int | str, int], ...] = ()     # (regex, dim, value) on the first match
    meta: tuple[tuple[str, str], ...] = ()                        # (metadata key, regex on its value)
    latent: str | None = None                                     # VAEs: the latent space they encode to


def R(id_: str, family: str, **kw) -> Rule:
    return Rule(id_, family, **kw)


def _flux(id_, variant, forbid=(), **kw):
    return R(id_, "flux", variant=variant, match=(FLUX_KNORM,), prediction="flow",
             forbid=(D + "double_stream_modulation_img.lin.weight",) + tuple(forbid),
             forbid_match=(r"^dit:distilled_guidance_layer\.",), **kw)


NOT_CHECKPOINT_RULES: list[Rule] = [
    # ===== 1. files that are not checkpoints ==========================================
    R("lycoris", "unknown", kind="lycoris", match=(LYCO_RX,)),
    R("lora", "unknown", kind="lora", match=(LORA_RX,)),
    R("ti_sdxl", "sdxl", kind="textual_inversion", require=("other:clip_l", "other:clip_g"),
      forbid_match=(r"^(unet|dit|vae):",)),
    R("ti_sd2", "sd2", kind="textual_inversion", match=(r"^other:(emb_params|string_to_param\..*)$",),
      shapes_match=((r"^other:(emb_params|string_to_param\..*)$", -1, 1024),)),
    R("ti_sd1", "sd1", kind="textual_inversion", match=(r"^other:(emb_params|string_to_param\..*)$",),
      shapes_match=((r"^other:(emb_params|string_to_param\..*)$", -1, 768),)),
    R("ti", "unknown", kind="textual_inversion", match=(r"^other:(emb_params|string_to_param\..*)$",),
      forbid_match=(r"^(unet|dit|vae):",)),
    R("controlnet_sdxl", "sdxl", kind="controlnet", match=(r"(^|[:.])(input_hint_block|controlnet_cond_embedding)\.",),
      shapes_match=((ATTN2_K_RX, 1, 2048),)),
    R("controlnet_sd2", "sd2", kind="controlnet", match=(r"(^|[:.])(input_hint_block|controlnet_cond_embedding)\.",),
      shapes_match=((ATTN2_K_RX, 1, 1024),)),
    R("controlnet_sd1", "sd1", kind="controlnet", match=(r"(^|[:.])(input_hint_block|controlnet_cond_embedding)\.",),
      shapes_match=((ATTN2_K_RX, 1, 768),)),
    R("controlnet", "unknown", kind="controlnet", match=(r"(^|[:.])(input_hint_block|controlnet_cond_embedding)\.",)),

]
DIT_RULES: list[Rule] = [
    # ===== 2a. DiT denoisers ============================================================
    # SD3 / 3.5 (MMDiT): depth is told by block count, 3.5 medium by its extra x_block attention
    R("sd3.5_large", "sd3", variant="sd3.5_large", require=(MMDIT, D + "joint_blocks.37.x_block.attn.qkv.weight"),
      prediction="flow"),
    R("sd3.5_medium", "sd3", variant="sd3.5_medium", require=(MMDIT, D + "joint_blocks.0.x_block.attn2.qkv.weight"),
      prediction="flow"),
    R("sd3_medium", "sd3", variant="sd3_medium", require=(MMDIT,), prediction="flow"),
    R("stable_cascade_c", "stable_cascade_c", require=(D + "clf.1.weight", D + "clip_txt_mapper.weight")),
    R("stable_cascade_b", "stable_cascade_b", require=(D + "clf.1.weight", D + "clip_mapper.weight")),
    R("auraflow", "auraflow", require=(D + "double_layers.0.attn.w1q.weight",), prediction="flow"),
    R("hunyuan_dit", "hunyuan_dit", require=(D + "mlp_t5.0.weight",)),
    R("hunyuan_video", "hunyuan_video", require=(D + "txt_in.individual_token_refiner.blocks.0.norm1.weight",),
      prediction="flow"),
    R("flux2", "flux2", match=(FLUX_KNORM,), require=(D + "double_stream_modulation_img.lin.weight",), prediction="flow"),
    R("chroma", "chroma", match=(FLUX_KNORM, r"^dit:distilled_guidance_layer\.(0\.)?norms\.0\.(scale|weight)$"),
      prediction="flow"),
    _flux("flux_fill", "fill", require=(FLUX_IMG_IN,), shapes=((FLUX_IMG_IN, 1, 384),)),
    _flux("flux_dev", "dev", require=(FLUX_IMG_IN, D + "guidance_in.in_layer.weight"), shapes=((FLUX_IMG_IN, 1, 64),),
          note="Flux dev and Kontext share every shape"),
    _flux("flux_schnell", "schnell", require=(FLUX_IMG_IN,), forbid=(D + "guidance_in.in_layer.weight",),
          shapes=((FLUX_IMG_IN, 1, 64),)),
    _flux("flux", None, require=(FLUX_IMG_IN,), note="Flux with unusual input channels (depth/canny/other)"),
    R("mochi", "mochi", require=(D + "t5_yproj.weight",)),
    R("pixart_alpha", "pixart_alpha", require=(D + "t_block.1.weight",), shapes=((PIXART_Y, 0, 120),)),
    R("pixart_alpha_ar", "pixart_alpha", require=(D + "t_block.1.weight", D + "ar_embedder.mlp.0.weight")),
    R("pixart_sigma", "pixart_sigma", require=(D + "t_block.1.weight",)),
    R("ltxv", "ltxv", require=(D + "adaln_single.emb.timestep_embedder.linear_1.bias",),
      forbid=(D + "pos_embed.proj.bias",), prediction="flow"),
    R("cosmos_predict1", "cosmos", variant="predict1", require=(D + "blocks.block0.blocks.0.block.attn.to_q.0.weight",)),
    R("cosmos_predict2", "cosmos", variant="predict2", require=(D + "blocks.0.mlp.layer1.weight",
                                                               D + "x_embedder.proj.1.weight")),
    R("lumina2", "lumina2", require=(D + "cap_embedder.1.weight", D + "noise_refiner.0.attention.k_norm.weight"),
      prediction="flow"),
    R("wan_vace", "wan", variant="vace", require=(WAN, D + "vace_patch_embedding.weight"), prediction="flow"),
    R("wan_i2v", "wan", variant="i2v", require=(WAN, D + "img_emb.proj.0.bias"), prediction="flow"),
    R("wan_ti2v", "wan", variant="wan2.2_ti2v_5b", require=(WAN, D + "patch_embedding.weight"),
      shapes=((D + "patch_embedding.weight", 1, 48),), prediction="flow"),
    R("wan_t2v", "wan", variant="t2v", require=(WAN,), prediction="flow"),
    R("hidream", "hidream", require=(D + "caption_projection.0.linear.weight",), prediction="flow"),
    R("qwen_image", "qwen_image", require=(D + "txt_norm.weight", D + "img_in.weight"), prediction="flow"),

]
UNET_RULES: list[Rule] = [
    # ===== 2b. LDM UNets ================================================================
    R("svd", "svd", require=(IN0, U + "input_blocks.1.1.time_stack.0.attn1.to_q.weight"), shapes=((IN0, 1, 8),),
      prediction="v"),
    R("kolors", "kolors", require=(LABEL, IN0), shapes=((LABEL, 1, 5632),), prediction="eps"),
    # SDXL (ADM label embedding; 2816 = pooled bigG 1280 + 6 x 256 size embeddings) and its
    # distilled relatives, told apart by how many transformer blocks each level keeps
    R("playground_v2.5", "sdxl", variant="playground_v2.5", require=(LABEL, IN0, "other:edm_mean"),
      shapes=((LABEL, 1, 2816),), prediction="edm"),
    R("koala_1b", "koala", variant="koala_1b", require=(LABEL, U + "input_blocks.5.1.transformer_blocks.5.attn1.to_q.weight"),
      forbid=(U + "input_blocks.8.0.in_layers.0.weight",), shapes=((LABEL, 1, 2816),), prediction="eps"),
    R("koala_700m", "koala", variant="koala_700m", require=(LABEL, U + "input_blocks.5.1.proj_in.weight"),
      forbid=(U + "input_blocks.8.0.in_layers.0.weight",), shapes=((LABEL, 1, 2816),), prediction="eps"),
    R("segmind_vega", "segmind_vega", require=(LABEL, XL_T.format(1)), forbid=(XL_T.format(2),),
      shapes=((LABEL, 1, 2816),), prediction="eps"),
    R("ssd1b", "ssd1b", require=(LABEL, XL_T.format(3)), forbid=(XL_T.format(4),),
      shapes=((LABEL, 1, 2816),), prediction="eps"),
    R("sdxl_refiner", "sdxl_refiner", require=(LABEL,), shapes=((LABEL, 1, 2560),), prediction="eps"),
    R("sdxl_inpaint", "sdxl_inpaint", require=(LABEL, IN0), shapes=((LABEL, 1, 2816), (IN0, 1, 9)), prediction="eps"),
    R("sdxl", "sdxl", require=(LABEL, IN0), shapes=((LABEL, 1, 2816), (IN0, 1, 4)), prediction="eps"),
    # SD2 (linear proj_in) and SD1 (1x1 conv proj_in); context width is not checked,
    # so that reduced-width test models are detected like the real ones
    R("sd2_unclip", "sd2_unclip", require=(PROJ_IN, LABEL, IN0), shapes=((PROJ_IN, "ndim", 2),)),
    R("sd2_inpaint", "sd2_inpaint", require=(PROJ_IN, IN0), forbid=(LABEL,),
      shapes=((PROJ_IN, "ndim", 2), (IN0, 1, 9)), prediction="eps"),
    R("sd2_depth", "sd2_depth", require=(PROJ_IN, IN0), forbid=(LABEL,),
      shapes=((PROJ_IN, "ndim", 2), (IN0, 1, 5)), prediction="eps"),
    R("sd2", "sd2", require=(PROJ_IN, IN0), forbid=(LABEL,), shapes=((PROJ_IN, "ndim", 2), (IN0, 1, 4)),
      note="SD2 512 (eps) and 768 (v-prediction) share every shape: told apart only by metadata or the published hash"),
    R("sd1_inpaint", "sd1_inpaint", require=(PROJ_IN, IN0), forbid=(LABEL,),
      shapes=((PROJ_IN, "ndim", 4), (IN0, 1, 9)), prediction="eps"),
    R("sd1_pix2pix", "sd1_pix2pix", require=(PROJ_IN, IN0), forbid=(LABEL,),
      shapes=((PROJ_IN, "ndim", 4), (IN0, 1, 8)), prediction="eps"),
    R("sd1", "sd1", require=(PROJ_IN, IN0), forbid=(LABEL,), shapes=((PROJ_IN, "ndim", 4), (IN0, 1, 4)),
      prediction="eps"),

]
PARTIAL_RULES: list[Rule] = [
    # ===== 3. partial files without a denoiser ==========================================
    # VAEs: the latent space they encode to (decoder input channels)
    R("vae_wan2.2", "wan", kind="vae", latent="wan2.2 (48 ch, 3D)", require=("vae:decoder.conv1.weight",),
      shapes=(("vae:decoder.conv1.weight", "ndim", 5), ("vae:decoder.conv1.weight", 1, 48)), forbid_match=(r"^(unet|dit):",)),
    R("vae_wan", "wan", kind="vae", latent="wan2.1 (16 ch, 3D)", require=("vae:decoder.conv1.weight",),
      shapes=(("vae:decoder.conv1.weight", "ndim", 5), ("vae:decoder.conv1.weight", 1, 16)), forbid_match=(r"^(unet|dit):",)),
    R("vae_ltxv", "ltxv", kind="vae", latent="ltxv (128 ch, 3D)", require=("vae:decoder.conv_in.conv.weight",),
      shapes=(("vae:decoder.conv_in.conv.weight", 1, 128),), forbid_match=(r"^(unet|dit):",)),
    R("vae_hunyuan_video", "hunyuan_video", kind="vae", latent="hunyuan_video (16 ch, 3D)",
      require=("vae:decoder.conv_in.conv.weight",), shapes=(("vae:decoder.conv_in.conv.weight", 1, 16),),
      forbid_match=(r"^(unet|dit):",)),
    R("vae_flux2", "flux2", kind="vae", latent="flux2 (32 ch)", require=("vae:decoder.conv_in.weight",),
      shapes=(("vae:decoder.conv_in.weight", 1, 32),), forbid_match=(r"^(unet|dit):",)),
    R("vae_16ch", "unknown", kind="vae", latent="sd3/flux (16 ch)", require=("vae:decoder.conv_in.weight",),
      shapes=(("vae:decoder.conv_in.weight", 1, 16),), forbid_match=(r"^(unet|dit):",),
      note="SD3 and Flux VAEs share every shape (16-channel latent)"),
    R("vae_4ch", "unknown", kind="vae", latent="sd (4 ch, SD1/SD2/SDXL)", require=("vae:decoder.conv_in.weight",),
      shapes=(("vae:decoder.conv_in.weight", 1, 4),), forbid_match=(r"^(unet|dit):",),
      note="SD1, SD2 and SDXL VAEs share every shape (4-channel KL-f8 latent)"),
    # text encoders: told apart by layer count (key presence), not width
    R("te_umt5", "unknown", variant="umt5_xxl", kind="text_encoder",
      require=("t5:encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight",), forbid_match=(r"^(unet|dit):",)),
    R("te_t5xxl", "unknown", variant="t5xxl", kind="text_encoder",
      require=("t5:encoder.block.23.layer.0.SelfAttention.q.weight",), forbid_match=(r"^(unet|dit):",)),
    R("te_t5", "unknown", variant="t5", kind="text_encoder",
      require=("t5:encoder.block.0.layer.0.SelfAttention.q.weight",), forbid_match=(r"^(unet|dit):",)),
    R("te_clip_g", "unknown", variant="clip_g", kind="text_encoder",
      match=(r"^(clip_l|clip_g):text_model\.encoder\.layers\.31\.|^(clip_g|other):transformer\.resblocks\.31\.",),
      forbid_match=(r"^(unet|dit):",)),
    R("te_clip_h", "unknown", variant="clip_h", kind="text_encoder",
      match=(r"^(clip_h|other):transformer\.resblocks\.23\.",), forbid_match=(r"^(unet|dit):", r"resblocks\.24\.")),
    R("te_clip_l", "unknown", variant="clip_l", kind="text_encoder",
      match=(r"^clip_l:text_model\.encoder\.layers\.11\.",), forbid_match=(r"^(unet|dit):", r"layers\.12\.")),
]
RULES: list[Rule] = NOT_CHECKPOINT_RULES + DIT_RULES + UNET_RULES + PARTIAL_RULES

#: the components each rule says a file may hold. A file is split into components only
#: where the matched rule declares them: bare-key guesses (layout.BARE) never make a
#: component on their own (a BERT's ``pooler.*`` is not a DiT), and a file no rule knows is
#: one component, layout.WHOLE, holding every tensor. Rules for files that are not
#: checkpoints (LoRA, embeddings, ControlNets) declare none: nothing in them is compared.
UNET_PARTS = ("unet", "clip_l", "clip_g", "clip_h", "vae")
DIT_PARTS = ("dit", "clip_l", "clip_g", "clip_h", "t5", "vae")
#: partial files: by kind (VAEs) or by the text encoder variant
PARTIAL_PARTS = {"vae": ("vae",), "umt5_xxl": ("t5",), "t5xxl": ("t5",), "t5": ("t5",),
                 "clip_g": ("clip_l", "clip_g"), "clip_h": ("clip_h",), "clip_l": ("clip_l",)}
PARTS: dict[str, tuple[str, ...]] = {
    **{r.id: () for r in NOT_CHECKPOINT_RULES},
    **{r.id: DIT_PARTS for r in DIT_RULES},
    **{r.id: UNET_PARTS for r in UNET_RULES},
    **{r.id: PARTIAL_PARTS[r.kind if r.kind == "vae" else r.variant] for r in PARTIAL_RULES},
}


def declared_components(rule_id: str | None) -> tuple[str, ...] | None:
    """Components the rule ``rule_id`` declares; None when no rule matched (unknown)."""
    return None if rule_id is None else PARTS.get(rule_id, ())


def components_for(rule_id: str | None, canonical_keys, containers=None) -> list[str]:
    """The components a file is compared by: those present that its rule declares; for a file no
    rule knows, those its containers hold (``containers``: component -> container, see
    layout.describe_unknown), else [layout.WHOLE] (every tensor in one component)."""
    parts = declared_components(rule_id)
    if parts is None and containers:
        return [c for c in layout.components_of(canonical_keys) if c in containers]
    if parts is None:
        return [layout.WHOLE] if any(layout.in_component(k, layout.WHOLE) for k in canonical_keys) else []
    return [c for c in layout.components_of(canonical_keys) if c in parts]

#: family a LoRA / LyCORIS targets: metadata first, then key names and context shapes
TARGETS: list[Rule] = [
    R("meta_sdxl", "sdxl", meta=(("ss_base_model_version", r"^sdxl"),)),
    R("meta_sd2", "sd2", meta=(("ss_base_model_version", r"^sd_v2"),)),
    R("meta_sd1", "sd1", meta=(("ss_base_model_version", r"^sd_v1"),)),
    R("meta_flux", "flux", meta=(("ss_base_model_version", r"^flux"),)),
    R("meta_sd3", "sd3", meta=(("ss_base_model_version", r"^sd3"),)),
    R("modelspec_sdxl", "sdxl", meta=(("modelspec.architecture", r"^stable-diffusion-xl-v1-base"),)),
    R("modelspec_sd2", "sd2", meta=(("modelspec.architecture", r"^stable-diffusion-v2"),)),
    R("modelspec_sd1", "sd1", meta=(("modelspec.architecture", r"^stable-diffusion-v1"),)),
    R("modelspec_sd3", "sd3", meta=(("modelspec.architecture", r"^stable-diffusion-v3"),)),
    R("modelspec_flux", "flux", meta=(("modelspec.architecture", r"^flux-1"),)),
    R("keys_flux", "flux", match=(r"double_blocks[._]\d+[._]img_attn|single_transformer_blocks",)),
    R("keys_sd3", "sd3", match=(r"joint_blocks[._]\d+|transformer_blocks\.\d+\.attn\.add_k_proj",)),
    R("keys_wan", "wan", match=(r"blocks[._]\d+[._]cross_attn[._]k",)),
    R("keys_sdxl_te", "sdxl", match=(r"^other:lora_te[12]_",)),
    R("ctx_sdxl", "sdxl", shapes_match=((r"attn2[._]to_k\.(lora_down\.weight|lora_A\.weight|hada_w1_b|hada_w2_b)$", 1, 2048),)),
    R("ctx_sd2", "sd2", shapes_match=((r"attn2[._]to_k\.(lora_down\.weight|lora_A\.weight|hada_w1_b|hada_w2_b)$", 1, 1024),)),
    R("ctx_sd1", "sd1", shapes_match=((r"attn2[._]to_k\.(lora_down\.weight|lora_A\.weight|hada_w1_b|hada_w2_b)$", 1, 768),)),
]

#: metadata and marker keys that state the prediction type
PREDICTION_KEYS = {"v_pred": "v", "edm_mean": "edm", "edm_std": "edm"}
MODELSPEC_PREDICTION = {"epsilon": "eps", "eps": "eps", "v": "v", "v_prediction": "v", "edm": "edm",
                        "flow": "flow", "rectified_flow": "flow"}


@dataclass
class ArchResult:
    family: str
    variant: str | None
    rule: str | None
    components: list[str]
    dtype: str | None
    prediction: str | None
    kind: str = "checkpoint"
    notes: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    latent: str | None = None
    layout: dict | None = None      # a file no rule knows: layout.describe_unknown() but its components

    @property
    def containers(self) -> dict | None:
        return (self.layout or {}).get("containers")

    @classmethod
    def from_json(cls, d: dict) -> "ArchResult":
        """The result again from its to_json() (as the store keeps it)."""
        return cls(**{k: d.get(k) for k in ("family", "variant", "rule", "components", "dtype", "prediction",
                                             "kind", "layout")}, notes=d.get("notes") or [])

    def to_json(self) -> dict:
        out = {"family": self.family, "variant": self.variant, "kind": self.kind, "components": self.components,
               "dtype": self.dtype, "prediction": self.prediction, "rule": self.rule, "notes": self.notes}
        if self.latent:
            out["latent"] = self.latent
        if self.layout:
            out.update(layout_name=self.layout["name"], layout=self.layout)
        return out


def outdated(arch_json: dict | None) -> bool:
    """Whether a stored result predates the layout of unknown files (their components then came
    from no container): such a file is read again."""
    if not arch_json or arch_json.get("rule") is not None or arch_json.get("kind", "checkpoint") != "checkpoint":
        return False
    return "layout" not in arch_json


_RX: dict[str, re.Pattern] = {}


def _rx(p: str) -> re.Pattern:
    r = _RX.get(p)
    if r is None:
        r = _RX[p] = re.compile(p)
    return r


def _dim(shp: tuple[int, ...], dim) -> int | None:
    if dim == "ndim":
        return len(shp)
    return shp[dim] if isinstance(dim, int) and -len(shp) <= dim < len(shp) else None


class _Keys:
    """Canonical key -> shape, with cached regex lookups (first match in sorted order)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        self.shapes = shapes
        self.sorted = sorted(shapes)
        self._first: dict[str, str | None] = {}

    def first(self, pattern: str) -> str | None:
        if pattern not in self._first:
            rx = _rx(pattern)
            self._first[pattern] = next((k for k in self.sorted if rx.search(k)), None)
        return self._first[pattern]


def _check(rule: Rule, keys: _Keys, metadata: dict[str, str]) -> str | None:
    """None if the rule matches, else why not."""
    shapes = keys.shapes
    for k in rule.require:
        if k not in shapes:
            return f"missing {k}"
    for k in rule.forbid:
        if k in shapes:
            return f"has {k}"
    for p in rule.match:
        if keys.first(p) is None:
            return f"no key matches /{p}/"
    for p in rule.forbid_match:
        k = keys.first(p)
        if k is not None:
            return f"has {k}"
    for k, dim, want in rule.shapes:
        shp = shapes.get(k)
        if shp is None:
            return f"missing {k}"
        got = _dim(shp, dim)
        if got != want:
            return f"{k} {'ndim' if dim == 'ndim' else f'dim {dim}'} is {got}, not {want}"
    for p, dim, want in rule.shapes_match:
        k = keys.first(p)
        if k is None:
            return f"no key matches /{p}/"
        got = _dim(shapes[k], dim)
        if got != want:
            return f"{k} {'ndim' if dim == 'ndim' else f'dim {dim}'} is {got}, not {want}"
    for mk, p in rule.meta:
        v = metadata.get(mk)
        if v is None:
            return f"no metadata {mk}"
        if not _rx(p).search(v):
            return f"metadata {mk}={v[:40]!r} does not match /{p}/"
    return None


def _first_match(table: list[Rule], keys: _Keys, metadata: dict[str, str]):
    rejected: list[tuple[str, str]] = []
    for rule in table:
        why = _check(rule, keys, metadata)
        if why is None:
            return rule, rejected
        rejected.append((rule.id, why))
    return None, rejected


def detect(shapes: dict[str, tuple[int, ...]], dtypes_: dict[str, str] | None = None,
           metadata: dict[str, str] | None = None, where: dict[str, str | None] | None = None) -> ArchResult:
    """Detect the architecture from canonical key -> shape (and dtypes, metadata, and the
    container each key's file name sits under: layout.container_of)."""
    metadata = metadata or {}
    keys = _Keys(shapes)
    match, rejected = _first_match(RULES, keys, metadata)
    notes: list[str] = []
    latent = None
    if match is None:
        family, variant, prediction, kind = "unknown", None, None, "checkpoint"
    else:
        family, variant, prediction, kind, latent = match.family, match.variant, match.prediction, match.kind, match.latent
        if match.note:
            notes.append(match.note)
    if kind in ("lora", "lycoris"):
        target, _ = _first_match(TARGETS, keys, metadata)
        if target is not None:
            family = target.family
            notes.append(f"targets {family} (rule {target.id})")
        else:
            notes.append("target family not told by metadata or shapes")
    # prediction type from marker keys and metadata
    for k, pred in PREDICTION_KEYS.items():
        if f"other:{k}" in shapes:
            prediction = pred
    ms = metadata.get("modelspec.prediction_type")
    if ms and ms.lower() in MODELSPEC_PREDICTION:
        prediction = MODELSPEC_PREDICTION[ms.lower()]
    if "other:ztsnr" in shapes:
        notes.append("ztsnr marker key: trained with zero terminal SNR")
    unknown = layout.describe_unknown(shapes, dtypes_, where) if match is None else None
    comps = components_for(match.id if match else None, shapes, unknown and unknown["containers"])
    if kind == "checkpoint" and comps and match is not None:
        if not any(c in layout.DENOISERS for c in comps):
            kind = {"vae": "vae"}.get(comps[0], "text_encoder")
        elif all(c in layout.DENOISERS for c in comps):
            kind = "unet_only" if comps == ["unet"] else "dit_only"
    dt = None
    if dtypes_:
        # by bytes, not tensor count (a scaled fp8 file keeps its biases and norms in fp16), over
        # the denoiser, else over the components compared
        from . import dtypes as _dtypes
        keys = [k for k in dtypes_ if layout.split(k)[0] in layout.DENOISERS and layout.split(k)[0] in comps] or \
            [k for k in dtypes_ if any(layout.in_component(k, c) for c in comps)] or list(dtypes_)
        scaled = any(dtypes_.get(k[:-len("scale_weight")] + "weight", "").startswith("F8_")
                     for k in dtypes_ if k.endswith(".scale_weight"))
        dt = _dtypes.storage_label(((dtypes_[k], math.prod(shapes.get(k, ()))) for k in keys), scaled)
    if unknown:
        unknown.pop("components")
    return ArchResult(family, variant, match.id if match else None, comps, dt, prediction, kind, notes, rejected,
                      latent, unknown)
