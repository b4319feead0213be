"""Every family, variant and partial-file kind of the rule table, from full-size sparse headers."""
from __future__ import annotations

import pytest

import testkit
from fpcore import arch
from fpcore.identify import inspect

# spec name -> (family, variant, kind, prediction); None = not checked
CASES = {
    "ssd1b": ("ssd1b", None, "checkpoint", "eps"),
    "segmind_vega": ("segmind_vega", None, "checkpoint", "eps"),
    "koala_700m": ("koala", "koala_700m", "checkpoint", "eps"),
    "koala_1b": ("koala", "koala_1b", "checkpoint", "eps"),
    "kolors": ("kolors", None, "unet_only", "eps"),
    "playground_v2.5": ("sdxl", "playground_v2.5", "checkpoint", "edm"),
    "sdxl_vpred": ("sdxl", None, "checkpoint", "v"),
    "sd3_medium": ("sd3", "sd3_medium", "checkpoint", "flow"),
    "sd3.5_medium": ("sd3", "sd3.5_medium", "dit_only", "flow"),
    "sd3.5_large": ("sd3", "sd3.5_large", "dit_only", "flow"),
    "flux_dev": ("flux", "dev", "checkpoint", "flow"),
    "flux_schnell": ("flux", "schnell", "dit_only", "flow"),
    "flux_fill": ("flux", "fill", "dit_only", "flow"),
    "flux2": ("flux2", None, "dit_only", "flow"),
    "chroma": ("chroma", None, "dit_only", "flow"),
    "auraflow": ("auraflow", None, "dit_only", "flow"),
    "hunyuan_dit": ("hunyuan_dit", None, "dit_only", None),
    "pixart_alpha": ("pixart_alpha", None, "dit_only", None),
    "pixart_sigma": ("pixart_sigma", None, "dit_only", None),
    "stable_cascade_c": ("stable_cascade_c", None, "dit_only", None),
    "stable_cascade_b": ("stable_cascade_b", None, "dit_only", None),
    "lumina2": ("lumina2", None, "dit_only", "flow"),
    "hidream": ("hidream", None, "dit_only", "flow"),
    "qwen_image": ("qwen_image", None, "dit_only", "flow"),
    "wan_t2v_14b": ("wan", "t2v", "dit_only", "flow"),
    "wan_t2v_1.3b": ("wan", "t2v", "dit_only", "flow"),
    "wan_i2v_14b": ("wan", "i2v", "dit_only", "flow"),
    "wan_vace_14b": ("wan", "vace", "dit_only", "flow"),
    "wan2.2_ti2v_5b": ("wan", "wan2.2_ti2v_5b", "dit_only", "flow"),
    "ltxv": ("ltxv", None, "dit_only", "flow"),
    "hunyuan_video": ("hunyuan_video", None, "dit_only", "flow"),
    "mochi": ("mochi", None, "dit_only", None),
    "cosmos_predict1": ("cosmos", "predict1", "dit_only", None),
    "cosmos_predict2": ("cosmos", "predict2", "dit_only", None),
    "svd": ("svd", None, "unet_only", "v"),
    # partial files
    "te_clip_l": ("unknown", "clip_l", "text_encoder", None),
    "te_clip_g": ("unknown", "clip_g", "text_encoder", None),
    "te_clip_h": ("unknown", "clip_h", "text_encoder", None),
    "te_t5xxl": ("unknown", "t5xxl", "text_encoder", None),
    "te_umt5": ("unknown", "umt5_xxl", "text_encoder", None),
    "vae_sd": ("unknown", None, "vae", None),
    "vae_flux": ("unknown", None, "vae", None),
    "vae_flux2": ("flux2", None, "vae", None),
    "lora_sdxl": ("sdxl", None, "lora", None),
    "lycoris_sd1": ("sd1", None, "lycoris", None),
    "ti_sd1": ("sd1", None, "textual_inversion", None),
    "ti_sdxl": ("sdxl", None, "textual_inversion", None),
    "controlnet_sd1": ("sd1", None, "controlnet", None),
}


def test_every_contract_family_has_a_rule_and_a_case():
    families = {r.family for r in arch.RULES}
    contract = {"sd1", "sd1_inpaint", "sd1_pix2pix", "sd2", "sd2_inpaint", "sd2_depth", "sd2_unclip", "sdxl",
                "sdxl_inpaint", "sdxl_refiner", "ssd1b", "segmind_vega", "koala", "kolors", "sd3", "flux", "flux2",
                "chroma", "auraflow", "hunyuan_dit", "pixart_alpha", "pixart_sigma", "stable_cascade_b",
                "stable_cascade_c", "lumina2", "hidream", "qwen_image", "wan", "ltxv", "hunyuan_video", "mochi",
                "cosmos", "svd"}
    assert contract <= families
    from test_arch import CASES as SD_CASES     # the SD1/SD2/SDXL families and variants, full size and tiny
    tested = {c[0] for c in CASES.values()} | set(SD_CASES.values())
    assert contract <= tested, contract - tested
    assert len({r.id for r in arch.RULES}) == len(arch.RULES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_detects_full_size_sparse_header(tmp_path, name):
    fam, variant, kind, pred = CASES[name]
    p = tmp_path / f"{name}.safetensors"
    testkit.write_spec_file(p, testkit.extra_spec(name), "BF16", fill="sparse")
    rep = inspect(p, why=True)
    a = rep["architecture"]
    assert (a["family"], a["kind"]) == (fam, kind), (a, rep["rules"]["rejected"][-3:])
    if variant is not None:
        assert a["variant"] == variant
    if pred is not None:
        assert a["prediction"] == pred
    assert rep["rules"]["matched"] == a["rule"] and a["rule"] is not None


def test_sd3_and_flux_components(tmp_path):
    p = tmp_path / "sd3.safetensors"
    testkit.write_spec_file(p, testkit.extra_spec("sd3_medium"), "F16", fill="sparse")
    assert inspect(p)["architecture"]["components"] == ["dit", "clip_l", "clip_g", "t5", "vae"]
    p = tmp_path / "flux.safetensors"
    testkit.write_spec_file(p, testkit.extra_spec("flux_dev"), "F16", fill="sparse")
    assert inspect(p)["architecture"]["components"] == ["dit", "clip_l", "t5", "vae"]


def test_vae_latent_family(tmp_path):
    for name, want in (("vae_sd", "sd (4 ch"), ("vae_flux", "sd3/flux (16 ch"), ("vae_flux2", "flux2 (32 ch")):
        p = tmp_path / f"{name}.safetensors"
        testkit.write_spec_file(p, testkit.extra_spec(name), "F16", fill="sparse")
        assert inspect(p)["architecture"]["latent"].startswith(want)


def test_lora_family_from_metadata(tmp_path):
    spec = {"lora_unet_foo.lora_down.weight": (4, 320), "lora_unet_foo.lora_up.weight": (320, 4)}
    p = tmp_path / "l.safetensors"
    testkit.write_spec_file(p, spec, "F16", fill="sparse", metadata={"ss_base_model_version": "sd_v2"})
    a = inspect(p)["architecture"]
    assert (a["kind"], a["family"]) == ("lora", "sd2")
    testkit.write_spec_file(p, spec, "F16", fill="sparse", metadata={"modelspec.architecture": "flux-1-dev/lora"})
    assert inspect(p)["architecture"]["family"] == "flux"
    testkit.write_spec_file(p, spec, "F16", fill="sparse")
    a = inspect(p)["architecture"]
    assert a["family"] == "unknown" and any("not told" in n for n in a["notes"])


def test_why_lists_match_and_rejections(tmp_path):
    p = tmp_path / "schnell.safetensors"
    testkit.write_spec_file(p, testkit.extra_spec("flux_schnell"), "F16", fill="sparse")
    rep = inspect(p, why=True)
    assert rep["rules"]["matched"] == "flux_schnell"
    why = dict((r["rule"], r["why"]) for r in rep["rules"]["rejected"])
    assert "guidance_in" in why["flux_dev"]
    assert why["flux_fill"].endswith("is 64, not 384")
    assert "sdxl" not in why   # rules after the match are not tried
