"""What a file claims against what its weights say; which checkpoints a LoRA fits (issue 25).

An SDXL lineage at tiny size, built once: SDXL base -> Pony-like (35 % fine-tune),
SDXL base -> Illustrious-like (30 %), a fine-tune of each (5 % of the attention layers), and a
70/30 merge of the two,
registered under the names users have for them. The claims are written into the files'
metadata (the same tensors, relabelled) and into the sidecars model managers keep next to
them, in the formats those tools write (fpcore/claims/sidecars.py cites them). Every expected
value comes from what was built, never from fpcore."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil

import pytest

import testkit
from fpcore.identify import add_reference, identify
from fpcore.refs.library import RefDB
from fpcore.scan import scan_folder

SDXL, PONY, ILLU = "SDXL base 1.0", "Pony Diffusion V6 XL", "Illustrious XL v0.1"


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The files, written once (neutral names: a file name is a claim too)."""
    d = tmp_path_factory.mktemp("claims_sdxl")
    base = testkit.random_state_dict(testkit.checkpoint_spec("sdxl", "tiny"), 1)
    testkit.write_safetensors(d / "m0.safetensors", base, "F16")
    pony = testkit.finetune(base, 0.35, 2)
    testkit.write_safetensors(d / "m1.safetensors", pony, "F16")
    illu = testkit.finetune(base, 0.30, 3)
    del base
    testkit.write_safetensors(d / "m2.safetensors", illu, "F16")
    attention = r"attn[12]\."           # light fine-tunes of the attention layers (quicker to build)
    testkit.write_safetensors(d / "m1ft.safetensors", testkit.finetune(pony, 0.05, 4, only=attention), "F16")
    testkit.write_safetensors(d / "m2ft.safetensors", testkit.finetune(illu, 0.05, 5, only=attention), "F16")
    testkit.write_safetensors(d / "mix.safetensors", testkit.merge([(pony, 0.7), (illu, 0.3)]), "F16")
    del pony, illu
    testkit.write_safetensors(d / "indep.safetensors", testkit.random_state_dict(testkit.checkpoint_spec(
        "sdxl", "tiny"), 99), "F16")                          # trained from scratch: related to nothing
    lora = testkit.random_state_dict(testkit.extra.lora_kohya_sdxl(4), 7)
    testkit.write_safetensors(d / "lora.safetensors", lora, "F16")
    return d


@pytest.fixture(scope="module")
def db(built, tmp_path_factory):
    r = tmp_path_factory.mktemp("claims_refs")
    db = RefDB(r / "refs", builtin_dir=r / "none")
    add_reference(db, built / "m0.safetensors", SDXL)
    add_reference(db, built / "m1.safetensors", PONY, parent=SDXL)
    add_reference(db, built / "m2.safetensors", ILLU, parent=SDXL)
    return db


def _put(built, src: str, dst, metadata=None):
    testkit.rewrite_metadata(built / f"{src}.safetensors", dst, metadata or {})
    return dst


def _civitai(model, **fields):
    """What Civitai Helper writes: the model-version API answer."""
    model.with_name(model.stem + ".civitai.info").write_text(json.dumps(
        {"id": 1, "modelId": 2, "name": "v1", "model": {"name": "A model", "type": "Checkpoint"}, **fields}))


def _by_source(rep):
    out = {}
    for c in rep["claims"]:
        assert c["source"] not in out, rep["claims"]      # one claim per source in these files
        out[c["source"]] = c
    return out


# -- the five cases -----------------------------------------------------------------------
def test_pony_derivative_claiming_illustrious_contradicts_naming_both(tmp_path, built, db):
    f = _put(built, "m1ft", tmp_path / "cool.safetensors",
             {"modelspec.title": "Illustrious XL finetune v2", "modelspec.architecture": "stable-diffusion-xl-v1-base"})
    _civitai(f, baseModel="Illustrious")
    rep = identify(f, db, hashes=False)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("derivative", PONY)   # what was built
    got = {c["key"]: c for c in rep["claims"]}
    for key in ("modelspec.title", "baseModel in cool.civitai.info"):
        c = got[key]
        assert c["check"] == "contradicts", c
        assert c["refers_to"] == ILLU and PONY in c["detail"] and ILLU in c["detail"], c
    assert rep["claim_check"] == "contradicts"
    assert rep["claims"][0]["check"] == "contradicts"          # listed first, never behind a consistent one
    arch = [c for c in rep["claims"] if c["key"] == "modelspec.architecture"][0]
    assert arch["check"] == "consistent"                        # it is SDXL, as the header says


def test_illustrious_finetune_claiming_illustrious_is_consistent(tmp_path, built, db):
    f = _put(built, "m2ft", tmp_path / "other.safetensors")
    _civitai(f, baseModel="Illustrious")
    rep = identify(f, db, hashes=False)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("derivative", ILLU)
    c = _by_source(rep)["civitai_info"]
    assert (c["check"], c["refers_to"]) == ("consistent", ILLU) and ILLU in c["detail"]
    assert rep["claim_check"] == "consistent"


def _recipe(db, primary, secondary, multiplier):
    """A1111's checkpoint merger metadata (modules/extras.py run_modelmerger) for a weighted sum."""
    a, b = db.refs[primary].sha256, db.refs[secondary].sha256
    recipe = {"type": "webui", "primary_model_hash": a, "secondary_model_hash": b, "tertiary_model_hash": None,
              "interp_method": "Weighted sum", "multiplier": multiplier, "save_as_half": True,
              "custom_name": "mix", "config_source": 0, "bake_in_vae": "None", "discard_weights": "",
              "is_inpainting": False, "is_instruct_pix2pix": False}
    models = {a: {"name": "ponyDiffusionV6XL.safetensors", "legacy_hash": "00000000", "sd_merge_recipe": None},
              b: {"name": "illustriousXL_v01.safetensors", "legacy_hash": "00000000", "sd_merge_recipe": None}}
    return {"sd_merge_recipe": json.dumps(recipe), "sd_merge_models": json.dumps(models)}


@pytest.mark.parametrize("multiplier, check", [(0.5, "contradicts"), (0.3, "consistent")])
def test_merge_recipe_against_the_fitted_weights(tmp_path, built, db, multiplier, check):
    # the file is 0.7 Pony + 0.3 Illustrious; the recipe says 1 - m Pony + m Illustrious
    f = _put(built, "mix", tmp_path / "mix.safetensors", _recipe(db, PONY, ILLU, multiplier))
    rep = identify(f, db, hashes=False)
    assert rep["verdict"]["relation"] == "merge"
    fitted = {m["ref"]: m["weight"] for m in rep["merge"]}
    assert set(fitted) == {PONY, ILLU} and abs(fitted[PONY] - 0.7) < 0.05 and abs(fitted[ILLU] - 0.3) < 0.05
    c = _by_source(rep)["a1111_merge"]
    assert c["check"] == check, c
    if check == "contradicts":
        assert "50%" in c["detail"] and "70%" in c["detail"] and rep["claim_check"] == "contradicts"


def test_kohya_lora_names_its_checkpoint_and_fits_its_line(tmp_path, built, db):
    d = tmp_path / "folder"
    d.mkdir()
    pony_sha = _sha256(built / "m1.safetensors")               # the registered Pony reference's bytes
    _put(built, "lora", d / "style.safetensors",
         {"ss_new_sd_model_hash": pony_sha, "ss_sd_model_name": "ponyDiffusionV6XL_v6.safetensors",
          "ss_network_module": "networks.lora", "ss_network_dim": "4"})
    for src, name in (("m1ft", "a.safetensors"), ("m2ft", "b.safetensors"), ("m0", "c.safetensors")):
        shutil.copy(built / f"{src}.safetensors", d / name)
    res = scan_folder(d, db=db, use_cache=False, write_tags=True)
    reps = {r["path"].rsplit("/", 1)[-1]: r for r in res["reports"]}
    lora = reps["style.safetensors"]
    assert lora["architecture"]["kind"] == "lora"
    t = lora["trained_on"]
    assert (t["name"], t["sha256"], t["how"]) == (PONY, pony_sha, "ss_new_sd_model_hash")
    assert t["lineage"] == [SDXL, PONY]
    fits = {r["path"].rsplit("/", 1)[-1]: r["fit"] for r in lora["fits"]}
    # a: Pony's derivative fits; b: Illustrious' derivative (Pony's sibling line) and c: their parent do not
    assert fits == {"a.safetensors": "yes", "b.safetensors": "no", "c.safetensors": "no"}
    assert "fits" not in reps["a.safetensors"]                  # fit lists are for LoRAs
    side = json.loads((d / "style.json").read_text())
    assert side["trained_on"]["name"] == PONY and side["trained_on"]["lineage"] == [SDXL, PONY]


def test_file_without_claims_has_none(tmp_path, built, db):
    rep = identify(_put(built, "m2ft", tmp_path / "model_a.safetensors"), db, hashes=False)
    assert rep["claims"] == [] and rep["claim_check"] is None
    assert rep["trained_on"] is None


# -- more claims ------------------------------------------------------------------------------------
def test_unverifiable_claims_say_what_is_missing(tmp_path, built, db):
    f = _put(built, "m1ft", tmp_path / "x.safetensors", {"ss_new_sd_model_hash": "ab" * 32})
    _civitai(f, baseModel="NoobAI")
    rep = identify(f, db, hashes=False)
    got = _by_source(rep)
    assert got["civitai_info"]["check"] == "unverifiable" and "NoobAI" in got["civitai_info"]["detail"]
    assert got["kohya"]["check"] == "unverifiable" and "abababab" in got["kohya"]["detail"]
    assert rep["claim_check"] == "unverifiable"
    assert all(c["detail"] for c in rep["claims"])


def test_claimed_architecture_against_the_header(tmp_path, built, db):
    f = _put(built, "m1ft", tmp_path / "y.safetensors", {"modelspec.architecture": "stable-diffusion-v1"})
    _civitai(f, baseModel="SD 1.5")
    rep = identify(f, db, hashes=False)
    assert {c["source"]: c["check"] for c in rep["claims"]} == {"modelspec": "contradicts",
                                                               "civitai_info": "contradicts"}
    assert all("SDXL" in c["detail"] for c in rep["claims"])


def test_sidecars_of_stability_matrix_and_lora_manager(tmp_path, built, db):
    f = _put(built, "m1ft", tmp_path / "z.safetensors")
    # Stability Matrix ConnectedModelInfo and ComfyUI LoRA Manager's metadata, as they serialise them
    f.with_name("z.cm-info.json").write_text(json.dumps({"ModelId": 1, "ModelName": "Z", "VersionName": "v1",
                                                         "BaseModel": "Pony", "ModelType": "Checkpoint",
                                                         "Hashes": {"BLAKE3": "x"}}))
    f.with_name("z.metadata.json").write_text(json.dumps({"file_name": "z", "model_name": "Z", "sha256": "",
                                                          "base_model": "Illustrious", "civitai": {}}))
    rep = identify(f, db, hashes=False)
    got = {c["key"]: c["check"] for c in rep["claims"]}
    assert got == {"BaseModel in z.cm-info.json": "consistent", "base_model in z.metadata.json": "contradicts"}
    assert rep["claim_check"] == "contradicts"


def test_a_sidecar_of_another_file(tmp_path, built, db):
    f = _put(built, "m2ft", tmp_path / "w.safetensors")
    mine = _sha256(f)
    for sha, check in (("cd" * 32, "contradicts"), (mine, "consistent")):
        _civitai(f, baseModel="Illustrious", files=[{"name": "w.safetensors", "hashes": {"SHA256": sha.upper()}}])
        rep = identify(f, db, hash_policy="always")
        c = [c for c in rep["claims"] if c["key"].startswith("SHA-256")][0]
        assert c["check"] == check, c


def test_malformed_sidecars_never_fail_a_report(tmp_path, built, db, caplog):
    f = _put(built, "m2ft", tmp_path / "v.safetensors")
    f.with_name("v.civitai.info").write_text("{not json")
    f.with_name("v.cm-info.json").write_text("[1, 2]")
    f.with_name("v.metadata.json").write_bytes(b"\xff\xfe\x00garbage")
    f.with_name("v.json").write_text(json.dumps({"sd version": 7, "notes": "mine"}))
    with caplog.at_level(logging.WARNING, logger="fpcore.claims"):
        rep = identify(f, db, hashes=False)
    assert rep["error"] is None and rep["claims"] == []
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("v.civitai.info", "v.cm-info.json", "v.metadata.json"):
        assert name in warned
    assert all("\n" not in r.getMessage() for r in caplog.records)


def test_lora_claims_are_checked_against_the_checkpoint_it_names(tmp_path, built, db):
    pony_sha = _sha256(built / "m1.safetensors")
    f = _put(built, "lora", tmp_path / "l1.safetensors", {"ss_new_sd_model_hash": pony_sha})
    _civitai(f, baseModel="Illustrious")
    rep = identify(f, db, hashes=False)
    c = _by_source(rep)["civitai_info"]
    assert c["check"] == "contradicts" and PONY in c["detail"], c
    # without a hash only the family can be checked; the sidecar still says what it was trained on
    g = _put(built, "lora", tmp_path / "l2.safetensors")
    _civitai(g, baseModel="Pony")
    rep = identify(g, db, hashes=False)
    assert _by_source(rep)["civitai_info"]["check"] == "unverifiable"
    assert (rep["trained_on"]["name"], rep["trained_on"]["by"]) == (PONY, "name")


def test_lora_names_a_checkpoint_of_the_folder_by_its_legacy_hash(tmp_path, built, db):
    """kohya's ss_sd_model_hash (A1111's old hash: sha256 of 64 kB at 1 MB) finds an unregistered,
    unhashed checkpoint of the folder; its SHA-256 (ss_new_sd_model_hash) confirms it."""
    d = tmp_path / "folder"
    d.mkdir()
    shutil.copy(built / "m1ft.safetensors", d / "mine.safetensors")
    shutil.copy(built / "m2ft.safetensors", d / "other.safetensors")
    blob = (d / "mine.safetensors").read_bytes()
    legacy = hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]
    _put(built, "lora", d / "trained.safetensors",
         {"ss_sd_model_hash": legacy, "ss_new_sd_model_hash": hashlib.sha256(blob).hexdigest()})
    res = scan_folder(d, db=db, use_cache=False)
    lora = [r for r in res["reports"] if r["path"].endswith("trained.safetensors")][0]
    assert lora["trained_on"]["path"] == str(d / "mine.safetensors") and lora["trained_on"]["by"] == "hash"
    assert lora["trained_on"]["lineage"] == [SDXL, PONY]
    fits = {r["path"].rsplit("/", 1)[-1]: r["fit"] for r in lora["fits"]}
    assert fits == {"mine.safetensors": "yes", "other.safetensors": "no"}


def test_a_model_related_to_nothing_contradicts_a_registered_line(tmp_path, built, db):
    """Found by bench/claims.py: a claim naming a model line on weights related to no reference."""
    f = _put(built, "indep", tmp_path / "u.safetensors", {"modelspec.title": "Animagine XL remix"})
    _civitai(f, baseModel="Pony")
    rep = identify(f, db, hashes=False)
    assert rep["verdict"]["relation"] == "unknown"
    got = {c["key"]: c for c in rep["claims"]}
    c = got["baseModel in u.civitai.info"]
    assert (c["check"], c["refers_to"]) == ("contradicts", PONY) and "not related" in c["detail"]
    assert got["modelspec.title"]["check"] == "unverifiable"     # no Animagine reference to compare with
