"""Architecture detection from headers: full-size sparse files and reduced-width files."""
from __future__ import annotations

import pytest

import testkit
from fpcore.identify import inspect
from fpcore.identify.provenance import extract

CASES = {"sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl", "sdxl_refiner": "sdxl_refiner",
         "sd1_inpaint": "sd1_inpaint", "sd1_pix2pix": "sd1_pix2pix", "sd2_inpaint": "sd2_inpaint",
         "sd2_depth": "sd2_depth", "sd2_unclip": "sd2_unclip", "sdxl_inpaint": "sdxl_inpaint"}


@pytest.mark.parametrize("family", sorted(CASES))
@pytest.mark.parametrize("size", ["full", "tiny"])
def test_detects_family(tmp_path, family, size):
    p = tmp_path / f"{family}.safetensors"
    testkit.write_spec_file(p, testkit.checkpoint_spec(family, size), "F16", fill="sparse")
    rep = inspect(p, why=True)
    assert rep["architecture"]["family"] == CASES[family]
    assert rep["rules"]["matched"] == CASES[family]


def test_unet_only_and_components(tmp_path):
    spec = testkit.checkpoint_spec("sdxl", "tiny", components=["unet"])
    bare = {k[len("model.diffusion_model."):]: s for k, s in spec.items()}
    p = tmp_path / "unet.safetensors"
    testkit.write_spec_file(p, bare, "BF16", fill="sparse")
    a = inspect(p)["architecture"]
    assert (a["family"], a["kind"], a["components"], a["dtype"]) == ("sdxl", "unet_only", ["unet"], "bf16")


def test_sd2_prediction_note(tmp_path):
    p = tmp_path / "sd2.safetensors"
    testkit.write_spec_file(p, testkit.checkpoint_spec("sd2", "tiny"), fill="sparse",
                          metadata={"modelspec.prediction_type": "v"})
    a = inspect(p)["architecture"]
    assert a["prediction"] == "v"
    p2 = tmp_path / "sd2b.safetensors"
    testkit.write_spec_file(p2, testkit.checkpoint_spec("sd2", "tiny"), fill="sparse")
    a = inspect(p2)["architecture"]
    assert a["prediction"] is None and any("v-prediction" in n for n in a["notes"])


def test_provenance():
    meta = {"modelspec.title": "My Mix", "modelspec.architecture": "stable-diffusion-xl-v1-base",
            "ss_sd_model_name": "sd_xl_base_1.0.safetensors", "ss_tag_frequency": "{...}",
            "sd_merge_recipe": '{"type": "webui", "primary_model_hash": "abc", "multiplier": 0.3}',
            "sd_merge_models": '{"abc": {"name": "a.safetensors"}}',
            "prompt": '{"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "pony.safetensors"}}}',
            "format": "pt", "unrelated": "x"}
    out = extract(meta)
    assert out["modelspec"]["modelspec.title"] == "My Mix"
    assert out["kohya"] == {"ss_sd_model_name": "sd_xl_base_1.0.safetensors"}
    assert out["a1111_merge"]["sd_merge_recipe"]["multiplier"] == 0.3
    assert out["comfyui"]["prompt"] == {"nodes": 1, "models": ["pony.safetensors"], "checkpoints": ["pony.safetensors"]}
    assert out["format"] == "pt" and "unrelated" not in str(out)
