"""What a derivative changed (``delta``) and the health of the sampled values (issue 25),
scored against what the generator changed."""
from __future__ import annotations

import numpy as np
import pytest

import testkit
from fpcore.identify import identify

#: the UNet's attention projections in the LDM key layout (what the generator touches)
UNET_ATTENTION = r"attn[12]\.to_(q|k|v|out\.0)\."


@pytest.fixture(scope="module")
def changed(lineage, tmp_path_factory):
    """Fine-tunes of the registered Child that change one known part each."""
    d = tmp_path_factory.mktemp("delta")
    child = lineage["Child"]
    made = {
        "attention": testkit.finetune(child, 0.05, 21, comps=("unet",), only=UNET_ATTENTION),
        "text_encoder": testkit.finetune(child, 0.05, 22, comps=("clip_l",)),
        "everything": testkit.finetune(child, 0.05, 23, comps=("unet", "clip_l")),
        "output_blocks": testkit.finetune(child, 0.05, 24, comps=("unet",), only=r"output_blocks"),
        "baked_lora": testkit.bake_lora(child, 8, 0.05, 25),
    }
    for name, sd in made.items():
        testkit.write_safetensors(d / f"{name}.safetensors", sd, "F16")
    return d


@pytest.mark.parametrize("name, summary", [
    ("attention", "UNet attention only, like a baked LoRA"),
    ("text_encoder", "text encoder only"),
    ("everything", "everything, like full training"),
    ("output_blocks", "UNet output blocks only"),
    ("baked_lora", "UNet transformer layers only (attention and feed-forward), like a baked LoRA"),
])
def test_delta_says_what_the_fine_tune_changed(changed, db, name, summary):
    rep = identify(changed / f"{name}.safetensors", db, hashes=False)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("derivative", "Child")
    d = rep["delta"]
    assert d["base"] == "Child" and d["summary"] == summary, d
    comps = d["components"]
    assert abs(sum(c["share"] for c in comps.values()) - 1) < 1e-3
    if name in ("attention", "output_blocks", "baked_lora"):      # the generator touched the UNet only
        assert comps["unet"]["share"] > 0.99 and comps["clip_l"]["share"] < 0.01
    if name == "text_encoder":
        assert comps["clip_l"]["share"] > 0.99 and d["blocks"] == {}
    if name == "everything":                                       # both trained at the same relative rate
        assert 0.5 < comps["unet"]["change"] / comps["clip_l"]["change"] < 2
    assert d["attention_only"] == (name == "attention")
    if name == "output_blocks":
        assert d["blocks"]["output"] > 0.99


def test_no_delta_for_copies_merges_or_unknowns(tmp_path, lineage, db):
    for name, sd in (("copy", lineage["Child"]), ("mix", testkit.merge([(lineage["Child"], .5), (lineage["Other"], .5)])),
                     ("indep", lineage["Indep"])):
        testkit.write_safetensors(tmp_path / f"{name}.safetensors", sd, "F16")
        rep = identify(tmp_path / f"{name}.safetensors", db, hashes=False)
        assert rep["verdict"]["relation"] != "derivative" and rep["delta"] is None


def test_health_names_nan_inf_and_zero_tensors(tmp_path, lineage, db):
    sd = dict(lineage["Child"])
    keys = sorted(k for k, v in sd.items() if v.dtype == np.float32 and v.ndim == 2 and k.startswith("model."))
    nan_k, inf_k, zero_k = keys[0], keys[1], keys[2]
    sd[nan_k] = sd[nan_k].copy()
    sd[nan_k].reshape(-1)[-5:] = np.nan          # the sample of a 2-D weight is its last values
    sd[inf_k] = sd[inf_k].copy()
    sd[inf_k].reshape(-1)[-1] = np.inf
    sd[zero_k] = np.zeros_like(sd[zero_k])
    testkit.write_safetensors(tmp_path / "sick.safetensors", sd, "F32")
    rep = identify(tmp_path / "sick.safetensors", db, hashes=False)
    h = rep["health"]
    canon = lambda k: "unet:" + k[len("model.diffusion_model."):]   # noqa: E731
    assert h["nan"] == [canon(nan_k)] and h["inf"] == [canon(inf_k)] and h["zero"] == [canon(zero_k)]
    assert h["counts"] == {"nan": 1, "inf": 1, "zero": 1} and h["tensors"] > 100
    testkit.write_safetensors(tmp_path / "fine.safetensors", lineage["Child"], "F16")
    assert identify(tmp_path / "fine.safetensors", db, hashes=False)["health"]["counts"] == {"nan": 0, "inf": 0,
                                                                                            "zero": 0}


@pytest.mark.parametrize("key, attention, group", [
    ("unet:input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", True, "input"),
    ("unet:middle_block.1.transformer_blocks.0.attn2.to_out.0.bias", True, "middle"),
    ("unet:output_blocks.3.1.transformer_blocks.0.ff.net.2.weight", False, "output"),
    ("unet:time_embed.0.weight", False, "other"),
    ("clip_l:text_model.encoder.layers.0.self_attn.k_proj.weight", True, "other"),
    ("clip_g:transformer.resblocks.0.attn.in_proj_weight", True, "other"),
    ("clip_g:transformer.resblocks.0.mlp.c_fc.weight", False, "other"),
    ("dit:double_blocks.0.img_attn.qkv.weight", True, "double blocks"),
    ("dit:single_blocks.3.linear1.weight", False, "single blocks"),
    ("dit:joint_blocks.2.x_block.attn.qkv.weight", True, "joint blocks"),
    ("t5:encoder.block.0.layer.0.SelfAttention.q.weight", True, "other"),
])
def test_attention_and_block_tables(key, attention, group):
    from fpcore.match.delta import ATTENTION_KEYS, block_group
    assert bool(ATTENTION_KEYS.search(key)) == attention
    assert block_group(key) == group


def test_a_report_cached_before_delta_and_health_is_computed_again(changed, db, tmp_path):
    from fpcore import api
    from fpcore.store import Store, stat_identity
    path, cache = str(changed / "attention.safetensors"), tmp_path / "cache"
    api.identify_file(path, db=db, cache_dir=cache)
    with Store(cache) as st:
        key = st.file_record(stat_identity(path)).key
        rep = st.get_report(key, db.token())
        st.put_report(key, db.token(), {k: v for k, v in rep.items() if k not in ("delta", "health")})
    again = api.identify_file(path, db=db, cache_dir=cache)
    assert again["delta"]["summary"] == "UNet attention only, like a baked LoRA" and again["health"]["tensors"] > 0
    assert (again.get("stats") or {}).get("cached") != "report"
    assert api.identify_file(path, db=db, cache_dir=cache)["stats"]["cached"] == "report"   # stored again
