"""fpcore.arch.detect on key -> shape maps in memory (no files): every family case of
tests/test_arch.py and tests/test_arch_families.py (the same expected values, from the released
models' configs), the --why reasons word for word, metadata, prediction markers, storage dtype,
and the kind of partial files. Milliseconds per case, so that a mutation run can afford them."""
from __future__ import annotations

import re

import pytest

import testkit
from fpcore import arch, layout
from test_arch import CASES as SD_CASES
from test_arch_families import CASES as FAMILY_CASES


def shapes_of(spec: dict) -> dict:
    return {layout.canonical_key(k): tuple(v) for k, v in spec.items()}


def detect(spec: dict, dtype: str = "F16", metadata=None, dtypes=None):
    sh = shapes_of(spec)
    return arch.detect(sh, dtypes or {k: dtype for k in sh}, metadata)


@pytest.mark.parametrize("size", ["full", "tiny"])
def test_sd_families_and_variants(size):
    for family, want in SD_CASES.items():
        a = detect(testkit.checkpoint_spec(family, size))
        assert (a.family, a.rule, a.kind) == (want, want, "checkpoint"), (family, a.rejected[-2:])


def test_every_other_family_and_partial_file():
    for name, (fam, variant, kind, pred) in FAMILY_CASES.items():
        a = detect(testkit.extra_spec(name), "BF16")
        assert (a.family, a.kind) == (fam, kind), (name, a.rule, a.rejected[-2:])
        if variant is not None:
            assert a.variant == variant, name
        if pred is not None:
            assert a.prediction == pred, name


def test_why_each_earlier_rule_was_rejected():
    a = detect(testkit.checkpoint_spec("sd2", "tiny"))
    why = dict(a.rejected)
    assert a.rule == "sd2" and list(why)[-1] == "sd2_depth"
    assert why["sd2_depth"] == "unet:input_blocks.0.0.weight dim 1 is 4, not 5"
    assert why["sd2_inpaint"] == "unet:input_blocks.0.0.weight dim 1 is 4, not 9"
    assert why["sdxl"] == "missing unet:label_emb.0.0.weight"
    assert why["lora"] == r"no key matches /\.(lora_down|lora_up|lora_A|lora_B|lora\.down|lora\.up)\.weight$/"
    assert why["ti_sdxl"] == "missing other:clip_l"
    a = detect(testkit.checkpoint_spec("sd1", "tiny"))
    why = dict(a.rejected)
    assert why["sd2"] == "unet:input_blocks.1.1.proj_in.weight ndim is 4, not 2"
    assert "sd1" not in why and a.rule == "sd1"
    a = detect(testkit.checkpoint_spec("sdxl", "tiny"))
    why = dict(a.rejected)
    assert why["kolors"] == "unet:label_emb.0.0.weight dim 1 is 2816, not 5632"
    assert why["sdxl_refiner"] == "unet:label_emb.0.0.weight dim 1 is 2816, not 2560"
    assert why["ssd1b"] == "has unet:input_blocks.7.1.transformer_blocks.4.attn1.to_q.weight"
    # a VAE-only rule refuses a file with a denoiser: the first such key is named
    spec = {**testkit.checkpoint_spec("sd1", "tiny", ["vae"]), "model.diffusion_model.out.2.weight": (4, 32, 3, 3)}
    a = detect(spec)
    assert dict(a.rejected)["vae_4ch"] == "has unet:out.2.weight"


def test_a_shape_with_fewer_dims_than_a_rule_checks():
    spec = testkit.checkpoint_spec("sd1", "tiny")
    spec["model.diffusion_model.input_blocks.0.0.weight"] = (32,)
    a = detect(spec)
    assert a.family == "unknown" and a.rule is None and a.components == [layout.WHOLE]
    assert dict(a.rejected)["sd1"] == "unet:input_blocks.0.0.weight dim 1 is None, not 4"


def test_metadata_tells_lora_targets_and_prediction():
    lora = {"lora_unet_foo.lora_down.weight": (4, 320), "lora_unet_foo.lora_up.weight": (320, 4)}
    for meta, fam in (({"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"), ({"ss_base_model_version": "sd_v1"}, "sd1"),
                      ({"ss_base_model_version": "sd_v2"}, "sd2"), ({"ss_base_model_version": "flux1"}, "flux"),
                      ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sdxl")):
        a = detect(lora, metadata=meta)
        assert (a.kind, a.family, a.components) == ("lora", fam, []), meta
        assert any(n.startswith(f"targets {fam} (rule ") for n in a.notes)
    a = detect(lora, metadata={"ss_base_model_version": "something_else"})
    assert a.family == "unknown" and "target family not told by metadata or shapes" in a.notes
    spec = testkit.checkpoint_spec("sd2", "tiny")
    for value, pred in (("v", "v"), ("epsilon", "eps"), ("V_Prediction", "v"), ("flow", "flow"), ("nonsense", None)):
        assert detect(spec, metadata={"modelspec.prediction_type": value}).prediction == pred, value
    # marker keys some trainers add
    for key, pred in (("v_pred", "v"), ("edm_mean", "edm")):
        assert detect({**spec, key: ()}).prediction == pred
    a = detect({**spec, "ztsnr": ()})
    assert "ztsnr marker key: trained with zero terminal SNR" in a.notes
    assert detect(spec).notes == ["SD2 512 (eps) and 768 (v-prediction) share every shape: told apart only by "
                                  "metadata or the published hash"]


def test_kind_of_partial_files_and_components():
    a = detect(testkit.checkpoint_spec("sdxl", "tiny", ["unet"]))
    assert (a.kind, a.components) == ("unet_only", ["unet"])
    bare = {k[len("model.diffusion_model."):]: s for k, s in testkit.checkpoint_spec("sdxl", "tiny", ["unet"]).items()}
    assert (detect(bare).kind, detect(bare).components) == ("unet_only", ["unet"])
    a = detect(testkit.checkpoint_spec("sd1", "tiny", ["vae"]))
    assert (a.kind, a.components, a.latent) == ("vae", ["vae"], "sd (4 ch, SD1/SD2/SDXL)")
    assert detect(testkit.extra_spec("flux_schnell")).kind == "dit_only"
    assert detect(testkit.extra_spec("te_clip_l")).kind == "text_encoder"
    assert arch.components_for(None, ["unet:x.weight"]) == [layout.WHOLE]
    assert arch.components_for(None, []) == []
    assert arch.components_for("sd1", ["unet:a", "t5:b", "vae:c"]) == ["unet", "vae"]     # no T5 in an SD1 file


def test_storage_dtype_by_the_denoisers_bytes():
    spec = testkit.checkpoint_spec("sd1", "tiny")
    sh = shapes_of(spec)
    dts = {k: ("BF16" if k.startswith("unet:") else "F32") for k in sh}
    assert arch.detect(sh, dts).dtype == "bf16"
    assert arch.detect(sh, {k: "F16" for k in sh}).dtype == "fp16"
    assert arch.detect(sh, None).dtype is None
    # ComfyUI's scaled fp8: fp8 weights with a scale_weight beside them
    fp8 = {k: ("F8_E4M3" if k.endswith(".weight") and k.startswith("unet:") else "F16") for k in sh}
    scaled = {**sh, "unet:input_blocks.1.0.in_layers.2.scale_weight": ()}
    label = arch.detect(scaled, {**fp8, "unet:input_blocks.1.0.in_layers.2.scale_weight": "F32"}).dtype
    assert label != arch.detect(sh, fp8).dtype and "fp8" in label and "scaled" in label


def test_reasons_of_rules_that_check_the_first_matching_key():
    """ControlNets and embeddings are told apart by the context width of the first key matching a
    pattern: the reason names that key (first in sorted order) and the dimension checked."""
    sh = shapes_of(testkit.extra_spec("controlnet_sd1"))
    why = dict(arch.detect(sh).rejected)
    k = min(x for x in sh if re.search(r"attn2\.to_k\.weight$", x))
    assert why["controlnet_sdxl"] == f"{k} dim 1 is 768, not 2048"
    assert why["controlnet_sd2"] == f"{k} dim 1 is 768, not 1024"
    # an embedding stored as one 1-D vector: the last dimension is its width (dim -1)
    for width, fam in ((768, "sd1"), (1024, "sd2")):
        a = arch.detect({"other:emb_params": (width,)})
        assert (a.kind, a.family) == ("textual_inversion", fam), a.rejected
    why = dict(arch.detect({"other:emb_params": (768,)}).rejected)
    assert why["ti_sd2"] == "other:emb_params dim -1 is 768, not 1024"


def test_a_file_no_rule_knows():
    a = detect({"some.weight": (3, 3), "other.bias": (3,)})
    assert (a.family, a.rule, a.kind, a.variant, a.prediction, a.latent) == ("unknown", None, "checkpoint", None,
                                                                            None, None)
    assert a.components == [layout.WHOLE] and len(a.rejected) == len(arch.RULES)
    assert detect(testkit.checkpoint_spec("sd1", "tiny")).latent is None


def test_storage_dtype_of_a_partial_file_ignores_what_it_does_not_compare():
    vae = shapes_of(testkit.checkpoint_spec("sd1", "tiny", ["vae"]))
    sh = {**vae, "other:junk": (4096, 4096)}        # more bytes than the VAE, in another dtype
    dts = {**{k: "F32" for k in vae}, "other:junk": "F16"}
    a = arch.detect(sh, dts)
    assert (a.kind, a.dtype) == ("vae", "fp32")


def test_patterns_are_compiled_once():
    p = r"^test:a-pattern-no-rule-uses$"
    arch._RX.pop(p, None)                          # as on first use in a process
    first = arch._rx(p)
    assert first.pattern == p and first.search("test:a-pattern-no-rule-uses") and arch._rx(p) is first


def test_a_long_metadata_value_is_quoted_to_40_characters():
    lora = {"lora_unet_foo.lora_down.weight": (4, 320), "lora_unet_foo.lora_up.weight": (320, 4)}
    value = "a-trainer-base-model-name-" + "x" * 40
    why = dict(arch._first_match(arch.TARGETS, arch._Keys(shapes_of(lora)), {"ss_base_model_version": value})[1])
    assert why["meta_sdxl"] == f"metadata ss_base_model_version={value[:40]!r} does not match /^sdxl/"
    assert why["modelspec_sdxl"] == "no metadata modelspec.architecture"


def test_odd_dtype_maps_do_not_break_the_storage_label():
    sh = shapes_of(testkit.checkpoint_spec("sd1", "tiny"))
    dts = {k: "F16" for k in sh}
    # a scale_weight without its weight (not scaled fp8), and a dtype for a key without a shape
    odd = {**dts, "unet:input_blocks.1.0.in_layers.2.foo.scale_weight": "F32", "unet:no_shape.weight": "F16"}
    assert arch.detect({**sh, "unet:input_blocks.1.0.in_layers.2.foo.scale_weight": ()}, odd).dtype == "fp16"


def test_a_result_as_the_store_keeps_it():
    a = detect(testkit.extra_spec("vae_flux"))
    d = a.to_json()
    assert d == {"family": a.family, "variant": a.variant, "kind": "vae", "components": ["vae"], "dtype": "fp16",
                 "prediction": None, "rule": a.rule, "notes": a.notes, "latent": "sd3/flux (16 ch)"}
    b = arch.ArchResult.from_json(d)
    assert (b.family, b.variant, b.rule, b.components, b.dtype, b.prediction, b.kind, b.notes) == \
        (a.family, a.variant, a.rule, a.components, a.dtype, a.prediction, a.kind, a.notes)
    c = detect(testkit.checkpoint_spec("sd1", "tiny")).to_json()
    assert "latent" not in c and (c["family"], c["kind"], c["prediction"]) == ("sd1", "checkpoint", "eps")
    assert arch.ArchResult.from_json({"family": "sd1", "notes": None}).notes == []
