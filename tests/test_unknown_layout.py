"""Files whose architecture no rule knows, split by the containers their format defines (issue 24).

The files are SDXL single files (``model.diffusion_model.``, ``conditioner.embedders.N.``,
``first_stage_model.``) whose UNet takes an ADM vector of a width no rule knows (2304, not
SDXL's 2816), and a file with ComfyUI's ``text_encoders.<name>.`` and ``vae.`` prefixes whose
text encoder is of a kind the key table does not know. Their components come from the
containers (a swapped VAE is a VAE, not "the model"); a folder of them forms one family by
layout, with a tree and a picture per file. The expected values come from what the generator
built: which component was replaced or trained, how many parameters the spec holds.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import testkit
from fpcore import api
from fpcore.scan import tags
from fpcore.scan import reclaimable_total
from testkit.blocks import hf_clip_spec, open_clip_spec, vae_spec

#: an ADM width (pooled text + size embeddings) no rule knows: SDXL's is 2816, Kolors' 5632
ODD_ADM = 2304
#: the SDXL layout at that width, with fewer transformer blocks (a smaller file, the same prefixes)
UNET = {"adm_in_channels": ODD_ADM, "transformer_depth": (0, 1, 1), "transformer_depth_middle": 1}
TE = ("unet", "clip_l", "clip_g")


def _spec():
    return testkit.checkpoint_spec("sdxl", "tiny", unet=UNET)


def _small_spec():
    """The same prefixes at a fraction of the size (two UNet levels, two-layer text encoders with a
    small vocabulary, a two-level VAE): five of these make a folder in a second."""
    parts = dict(testkit.FAMILY_LAYOUT["sdxl"]["parts"])
    te = {"vocab": 1000, "positions": 77, "layers": 2, "width": 64, "mlp": 256}
    return {**testkit.checkpoint_spec("sdxl", "tiny", components="unet",
                                      unet={**UNET, "channel_mult": (1, 2), "transformer_depth": (0, 1)}),
            **hf_clip_spec(parts["clip_l"], {**te, "position_ids": True}),
            **open_clip_spec(parts["clip_g"], {**te, "proj": 64}),
            **vae_spec(parts["vae"], {**testkit.VAE, "ch": 32, "ch_mult": (1, 2)})}


def _identify(path, refs) -> dict:
    rep = api.identify_file(path, refs_dir=refs, hashes=False, use_cache=False)
    assert rep.get("error") is None, rep.get("error")
    return rep


def _millions(n: int) -> str:
    assert 1e6 <= n < 1e8          # the spec sizes these tests build
    return f"{n / 1e6:.1f} M"


@pytest.fixture(scope="module")
def base():
    return testkit.random_state_dict(_spec(), 1)


@pytest.fixture(scope="module")
def swapped(tmp_path_factory, base):
    """A registered reference, its bf16 copy and a copy whose baked-in VAE alone is another."""
    d = tmp_path_factory.mktemp("vae_swap")
    (d / "m").mkdir()
    testkit.write_safetensors(d / "m" / "ref.safetensors", base, "F16")
    halves = {k: testkit.convert(v, "F16").astype(np.float32) if v.dtype == np.float32 else v for k, v in base.items()}
    testkit.write_safetensors(d / "m" / "ref_bf16.safetensors", halves, "BF16")
    vae = testkit.random_state_dict(testkit.checkpoint_spec("sdxl", "tiny", components="vae"), 2)
    assert set(vae) < set(base)
    testkit.write_safetensors(d / "m" / "swapped.safetensors", {**base, **vae}, "F16")
    refs = d / "refs"
    api.add_reference(d / "m" / "ref.safetensors", "OddBase", refs_dir=refs)
    return d, refs


def test_the_table_does_not_know_this_width(swapped):
    d, refs = swapped
    a = api.inspect_file(d / "m" / "ref.safetensors")["architecture"]
    assert a["family"] == "unknown" and a["rule"] is None      # the JSON contract: still "unknown"


def test_vae_swapped_copy_is_same_weights_with_the_vae_differing(swapped):
    d, refs = swapped
    rep = _identify(d / "m" / "swapped.safetensors", refs)
    a, v = rep["architecture"], rep["verdict"]
    assert a["family"] == "unknown"
    assert a["components"] == ["unet", "clip_l", "clip_g", "vae"]
    assert a["layout"]["containers"] == {"unet": "model.diffusion_model", "clip_l": "conditioner.embedders.0",
                                         "clip_g": "conditioner.embedders.1", "vae": "first_stage_model"}
    assert v["relation"] == "same_weights" and v["base"] == "OddBase", v
    assert v["differs"] == ["vae"], v
    assert rep["components"]["vae"]["relation"] != "same_weights"
    assert all(rep["components"][c]["relation"] == "same_weights" for c in TE), rep["components"]
    side = tags.tags_for(rep)                       # the sidecar says what the verdict says
    assert side["relation"] == "same_weights" and side["base_model"] == "OddBase"


def test_a_diffusers_folder_of_the_layout_is_split_by_its_subfolders(swapped, base, tmp_path):
    """unet/, text_encoder/, text_encoder_2/ and vae/ are containers too (read under the
    single-file names): the same components, the same weights as the single file."""
    d, refs = swapped
    testkit.write_diffusers(tmp_path / "pipe", base, "sdxl")
    rep = _identify(tmp_path / "pipe", refs)
    assert rep["architecture"]["family"] == "unknown"
    assert rep["architecture"]["components"] == ["unet", "clip_l", "clip_g", "vae"]
    assert rep["verdict"]["relation"] == "same_weights" and rep["verdict"]["base"] == "OddBase"
    assert rep["verdict"]["differs"] == [], rep["verdict"]


def test_the_command_line_says_what_is_known(swapped, tmp_path, capsys):
    """identify and scan name the layout, where each component was read and its size, never
    'unknown-architecture'."""
    from fpcore.cli import main
    d, refs = swapped
    spec = testkit.checkpoint_spec("sdxl", "tiny", unet=UNET, components="vae")
    assert main(["identify", str(d / "m" / "swapped.safetensors"), "--refs", str(refs), "--no-hash",
                 "--cache", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    assert "architecture: unrecognised layout, " in text and "unknown-architecture" not in text
    assert f"vae (first_stage_model., {_millions(testkit.param_count(spec))})" in text
    assert "unet (model.diffusion_model., " in text
    main(["scan", str(d / "m"), "--refs", str(refs), "--cache", str(tmp_path / "c")])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("swapped.safetensors:")]
    assert len(lines) == 1 and lines[0].startswith("swapped.safetensors: unrecognised layout, "), lines


def test_vae_swapped_copy_reclaims_nothing(swapped, tmp_path):
    d, refs = swapped
    res = api.scan_folder(d / "m", refs_dir=refs, cache_dir=tmp_path / "c")
    m = d / "m"
    paid = [g for g in res["groups"] if g["reclaimable_bytes"]]
    assert paid and all(str(m / "swapped.safetensors") not in g["paths"] for g in paid), res["groups"]
    # the precision copy is reclaimable (the comparison works; keeping the larger of the two frees
    # the smaller), the VAE-swapped file is not
    sizes = [os.path.getsize(m / n) for n in ("ref.safetensors", "ref_bf16.safetensors")]
    assert reclaimable_total(res["groups"]) == min(sizes)
    den = [g for g in res["groups"] if g["relation"] == "same_denoiser"]
    assert len(den) == 1 and str(m / "swapped.safetensors") in den[0]["paths"] and den[0]["differs"] == ["vae"]
    assert den[0]["reclaimable_bytes"] == 0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Five related files of the unknown layout: a base, two fine-tunes, a fine-tune of a
    fine-tune and an even merge of the two fine-tunes."""
    d = tmp_path_factory.mktemp("layout_folder")
    (d / "m").mkdir()
    base = testkit.random_state_dict(_small_spec(), 3)
    a = testkit.finetune(base, 0.10, 11, comps=TE)
    b = testkit.finetune(base, 0.10, 12, comps=TE)
    files = {"base": base, "a": a, "b": b, "aa": testkit.finetune(a, 0.03, 13, comps=TE),
             "mix": testkit.merge([(a, 0.5), (b, 0.5)])}
    for name, sd in files.items():
        testkit.write_safetensors(d / "m" / f"{name}.safetensors", sd, "F16")
    res = api.scan_folder(d / "m", refs_dir=d / "refs", cache_dir=d / "cache")
    html = (d / "report.html")
    api.write_report(res, html, refs_dir=d / "refs")
    return d, res, html.read_text(encoding="utf-8")


def test_folder_of_an_unknown_layout_is_one_family(folder):
    d, res, _ = folder
    n = testkit.param_count(_small_spec())
    name = f"unrecognised layout, {_millions(n)} parameters, UNet + 2 text encoders + VAE"
    for r in res["reports"]:
        assert r["architecture"]["family"] == "unknown"
        assert r["architecture"]["layout_name"] == name
        assert "unknown-architecture" not in r["verdict"]["summary"] and name in r["verdict"]["summary"]
        assert api.summary_line(r) == r["verdict"]["summary"]     # the layout said once
    by = {os.path.basename(r["path"]): r["folder"] for r in res["reports"]}
    assert by["mix.safetensors"]["relation"] == "merge"
    assert {os.path.basename(m["ref"]) for m in by["mix.safetensors"]["merge"]} == {"a.safetensors", "b.safetensors"}


def test_scan_report_has_a_picture_per_model_and_the_family_tree(folder):
    d, res, html = folder
    assert "Not enough models of one architecture" not in html
    pictures = re.findall(r'<details class=mfp-pic data-path="([^"]+)"', html)
    assert sorted(pictures) == sorted(f"{n}.safetensors" for n in ("base", "a", "b", "aa", "mix"))
    trees = re.findall(r"<h3>([^<]*)</h3>(<svg.*?</svg>)", html, re.S)
    assert len(trees) == 1 and trees[0][0].startswith("unrecognised layout, ")
    for n in ("base", "a", "b", "aa", "mix"):
        assert f">{n}.safetensors</text>" in trees[0][1]
    assert "No reference of this layout is registered" in html
    # the architecture cell says what is known, not "unknown"
    assert html.count(f"<td>{trees[0][0]}</td>") == 5 and "<td>unknown</td>" not in html


def test_a_registered_reference_of_the_layout_joins_its_tree_and_pictures(folder, tmp_path):
    d, _, _ = folder
    refs = tmp_path / "refs"
    api.add_reference(d / "m" / "base.safetensors", "LayoutBase", refs_dir=refs, hashes=False)
    res = api.scan_folder(d / "m", refs_dir=refs, cache_dir=d / "cache")
    by = {os.path.basename(r["path"]): r for r in res["reports"]}
    assert by["aa.safetensors"]["verdict"]["relation"] == "derivative"
    assert by["aa.safetensors"]["verdict"]["base"] == "LayoutBase"
    from fpcore import picture
    from fpcore.refs.library import RefDB
    svg = picture.svg(by["a.safetensors"], picture.reference_tree(RefDB(refs)))
    assert "(1 of this layout)" in svg and 'data-name="LayoutBase"' in svg
    html = api.write_report(res, tmp_path / "r.html", refs_dir=refs)
    text = open(html, encoding="utf-8").read()
    tree = re.findall(r"<h3>[^<]*</h3>(<svg.*?</svg>)", text, re.S)
    assert len(tree) == 1 and "LayoutBase" in tree[0]


# -- a container of a kind the key table does not know ------------------------------------------

def _llama(prefix: str, width: int = 64, layers: int = 2, vocab: int = 512) -> dict:
    """A small decoder-only text encoder (Llama key names), as ComfyUI saves one it knows."""
    spec = {prefix + "model.embed_tokens.weight": (vocab, width), prefix + "model.norm.weight": (width,)}
    for i in range(layers):
        p = f"{prefix}model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            spec[p + f"self_attn.{n}.weight"] = (width, width)
        spec[p + "mlp.gate_proj.weight"] = spec[p + "mlp.up_proj.weight"] = (4 * width, width)
        spec[p + "mlp.down_proj.weight"] = (width, 4 * width)
        spec[p + "input_layernorm.weight"] = spec[p + "post_attention_layernorm.weight"] = (width,)
    return spec


def _comfy_spec() -> dict:
    unet = {k: s for k, s in _spec().items() if k.startswith("model.diffusion_model.")}
    vae = vae_spec("vae.", {**testkit.VAE, "ch": 32})
    return {**unet, **_llama("text_encoders.llama."), **vae}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    d = tmp_path_factory.mktemp("comfy_layout")
    sd = testkit.random_state_dict(_comfy_spec(), 5)
    testkit.write_safetensors(d / "base.safetensors", sd, "F16")
    # the text encoder alone trained (its keys are in no component the key table names)
    te = testkit.finetune(sd, 0.10, 21, comps=("other",))
    assert all(np.array_equal(te[k], sd[k]) != k.startswith("text_encoders.llama.") for k in sd
               if sd[k].dtype == np.float32)
    testkit.write_safetensors(d / "te_trained.safetensors", te, "F16")
    refs = d / "refs"
    api.add_reference(d / "base.safetensors", "ComfyBase", refs_dir=refs, hashes=False)
    return d, refs


def test_a_component_of_unknown_kind_is_named_by_its_container(comfy):
    d, refs = comfy
    rep = _identify(d / "te_trained.safetensors", refs)
    a, v = rep["architecture"], rep["verdict"]
    assert a["family"] == "unknown"
    assert a["components"] == ["unet", "text_encoders.llama", "vae"]
    n = testkit.param_count(_comfy_spec())
    assert a["layout_name"] == f"unrecognised layout, {_millions(n)} parameters, UNet + text_encoders.llama + VAE"
    assert a["layout"]["component_params"]["text_encoders.llama"] == testkit.param_count(_llama(""))
    # the UNet is the reference's, its text encoder was trained: a derivative, as for a known family
    assert rep["components"]["unet"]["relation"] == "same_weights"
    assert rep["components"]["text_encoders.llama"]["relation"] == "derivative"
    assert v["relation"] == "derivative" and v["base"] == "ComfyBase" and v["differs"] == ["text_encoders.llama"], v


def test_the_untouched_file_is_same_weights_in_every_component(comfy):
    d, refs = comfy
    rep = _identify(d / "base.safetensors", refs)
    assert rep["verdict"]["relation"] in ("same_weights", "identical") and rep["verdict"]["differs"] == []
    assert set(rep["components"]) == {"unet", "text_encoders.llama", "vae"}


# -- the split from the header alone ---------------------------------------------------------------

def _detect(spec: dict):
    from fpcore import arch, layout
    canon = {layout.canonical_key(k): (k, s) for k, s in spec.items()}
    return arch.detect({c: s for c, (_, s) in canon.items()}, {c: "F16" for c in canon},
                       where={c: layout.container_of(k) for c, (k, _) in canon.items()})


def test_a_container_holding_a_small_share_does_not_split_a_bare_key_file():
    """A bare-key model with a small submodule that happens to be called ``vae``: one component."""
    from testkit import bert
    spec = {**bert.bert_spec(hidden=128, layers=2, ffn=512, vocab=4000, positions=128),
            "vae.proj.weight": (64, 128), "vae.proj.bias": (64,)}
    a = _detect(spec)
    assert a.family == "unknown" and a.components == ["model"]


def test_keys_of_a_container_the_table_half_knows_stay_in_its_component():
    """A key PREFIXES does not map (a text projection next to CLIP-L's text_model.*) in the
    container of CLIP-L: no second component for the same container."""
    spec = {**_spec(), "conditioner.embedders.0.transformer.text_projection.weight": (64, 64)}
    a = _detect(spec)
    assert a.components == ["unet", "clip_l", "clip_g", "vae"], a.components
    assert a.layout["containers"]["clip_l"] == "conditioner.embedders.0"


def test_a_result_stored_before_the_split_is_read_again(swapped, tmp_path):
    """A store filled by an older version holds this file as one "model" component (no layout):
    identify reads the file again instead of answering from it."""
    from fpcore.store import Store, stat_identity
    d, refs = swapped
    path = str(d / "m" / "swapped.safetensors")
    cache = tmp_path / "c"
    api.identify_file(path, refs_dir=refs, cache_dir=cache)
    with Store(cache) as st:
        key = st.file_record(stat_identity(path)).key
        fp, arch_json, meta, stats = st.get_fingerprint(key)
        old = {k: v for k, v in arch_json.items() if k not in ("layout", "layout_name")}
        st.put_fingerprint(key, fp, dict(old, components=["model"]), meta, stats)
        rep = st.get_report(key, api.refdb(refs).token())
        st.put_report(key, api.refdb(refs).token(), dict(rep, architecture=dict(old, components=["model"])))
    rep = api.identify_file(path, refs_dir=refs, cache_dir=cache)
    assert rep["architecture"]["components"] == ["unet", "clip_l", "clip_g", "vae"]
    assert rep["verdict"]["differs"] == ["vae"]
