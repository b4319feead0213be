"""Tests for testkit: generated checkpoints with real key layouts."""
from __future__ import annotations

import json
import math
import os
import struct

import ml_dtypes
import numpy as np
import pytest

import testkit

U = "model.diffusion_model."


def _prefix_spec(spec, prefix):
    return {k: v for k, v in spec.items() if k.startswith(prefix)}


def _read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(n)
    return n, json.loads(raw)


# ---------------------------------------------------------------- full-size shapes

@pytest.mark.parametrize("family,component,params", [
    ("sdxl", "unet", 2_567_463_684),
    ("sdxl", "clip_l", 123_060_480),      # without position_ids
    ("sdxl", "clip_g", 694_659_841),
    ("sdxl", "vae", 83_653_863),
    ("sd1", "unet", 859_520_964),
    ("sd1", "clip_l", 123_060_480),
    ("sd1", "vae", 83_653_863),
    ("sd2", "unet", 865_910_724),
    ("sd2", "clip_h", 354_032_641),
    # 2,259,526,660 * 2 bytes = the 4.52 GB fp16 refiner UNet; config checked
    # against ComfyUI's SDXLRefiner (transformer_depth [0,0,4,4,4,4,0,0], middle 4)
    ("sdxl_refiner", "unet", 2_259_526_660),
    ("sdxl_refiner", "clip_g", 694_659_841),
])
def test_full_param_counts(family, component, params):
    spec = testkit.checkpoint_spec(family, "full", {component})
    assert spec
    assert testkit.param_count(spec) == params


def test_full_sdxl_file_size():
    spec = testkit.checkpoint_spec("sdxl", "full")
    assert len(spec) == 2515
    nbytes = testkit.spec_nbytes(spec, "F16")
    # 3,468,837,868 fp16 params + int64 position_ids (77 * 8)
    assert nbytes == 3_468_837_868 * 2 + 77 * 8
    assert round(nbytes / 1e9, 2) == 6.94


def test_full_key_samples():
    sd1 = testkit.checkpoint_spec("sd1", "full")
    assert sd1[U + "input_blocks.1.1.proj_in.weight"] == (320, 320, 1, 1)
    assert sd1[U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert sd1[U + "input_blocks.4.0.skip_connection.weight"] == (640, 320, 1, 1)
    assert sd1[U + "output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert sd1[U + "output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert sd1[U + "out.2.weight"] == (4, 320, 3, 3)
    assert sd1["cond_stage_model.transformer.text_model.embeddings.position_ids"] == (1, 77)
    assert sd1["first_stage_model.encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert sd1["first_stage_model.quant_conv.weight"] == (8, 8, 1, 1)
    assert sd1["first_stage_model.post_quant_conv.weight"] == (4, 4, 1, 1)
    assert sd1["first_stage_model.decoder.up.3.upsample.conv.weight"] == (512, 512, 3, 3)
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in sd1
    assert not any(k.startswith("conditioner.") for k in sd1)

    sd2 = testkit.checkpoint_spec("sd2", "full")
    assert sd2[U + "input_blocks.1.1.proj_in.weight"] == (320, 320)
    assert sd2[U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 1024)
    m = "cond_stage_model.model."
    assert sd2[m + "token_embedding.weight"] == (49408, 1024)
    assert sd2[m + "positional_embedding"] == (77, 1024)
    assert sd2[m + "transformer.resblocks.23.attn.in_proj_weight"] == (3072, 1024)
    assert m + "transformer.resblocks.24.ln_1.weight" not in sd2
    assert sd2[m + "text_projection"] == (1024, 1024)
    assert sd2[m + "logit_scale"] == ()

    xl = testkit.checkpoint_spec("sdxl", "full")
    assert xl[U + "label_emb.0.0.weight"] == (1280, 2816)
    assert xl[U + "label_emb.0.2.weight"] == (1280, 1280)
    assert xl[U + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"] == (640, 2048)
    assert xl[U + "middle_block.1.transformer_blocks.9.ff.net.0.proj.weight"] == (10240, 1280)
    assert U + "middle_block.1.transformer_blocks.10.norm1.weight" not in xl
    assert U + "input_blocks.1.1.norm.weight" not in xl       # level 0: no attention
    assert U + "input_blocks.9.0.in_layers.0.weight" not in xl
    assert xl[U + "output_blocks.8.0.skip_connection.weight"] == (320, 640, 1, 1)
    assert xl["conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_fc.weight"] == (5120, 1280)
    assert xl["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    assert xl["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] == (768,)

    ref = testkit.checkpoint_spec("sdxl_refiner", "full")
    assert ref[U + "label_emb.0.0.weight"] == (1536, 2560)
    assert ref[U + "input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight"] == (768, 1280)
    assert U + "input_blocks.10.1.norm.weight" not in ref  # level 3: no attention
    assert ref[U + "input_blocks.11.0.in_layers.2.weight"] == (1536, 1536, 3, 3)
    assert "conditioner.embedders.0.model.ln_final.weight" in ref
    assert not any(k.startswith("conditioner.embedders.1.") for k in ref)


def test_components_and_order():
    full = testkit.checkpoint_spec("sdxl", "tiny")
    parts = [testkit.checkpoint_spec("sdxl", "tiny", {c}) for c in ("unet", "clip_l", "clip_g", "vae")]
    merged = {}
    for p in parts:
        merged.update(p)
    assert list(merged) == list(full)                   # insertion order = file module order
    assert testkit.checkpoint_spec("sd1", "tiny", {"clip_g"}) == {}  # not in family: skipped
    with pytest.raises(ValueError):
        testkit.checkpoint_spec("sd1", "tiny", {"clip_x"})
    with pytest.raises(ValueError):
        testkit.checkpoint_spec("sd3", "tiny")
    with pytest.raises(ValueError):
        testkit.checkpoint_spec("sd1", "huge")


@pytest.mark.parametrize("family", testkit.ALL_FAMILIES)
def test_sizes_share_keys(family):
    full = testkit.checkpoint_spec(family, "full")
    tiny = testkit.checkpoint_spec(family, "tiny")
    small = testkit.checkpoint_spec(family, "small")
    assert list(full) == list(tiny) == list(small)
    assert all(len(full[k]) == len(tiny[k]) for k in full)
    # semantic dims stay real
    k0 = U + "input_blocks.0.0.weight"
    assert tiny[k0][1] == full[k0][1]
    assert tiny[U + "out.2.weight"][0] == 4
    for k in full:
        if k.endswith("attn2.to_k.weight") or k.endswith("label_emb.0.0.weight"):
            assert tiny[k][1] == full[k][1]
        if "token_embedding" in k:
            assert tiny[k][0] == 49408
        if k.endswith(("position_embedding.weight", "positional_embedding", "position_ids")):
            assert 77 in tiny[k]
        if k.endswith(("post_quant_conv.weight", "quant_conv.weight")):
            assert tiny[k] == full[k]
        if k.endswith("norm.weight") or ".norm1." in k or ".norm2." in k or "in_layers.0" in k:
            assert tiny[k][0] % 32 == 0 or ".transformer_blocks." in k
    assert testkit.param_count(tiny) < testkit.param_count(small) < testkit.param_count(full)


def test_variant_families():
    assert testkit.checkpoint_spec("sd1_inpaint", "tiny")[U + "input_blocks.0.0.weight"][1] == 9
    assert testkit.checkpoint_spec("sdxl_inpaint", "full")[U + "input_blocks.0.0.weight"] == (320, 9, 3, 3)
    assert testkit.checkpoint_spec("sd1_pix2pix", "tiny")[U + "input_blocks.0.0.weight"][1] == 8


def test_dtype_of_key():
    assert testkit.dtype_of_key("cond_stage_model.transformer.text_model.embeddings.position_ids") == "I64"
    assert testkit.dtype_of_key(U + "out.2.weight") == "F16"


# ---------------------------------------------------------------- random weights

def test_random_state_dict_statistics():
    spec = testkit.checkpoint_spec("sdxl", "tiny")
    sd = testkit.random_state_dict(spec, 1)
    assert list(sd) == list(spec)
    for k, shape in spec.items():
        assert sd[k].shape == shape
        assert sd[k].dtype == (np.int64 if k.endswith("position_ids") else np.float32)
    w = sd["conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_proj.weight"]  # (64, 256)
    assert abs(w.std() - 1 / math.sqrt(256)) < 0.01
    conv = sd[U + "input_blocks.4.0.in_layers.2.weight"]  # (64, 32, 3, 3)
    assert abs(conv.std() - 1 / math.sqrt(32 * 9)) < 0.01
    ln = sd["conditioner.embedders.1.model.ln_final.weight"]
    assert abs(ln.mean() - 1) < 0.05 and 0.02 < ln.std() < 0.1
    gn = sd[U + "out.0.weight"]
    assert abs(gn.mean() - 1) < 0.05
    b = sd["first_stage_model.decoder.conv_in.bias"]
    assert abs(b.std() - 0.02) < 0.01
    emb = sd["conditioner.embedders.1.model.token_embedding.weight"]
    assert abs(emb.std() - 0.02) < 0.001
    assert float(sd["conditioner.embedders.1.model.logit_scale"]) == pytest.approx(4.6052, abs=1e-3)
    assert sd["conditioner.embedders.1.model.logit_scale"].shape == ()
    np.testing.assert_array_equal(
        sd["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"], np.arange(77)[None])
    unscaled = testkit.random_state_dict({U + "out.2.weight": (4, 32, 3, 3)}, 1, scale_by_fan_in=False)
    assert 0.8 < unscaled[U + "out.2.weight"].std() < 1.2


def test_random_state_dict_deterministic_per_seed_and_key():
    spec = testkit.checkpoint_spec("sd1", "tiny")
    a = testkit.random_state_dict(spec, 7)
    sub = testkit.checkpoint_spec("sd1", "tiny", {"vae"})
    rev = dict(reversed(list(sub.items())))
    b = testkit.random_state_dict(rev, 7)
    for k in sub:
        np.testing.assert_array_equal(a[k], b[k])
    c = testkit.random_state_dict(sub, 8)
    k = "first_stage_model.encoder.conv_in.weight"
    assert not np.array_equal(a[k], c[k])
    # different keys of equal shape differ
    assert not np.array_equal(a["first_stage_model.encoder.mid.attn_1.q.weight"],
                              a["first_stage_model.encoder.mid.attn_1.k.weight"])


# ---------------------------------------------------------------- writing

@pytest.fixture(scope="module")
def tiny_sd1():
    spec = testkit.checkpoint_spec("sd1", "tiny")
    return spec, testkit.random_state_dict(spec, 3)


@pytest.mark.parametrize("dtype,np_dtype", [("F16", np.float16), ("F32", np.float32)])
def test_roundtrip_safetensors_package(tmp_path, tiny_sd1, dtype, np_dtype):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    spec, sd = tiny_sd1
    p = tmp_path / "m.safetensors"
    testkit.write_safetensors(p, sd, dtype, metadata={"modelspec.architecture": "stable-diffusion-v1"})
    back = load_file(str(p))
    assert set(back) == set(spec)
    for k, a in sd.items():
        if a.dtype == np.int64:
            assert back[k].dtype == np.int64
            np.testing.assert_array_equal(back[k], a)
        else:
            assert back[k].dtype == np_dtype
            np.testing.assert_array_equal(back[k], a.astype(np_dtype))
    with safe_open(str(p), "np") as f:
        assert f.metadata() == {"modelspec.architecture": "stable-diffusion-v1"}
    n, header = _read_header(p)
    assert n % 8 == 0
    assert header["cond_stage_model.transformer.text_model.embeddings.position_ids"]["dtype"] == "I64"
    assert not [f for f in os.listdir(tmp_path) if f != "m.safetensors"]  # temp file replaced


@pytest.mark.parametrize("dtype,ml", [
    ("BF16", ml_dtypes.bfloat16),
    ("F8_E4M3", ml_dtypes.float8_e4m3fn),
    ("F8_E5M2", ml_dtypes.float8_e5m2),
])
def test_byte_level_low_precision(tmp_path, tiny_sd1, dtype, ml):
    spec, sd = tiny_sd1
    p = tmp_path / "m.safetensors"
    testkit.write_safetensors(p, sd, dtype)
    n, header = _read_header(p)
    assert "__metadata__" not in header
    data = p.read_bytes()[8 + n:]
    end = 0
    for k, a in sd.items():
        info = header[k]
        b0, b1 = info["data_offsets"]
        end = max(end, b1)
        assert tuple(info["shape"]) == a.shape
        if a.dtype == np.int64:
            assert info["dtype"] == "I64"
            got = np.frombuffer(data[b0:b1], "<i8").reshape(a.shape)
            np.testing.assert_array_equal(got, a)
            continue
        assert info["dtype"] == dtype
        got = np.frombuffer(data[b0:b1], ml).reshape(a.shape)
        np.testing.assert_array_equal(got.astype(np.float32), a.astype(ml).astype(np.float32))
    assert end == len(data)


def test_mixed_dtype_dict(tmp_path, tiny_sd1):
    from safetensors.numpy import load_file

    spec, sd = tiny_sd1
    dt = {k: ("F32" if k.startswith("first_stage_model.") else "F16") for k in sd}
    p = tmp_path / "m.safetensors"
    testkit.write_safetensors(p, sd, dt)
    back = load_file(str(p))
    assert back["first_stage_model.quant_conv.weight"].dtype == np.float32
    assert back[U + "out.2.weight"].dtype == np.float16


def test_fp8_saturates(tmp_path):
    p = tmp_path / "m.safetensors"
    testkit.write_safetensors(p, {"w": np.array([1000.0, -1000.0, 0.5], np.float32)}, "F8_E4M3")
    n, header = _read_header(p)
    got = np.frombuffer(p.read_bytes()[8 + n:], ml_dtypes.float8_e4m3fn).astype(np.float32)
    np.testing.assert_array_equal(got, [448.0, -448.0, 0.5])


def test_orders_give_identical_tensors(tmp_path, tiny_sd1):
    from safetensors.numpy import load_file

    spec, sd = tiny_sd1
    loaded, offsets = [], []
    for order in ("sorted", "reverse", "shuffle:1", "shuffle:2"):
        p = tmp_path / f"{order.replace(':', '_')}.safetensors"
        testkit.write_safetensors(p, sd, "F16", order=order)
        loaded.append(load_file(str(p)))
        _, header = _read_header(p)
        offsets.append({k: v["data_offsets"][0] for k, v in header.items()})
        n, _ = _read_header(p)  # header length varies with the offsets' digits
        assert os.path.getsize(p) - 8 - n == testkit.spec_nbytes(spec, "F16")
    for other in loaded[1:]:
        for k in sd:
            np.testing.assert_array_equal(loaded[0][k], other[k])
    assert len({tuple(sorted(o.items())) for o in offsets}) == 4  # layouts differ
    first = min(offsets[0], key=offsets[0].get)
    assert first == min(sd)
    assert min(offsets[1], key=offsets[1].get) == max(sd)
    with pytest.raises(ValueError):
        testkit.write_safetensors(tmp_path / "x.safetensors", sd, order="bogus")


def test_sparse_full_sdxl(tmp_path):
    spec = testkit.checkpoint_spec("sdxl", "full")
    p = tmp_path / "xl.safetensors"
    size = testkit.write_spec_file(p, spec, "F16", metadata={"k": "v"})
    st = os.stat(p)
    assert st.st_size == size
    n, header = _read_header(p)
    assert size == 8 + n + testkit.spec_nbytes(spec, "F16")
    assert round(size / 1e9, 2) == 6.94
    assert header["__metadata__"] == {"k": "v"}
    assert header[U + "label_emb.0.0.weight"] == {
        "dtype": "F16", "shape": [1280, 2816],
        "data_offsets": header[U + "label_emb.0.0.weight"]["data_offsets"]}
    assert st.st_blocks * 512 < 16 << 20  # the data is a hole
    # header is the one safetensors itself would accept
    from safetensors import safe_open
    with safe_open(str(p), "np") as f:
        assert len(list(f.keys())) == len(spec)


def test_spec_file_random_fill(tmp_path):
    spec = testkit.checkpoint_spec("sd1", "tiny", {"vae"})
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    size = testkit.write_spec_file(a, spec, "BF16", fill="random", seed=5)
    testkit.write_spec_file(b, spec, "BF16", fill="random", seed=5)
    assert os.path.getsize(a) == size
    assert a.read_bytes() == b.read_bytes()
    n, header = _read_header(a)
    assert {v["dtype"] for k, v in header.items()} == {"BF16"}
    data = a.read_bytes()[8 + n:]
    assert len(data) == testkit.param_count(spec) * 2
    assert data.count(0) < len(data) // 100
    with pytest.raises(ValueError):
        testkit.write_spec_file(a, spec, fill="zeros")


def test_tiny_sdxl_file_size(tmp_path):
    spec = testkit.checkpoint_spec("sdxl", "tiny")
    p = tmp_path / "xl.safetensors"
    testkit.write_safetensors(p, testkit.random_state_dict(spec, 0), "F16")
    assert os.path.getsize(p) < 80e6
