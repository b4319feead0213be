"""Fingerprint determinism and invariances, and each relation the engine reports."""
from __future__ import annotations

import numpy as np
import pytest

import testkit
from fpcore.fingerprint import Fingerprint, run_length, run_start
from fpcore.identify import fingerprint_path, identify


def fp_of(path) -> Fingerprint:
    return fingerprint_path(path)[0]


def per_key(fp: Fingerprint, attr: str) -> dict:
    return dict(zip(fp.keys, getattr(fp, attr).tolist()))


def test_sample_is_deterministic(zoo_dir):
    a = fp_of(zoo_dir / "Base.safetensors").serialize()
    b = fp_of(zoo_dir / "Base.safetensors").serialize()
    assert a == b
    assert Fingerprint.deserialize(a).serialize() == a


def test_positions_come_from_shape_only():
    """Weights are sampled at their end, 1-D tensors at their start: never from file order."""
    s1 = run_start("unet:input_blocks.1.1.proj_in.weight", (320, 320, 1, 1), 128)
    assert s1 == 320 * 320 - 128
    assert run_start("unet:input_blocks.1.1.norm.bias", (320,), 32) == 0
    assert run_start("unet:x", (8, 8), 128) == 0                     # smaller than a run: all of it
    assert run_length((7,)) == 7 and run_length((4096,)) == 32 and run_length((64, 64)) == 128


def test_invariant_to_order_metadata_and_prefix(tmp_path, lineage):
    sd = lineage["Base"]
    testkit.write_safetensors(tmp_path / "a.safetensors", sd, "F16")
    testkit.write_safetensors(tmp_path / "b.safetensors", sd, "F16", order="shuffle:7",
                            metadata={"modelspec.title": "renamed", "format": "pt"})
    unet = testkit.unet_only(sd)
    testkit.write_safetensors(tmp_path / "c.safetensors", unet, "F16", order="reverse")
    testkit.write_safetensors(tmp_path / "d.safetensors",
                            {"diffusion_model." + k: v for k, v in unet.items()}, "F16")
    fa, fb, fc, fd = (fp_of(tmp_path / f"{n}.safetensors") for n in "abcd")
    assert fa.serialize() == fb.serialize()          # order and metadata change nothing
    ha = per_key(fa, "h_raw")
    for other in (fc, fd):                            # UNet-only, bare or prefixed: same unet samples
        hb = per_key(other, "h_raw")
        unet_keys = [k for k in ha if k.startswith("unet:")]
        assert set(hb) == set(unet_keys)
        assert all(ha[k] == hb[k] for k in unet_keys)


def test_value_hash_survives_lossless_precision_change(tmp_path, lineage):
    sd16 = {k: testkit.convert(v, "F16").astype(np.float32) if v.dtype == np.float32 else v
            for k, v in lineage["Base"].items()}
    testkit.write_safetensors(tmp_path / "h.safetensors", sd16, "F16")
    testkit.write_safetensors(tmp_path / "f.safetensors", sd16, "F32")   # upcast: exact
    a, b = fp_of(tmp_path / "h.safetensors"), fp_of(tmp_path / "f.safetensors")
    assert per_key(a, "h_val") == per_key(b, "h_val")
    assert per_key(a, "h_raw") != per_key(b, "h_raw")


def test_fingerprint_size_budget_for_full_sdxl(tmp_path):
    path = tmp_path / "sdxl_full.safetensors"
    testkit.write_spec_file(path, testkit.checkpoint_spec("sdxl", "full"), "F16", fill="sparse")
    fp, a, _, stats = fingerprint_path(path)
    assert a.family == "sdxl"
    assert len(fp.keys) == 2515
    # uncompressed payload bound: sampled bytes + keys + two 8-byte hashes per tensor
    payload = len(fp.raw) + sum(len(k) for k in fp.keys) + 16 * len(fp.keys)
    assert payload < 1_000_000
    assert stats["bytes_read"] < 0.01 * stats["file_size"]


# -- relations ---------------------------------------------------------------------------
def verdict(path, db, **kw):
    rep = identify(path, db, **kw)
    assert rep["error"] is None
    return rep


def test_identical(zoo_dir, db):
    rep = verdict(zoo_dir / "Child.safetensors", db)
    assert rep["verdict"]["relation"] == "identical" and rep["verdict"]["base"] == "Child"
    assert rep["verdict"]["lineage"] == ["Base", "Child"]


@pytest.mark.parametrize("dtype", ["BF16", "F8_E4M3", "F32"])
def test_same_weights_across_precision(tmp_path, lineage, db, dtype):
    # converted from the fp16 reference file's values, as a user's converter would
    sd16 = {k: testkit.convert(v, "F16").astype(np.float32) if v.dtype == np.float32 else v
            for k, v in lineage["Child"].items()}
    testkit.write_safetensors(tmp_path / "c.safetensors", sd16, dtype, order="reverse")
    rep = verdict(tmp_path / "c.safetensors", db)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("same_weights", "Child")
    assert rep["components"]["vae"]["relation"] == "same_weights"


def test_same_weights_from_fp32_master(tmp_path, lineage, db):
    # bf16 made from the fp32 master, reference is fp16: double rounding must not count
    testkit.write_safetensors(tmp_path / "c.safetensors", lineage["Other"], "BF16")
    rep = verdict(tmp_path / "c.safetensors", db, hashes=False)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("same_weights", "Other")


@pytest.mark.parametrize("strength", [0.0005, 0.003, 0.05])
def test_finetune_is_derivative_never_same_weights(tmp_path, lineage, db, strength):
    testkit.write_safetensors(tmp_path / "ft.safetensors", testkit.finetune(lineage["Child"], strength, 5), "F16")
    rep = verdict(tmp_path / "ft.safetensors", db, hashes=False)
    assert rep["verdict"]["relation"] == "derivative"
    assert rep["verdict"]["base"] == "Child"
    assert rep["verdict"]["lineage"] == ["Base", "Child"]


def test_sibling_is_derivative_of_parent(tmp_path, lineage, db):
    sib = testkit.finetune(lineage["Base"], 0.3, 77)
    testkit.write_safetensors(tmp_path / "sib.safetensors", sib, "F16")
    rep = verdict(tmp_path / "sib.safetensors", db, hashes=False)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("derivative", "Base")


def test_baked_lora_is_derivative(tmp_path, lineage, db):
    testkit.write_safetensors(tmp_path / "l.safetensors", testkit.bake_lora(lineage["Other"], 8, 0.05, 3), "F16")
    rep = verdict(tmp_path / "l.safetensors", db, hashes=False)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("derivative", "Other")


def test_merge_weights(tmp_path, lineage, db):
    m = testkit.merge([(lineage["Child"], 0.3), (lineage["Other"], 0.7)])
    testkit.write_safetensors(tmp_path / "m.safetensors", m, "F16")
    rep = verdict(tmp_path / "m.safetensors", db, hashes=False)
    assert rep["verdict"]["relation"] == "merge"
    got = {x["ref"]: x["weight"] for x in rep["merge"]}
    assert set(got) == {"Child", "Other"}
    assert abs(got["Child"] - 0.3) <= 0.05 and abs(got["Other"] - 0.7) <= 0.05
    assert abs(sum(got.values()) - 1) < 1e-6


def test_block_weighted_merge(tmp_path, lineage, db):
    bw = {"input": [0.2, 0.8], "middle": [0.5, 0.5], "output": [0.9, 0.1]}
    m = testkit.merge([(lineage["Child"], 0.5), (lineage["Other"], 0.5)], bw)
    testkit.write_safetensors(tmp_path / "m.safetensors", m, "F16")
    rep = verdict(tmp_path / "m.safetensors", db, hashes=False)
    assert rep["verdict"]["relation"] == "merge"
    blocks = {g: {x["ref"]: x["weight"] for x in ws} for g, ws in rep["merge_blocks"].items()}
    for g, (wc, wo) in bw.items():
        assert abs(blocks[g].get("Child", 0) - wc) <= 0.05 and abs(blocks[g].get("Other", 0) - wo) <= 0.05


def test_independent_model_is_unknown(zoo_dir, tmp_path, lineage, db):
    rep = verdict(zoo_dir / "Indep.safetensors", db, hashes=False)
    assert rep["verdict"]["relation"] == "unknown" and rep["verdict"]["base"] is None
    testkit.write_safetensors(tmp_path / "i.safetensors", testkit.finetune(lineage["Indep"], 0.05, 1), "BF16")
    rep = verdict(tmp_path / "i.safetensors", db, hashes=False)
    assert rep["verdict"]["relation"] == "unknown" and rep["verdict"]["base"] is None
    assert all(not c["related"] for c in rep["candidates"])


def test_orphan_reference_is_not_claimed_for_a_sibling(tmp_path, zoo_dir, lineage):
    """Only Child is registered, its parent Base is named but absent: Other (a sibling) is unknown."""
    from fpcore.refs.library import RefDB
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "none")
    d.add(fp_of(zoo_dir / "Child.safetensors"), "Child", parent="Base", family="sd1")
    assert d.orphan("Child")
    rep = verdict(zoo_dir / "Other.safetensors", d, hashes=False)
    assert rep["verdict"]["base"] is None and rep["verdict"]["relation"] == "unknown"
    testkit.write_safetensors(tmp_path / "ft.safetensors", testkit.finetune(lineage["Child"], 0.03, 5), "F16")
    rep = verdict(tmp_path / "ft.safetensors", d, hashes=False)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("derivative", "Child")


def test_no_references_says_so(zoo_dir, tmp_path):
    from fpcore.refs.library import RefDB
    rep = verdict(zoo_dir / "Base.safetensors", RefDB(tmp_path / "empty", builtin_dir=tmp_path / "none"), hashes=False)
    assert rep["verdict"]["relation"] == "unknown"
    assert "no SD1.x reference is registered" in rep["verdict"]["summary"]


@pytest.mark.parametrize("method", ["dare", "ties"])
def test_elementwise_merges(tmp_path, lineage, db, method):
    """TIES and DARE merges do not average whole weights; they are still merges of Child and Other."""
    if method == "dare":
        m = testkit.dare_merge(lineage["Base"], [(lineage["Child"], 0.5), (lineage["Other"], 0.5)], 0.9, 3)
    else:
        m = testkit.ties_merge(lineage["Base"], [lineage["Child"], lineage["Other"]])
    testkit.write_safetensors(tmp_path / "m.safetensors", m, "F16")
    rep = verdict(tmp_path / "m.safetensors", db, hashes=False)
    assert rep["verdict"]["relation"] == "merge"
    got = {x["ref"]: x["weight"] for x in rep["merge"]}
    assert {"Child", "Other"} <= set(got)
    if method == "dare":        # DARE is unbiased: the weights come back
        assert abs(got["Child"] - 0.5) <= 0.05 and abs(got["Other"] - 0.5) <= 0.05


def test_add_difference_is_a_derivative(tmp_path, lineage, db):
    """Child + 0.5 (Other - Base): all of Child plus half of Other's training."""
    ad = {k: (v + 0.5 * (lineage["Other"][k] - lineage["Base"][k])) if v.dtype == np.float32 else v
          for k, v in lineage["Child"].items()}
    testkit.write_safetensors(tmp_path / "ad.safetensors", ad, "F16")
    rep = verdict(tmp_path / "ad.safetensors", db, hashes=False)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("derivative", "Child")


def write_fp8_scaled(path, sd):
    """ComfyUI's "fp8 scaled" layout: round(w / s) as e4m3 plus a scalar scale_weight per weight."""
    out, dt = {}, {}
    for k, v in sd.items():
        if v.dtype == np.float32 and v.ndim >= 2 and k.startswith("model.diffusion_model."):
            s = np.float32(max(float(np.abs(v).max()), 1e-12) / 448.0)
            out[k], dt[k] = v / s, "F8_E4M3"
            out[k[:-len("weight")] + "scale_weight"], dt[k[:-len("weight")] + "scale_weight"] = np.array(s, np.float32), "F32"
        else:
            out[k], dt[k] = v, "F16"
    out["model.diffusion_model.scaled_fp8"], dt["model.diffusion_model.scaled_fp8"] = np.zeros(0, np.float32), "F8_E4M3"
    testkit.write_safetensors(path, out, dt)


def test_fp8_scaled_copy_is_same_weights(tmp_path, lineage, db):
    sd16 = {k: testkit.convert(v, "F16").astype(np.float32) if v.dtype == np.float32 else v
            for k, v in lineage["Child"].items()}
    write_fp8_scaled(tmp_path / "s.safetensors", sd16)
    rep = verdict(tmp_path / "s.safetensors", db, hashes=False)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("same_weights", "Child")
    # and a fine-tune stored the same way is still a derivative
    write_fp8_scaled(tmp_path / "f.safetensors", testkit.finetune(lineage["Child"], 0.03, 8))
    rep = verdict(tmp_path / "f.safetensors", db, hashes=False)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("derivative", "Child")
